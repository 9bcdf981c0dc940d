"""The benchmark workloads of DESIGN.md section 5, each defined once.

``bench/`` times them, ``tests/test_bench_smoke.py`` runs tiny versions of them and the CLI demo
renders the seed (W1). Every builder takes size parameters (defaults: the benchmarked size) and a
fixed seed, and returns a :class:`Workload`: the kernels, the output shape and the render options.

========  ==========================================================================================
id        case
========  ==========================================================================================
W1        the seed (Stack Overflow 44945111): 512x512, two kernels, por of pdfs, exact
W2        the accepted answer: 100x100 on [-3, 3]^2, two unit Gaussians, sum of pdfs, exact
W3        4096x4096, 16 axis-aligned anisotropic kernels with sigmas of a few hundred px, sum, exact
W4        pose targets: 64 x 256x256, 17 sub-pixel keypoints per image, sigma 2, peak, max, t=3
W5        crowd density: 1024x768 (W x H), 2000 heads, sigma in [1, 15], sum, count, t=3
W6        splats: 1024x1024, 100,000 rotated anisotropic Gaussians, sigma in [0.5, 4], sum, t=3
G1-map    GPU: 16384x16384, 1,000,000 kernels, sigma in [1, 8], sum, t=3
W8        pose batch through ``targets.keypoint_heatmaps``: 64 images x 1-10 people x 17 keypoints, 64x48, MSRA
W9        detection batch through ``targets.center_heatmaps``: 32 images x 50 boxes, 80 classes, 128x128
W10       crowd through ``targets.density_map(sigma="adaptive")``: 2,000 heads on 1024x768, CSRNet's borders
========  ==========================================================================================

W8-W10 carry the helper call (:attr:`Workload.helper`); their kernels, shape and options are what
the helper renders, so ``Workload.render`` is the bare render call the helper makes.

W1 and W2 are exact (``truncate=None``) because the code they come from evaluates every pixel: at
the default ``truncate=4`` the seed's wide kernel would lose ~4e-5 of the peak at the box edge, and
the baselines would then be compared with different work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .api import render
from .kernel_set import FIELDS, Kernels

__all__ = [
    "Workload", "w1_seed", "w2_accepted_answer", "w3_large_exact", "w4_pose", "w5_crowd",
    "w6_splats", "g1_large_map", "w8_pose_targets", "w9_center_targets", "w10_crowd_adaptive", "seed_workload", "seed_loop", "centre_crop", "cpu_workloads",
    "gpu_workloads", "build", "CPU_IDS", "GPU_IDS",
]


@dataclass(frozen=True)
class Workload:
    """One benchmark case: what to render and how.

    Attributes
    ----------
    id : str
        Short name used in tables and test ids (``"W1"`` ... ``"W6"``, ``"W4x4"``, ``"G1-map"``).
    title : str
        One line saying what the case is.
    kernels : Kernels
        The kernels (host arrays, fixed seed).
    shape : tuple of int
        Output shape ``(..., H, W)``.
    options : dict
        ``combine``, ``normalize``, ``truncate`` and ``extent`` for :func:`gaussheat_gpu.render`.
    helper : tuple (function, args, kwargs), optional
        For the target workloads (W8-W10): the :mod:`gaussheat_gpu.targets` call that renders these
        kernels from annotations (:meth:`run_helper`).
    """

    id: str
    title: str
    kernels: Kernels
    shape: tuple
    options: dict = field(default_factory=dict)
    helper: tuple | None = None

    @property
    def n_pixels(self) -> int:
        """Pixels in the output, all images together."""
        return math.prod(self.shape)

    def output_bytes(self, dtype="float32") -> int:
        """Bytes of an output of this workload in ``dtype``."""
        return self.n_pixels * np.dtype(dtype).itemsize

    def render(self, backend="auto", dtype="float32", out=None):
        """``gaussheat_gpu.render`` of this workload.

        Parameters
        ----------
        backend : str
            Backend name, as in :func:`gaussheat_gpu.render`.
        dtype : {"float32", "float64"}
        out : array, optional
            Render into this array.

        Returns
        -------
        array of ``shape``
        """
        return render(self.kernels, self.shape, backend=backend, dtype=dtype, out=out, **self.options)

    def run_helper(self, backend="auto", dtype="float32"):
        """The target helper's call on the workload's annotations; its map (the same pixels as
        :meth:`render`).

        Raises
        ------
        ValueError
            The workload has no helper.
        """
        if self.helper is None:
            raise ValueError(f"workload {self.id} renders kernels directly: it has no target helper")
        function, args, kwargs = self.helper
        result = function(*args, backend=backend, dtype=dtype, **kwargs)
        return result[0] if isinstance(result, tuple) else result

    def reference(self) -> np.ndarray:
        """The float64 NumPy rendering that every backend and baseline is checked against."""
        return self.render(backend="numpy", dtype="float64")

    def subset(self, index) -> "Workload":
        """The same case restricted to kernels ``index`` (for baselines timed on a part of it).

        Parameters
        ----------
        index : slice or array of int
            Which kernels to keep.

        Returns
        -------
        Workload
            Same shape and options; its title says how many kernels were kept.
        """
        columns = {name: getattr(self.kernels, name)[index] for name in FIELDS}
        kept = Kernels(**columns)
        options = dict(self.options)
        if isinstance(options.get("truncate"), np.ndarray):  # one truncate per kernel
            options["truncate"] = options["truncate"][index]
        return Workload(self.id, f"{self.title} [{len(kept)} of {len(self.kernels)} kernels]", kept,
                        self.shape, options)


def _options(combine="sum", normalize="pdf", truncate=4.0, extent=None) -> dict:
    return dict(combine=combine, normalize=normalize, truncate=truncate, extent=extent)


# -- the workloads ------------------------------------------------------------------------------

def w1_seed() -> Workload:
    """W1, the seed: K1 at (256, 256) with sigma 20, K2 at (260, 250) with sigma_x 40, sigma_y 80.

    512x512 pixels at integer coordinates, I = 1 - (1 - P1)(1 - P2) of the two pdfs, every pixel.

    Returns
    -------
    Workload
    """
    kernels = Kernels(x=[256.0, 260.0], y=[256.0, 250.0], sigma_x=[20.0, 40.0], sigma_y=[20.0, 80.0])
    return Workload("W1", "seed: 512x512, 2 kernels, por of pdfs, exact", kernels, (512, 512),
                    _options(combine="por", normalize="pdf", truncate=None))


def seed_workload() -> Workload:
    """The seed case (W1); the name the CLI demo uses."""
    return w1_seed()


def w2_accepted_answer() -> Workload:
    """W2, the accepted answer: 100x100 pixel centres on [-3, 3]^2, unit Gaussians at (-1,-1), (1,1).

    Returns
    -------
    Workload
        Sum of the two pdfs, every pixel, ``extent=(-3, 3, -3, 3)`` (``numpy.linspace`` grid).
    """
    kernels = Kernels(x=[-1.0, 1.0], y=[-1.0, 1.0], sigma_x=1.0)
    return Workload("W2", "accepted answer: 100x100 on [-3,3]^2, sum of 2 pdfs, exact", kernels, (100, 100),
                    _options(truncate=None, extent=(-3.0, 3.0, -3.0, 3.0)))


def w3_large_exact(size=4096, n_kernels=16, seed=3) -> Workload:
    """W3: a ``size`` x ``size`` map of ``n_kernels`` wide axis-aligned anisotropic kernels, exact.

    Sigmas are drawn independently per axis from [0.05, 0.15] x ``size`` (200-600 px at 4096),
    centres anywhere in the image; sum of pdfs, ``truncate=None``.

    Parameters
    ----------
    size : int
        Image side in pixels.
    n_kernels : int
    seed : int

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 1, (n_kernels, 2))
    sigma = rng.uniform(0.05 * size, 0.15 * size, (n_kernels, 2))
    kernels = Kernels(xy[:, 0], xy[:, 1], sigma_x=sigma[:, 0], sigma_y=sigma[:, 1])
    return Workload("W3", f"{size}x{size}, {n_kernels} anisotropic kernels, sum of pdfs, exact", kernels,
                    (size, size), _options(truncate=None))


def w4_pose(n_images=64, size=256, n_keypoints=17, sigma=2.0, seed=4, id="W4") -> Workload:
    """W4: pose-estimation targets, ``n_images`` x ``size`` x ``size``, one peak-1 Gaussian per keypoint.

    Keypoints have sub-pixel centres anywhere in their image; max where they meet, ``truncate=3``.

    Parameters
    ----------
    n_images, size, n_keypoints : int
    sigma : float
    seed : int
    id : str
        Table name (``"W4x4"`` for the GPU's 4x batch).

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    n = n_images * n_keypoints
    xy = rng.uniform(0, size - 1, (n, 2))
    kernels = Kernels(xy[:, 0], xy[:, 1], sigma_x=sigma, image=np.repeat(np.arange(n_images), n_keypoints))
    return Workload(id, f"pose: {n_images} x {size}x{size}, {n_keypoints} keypoints each, sigma {sigma:g}, "
                    f"peak, max, t=3", kernels, (n_images, size, size),
                    _options(combine="max", normalize="peak", truncate=3.0))


def w5_crowd(width=1024, height=768, n_points=2000, seed=5) -> Workload:
    """W5: a crowd-counting density map; each head's visible pixels sum to exactly 1.

    Head positions are whole pixels (annotations rounded the way CSRNet places its delta), sigma
    uniform in [1, 15]; sum, ``normalize="count"``, ``truncate=3``.

    Parameters
    ----------
    width, height, n_points, seed : int

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, width, n_points).astype(np.float64)
    y = rng.integers(0, height, n_points).astype(np.float64)
    sigma = rng.uniform(1.0, 15.0, n_points)
    kernels = Kernels(x, y, sigma_x=sigma)
    return Workload("W5", f"crowd: {width}x{height}, {n_points} heads, sigma 1-15, count, t=3", kernels,
                    (height, width), _options(normalize="count", truncate=3.0))


def w6_splats(size=1024, n_splats=100_000, seed=6) -> Workload:
    """W6: 2-D Gaussian splatting, ``n_splats`` rotated anisotropic splats on ``size`` x ``size``.

    sigma_x and sigma_y independently uniform in [0.5, 4], theta uniform in [0, pi); sum of pdfs,
    ``truncate=3``.

    Parameters
    ----------
    size, n_splats, seed : int

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 1, (n_splats, 2))
    sigma = rng.uniform(0.5, 4.0, (n_splats, 2))
    theta = rng.uniform(0.0, np.pi, n_splats)
    kernels = Kernels(xy[:, 0], xy[:, 1], sigma_x=sigma[:, 0], sigma_y=sigma[:, 1], theta=theta)
    return Workload("W6", f"splats: {size}x{size}, {n_splats:,} rotated splats, sigma 0.5-4, sum, t=3",
                    kernels, (size, size), _options(truncate=3.0))


def g1_large_map(size=16384, n_kernels=1_000_000, seed=7) -> Workload:
    """G1's large map: ``size`` x ``size`` pixels, ``n_kernels`` isotropic kernels, sigma in [1, 8].

    Sum of pdfs, ``truncate=3``. 1 GiB in float32 at the default size: GPU only.

    Parameters
    ----------
    size, n_kernels, seed : int

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 1, (n_kernels, 2))
    kernels = Kernels(xy[:, 0], xy[:, 1], sigma_x=rng.uniform(1.0, 8.0, n_kernels))
    return Workload("G1-map", f"{size}x{size}, {n_kernels:,} kernels, sigma 1-8, sum, t=3", kernels,
                    (size, size), _options(truncate=3.0))


# -- training targets through the helpers (W8-W10) ----------------------------------------------

def _target_workload(id, title, request, function, args, kwargs) -> Workload:
    return Workload(id, title, request.kernels, request.shape, _options(**request.options),
                    helper=(function, args, kwargs))


def w8_pose_targets(n_images=64, max_people=10, n_keypoints=17, heatmap_size=(48, 64), input_size=(192, 256),
                    sigma=2.0, seed=8) -> Workload:
    """W8: a pose batch through ``targets.keypoint_heatmaps`` (mmpose MSRA, sigma 2, 192x256 -> 48x64).

    Each image holds 1 to ``max_people`` people of ``n_keypoints`` sub-pixel keypoints (float32,
    anywhere in the input and up to 8 px outside it), 80% of them visible.

    Returns
    -------
    Workload
        Shape ``(n_images, n_keypoints, H, W)``; :attr:`Workload.helper` is the helper call.
    """
    from . import targets

    rng = np.random.default_rng(seed)
    people = rng.integers(1, max_people + 1, n_images)
    n = int(people.sum())
    width, height = input_size
    keypoints = np.stack([rng.uniform(-8, width + 8, (n, n_keypoints)),
                          rng.uniform(-8, height + 8, (n, n_keypoints))], axis=-1).astype(np.float32)
    visible = (rng.random((n, n_keypoints)) < 0.8).astype(np.float32)
    image = np.repeat(np.arange(n_images), people)
    kwargs = dict(visible=visible, image=image, n_images=n_images, input_size=input_size)
    request = targets.keypoint_request(keypoints, heatmap_size, sigma, **kwargs)
    return _target_workload("W8", f"pose targets: {n_images} images x 1-{max_people} people x {n_keypoints} "
                            f"keypoints, {heatmap_size[1]}x{heatmap_size[0]}, MSRA sigma {sigma:g}", request,
                            targets.keypoint_heatmaps, (keypoints, heatmap_size, sigma), kwargs)


def w9_center_targets(n_images=32, n_boxes=50, n_classes=80, size=128, input_size=512, seed=9) -> Workload:
    """W9: a detection batch through ``targets.center_heatmaps`` (CenterNet, mmdet's radius, IoU 0.3).

    ``n_boxes`` boxes per image in ``input_size`` pixels (sides 8 to ``input_size / 2``, clipped
    to the image), random classes; heatmaps ``size`` x ``size`` (down-sampling 4 by default).

    Returns
    -------
    Workload
        Shape ``(n_images, n_classes, size, size)``.
    """
    from . import targets

    rng = np.random.default_rng(seed)
    m = n_images * n_boxes
    x1, y1 = rng.uniform(0, input_size - 8, m), rng.uniform(0, input_size - 8, m)
    x2 = np.minimum(x1 + rng.uniform(8, input_size / 2, m), input_size - 1)
    y2 = np.minimum(y1 + rng.uniform(8, input_size / 2, m), input_size - 1)
    boxes, labels = np.column_stack([x1, y1, x2, y2]), rng.integers(0, n_classes, m)
    kwargs = dict(image=np.repeat(np.arange(n_images), n_boxes), n_images=n_images,
                  input_size=(input_size, input_size))
    request = targets.center_request(boxes, labels, n_classes, (size, size), **kwargs)
    return _target_workload("W9", f"centre targets: {n_images} images x {n_boxes} boxes, {n_classes} classes, "
                            f"{size}x{size}", request, targets.center_heatmaps,
                            (boxes, labels, n_classes, (size, size)), kwargs)


def w10_crowd_adaptive(width=1024, height=768, n_points=2000, seed=10) -> Workload:
    """W10: a crowd through ``targets.density_map(sigma="adaptive", border="constant")``: CSRNet's map.

    Heads on distinct whole pixels (CSRNet's delta image holds one head per pixel); sigma 0.3 x
    the mean distance to the 3 nearest heads; scipy's window (truncate 4) and ``mode="constant"``.

    Returns
    -------
    Workload
        Shape ``(height, width)``.
    """
    from . import targets

    rng = np.random.default_rng(seed)
    pixels = rng.choice(width * height, n_points, replace=False)
    points = np.column_stack([pixels % width, pixels // width]).astype(np.float64)
    kwargs = dict(sigma="adaptive", border="constant")
    request = targets.density_request(points, (height, width), **kwargs)
    return _target_workload("W10", f"crowd: {width}x{height}, {n_points} heads, adaptive sigma, CSRNet borders",
                            request, targets.density_map, (points, (height, width)), kwargs)


CPU_IDS = ("W1", "W2", "W3", "W4", "W5", "W6", "W8", "W9", "W10")
TARGET_IDS = ("W8", "W9", "W10")
GPU_IDS = ("W3", "W4x4", "W6", "G1-map")

# Sizes small enough for `make test` (each renders in milliseconds) yet with every feature of
# the full case: several images, borders, overlaps, rotation.
_TINY = {
    "W3": dict(size=96, n_kernels=4),
    "W4": dict(n_images=3, size=48, n_keypoints=17),
    "W4x4": dict(n_images=4, size=48, n_keypoints=17, id="W4x4"),
    "W5": dict(width=96, height=64, n_points=40),
    "W6": dict(size=96, n_splats=400),
    "G1-map": dict(size=256, n_kernels=2000),
    "W8": dict(n_images=3, max_people=4),
    "W9": dict(n_images=2, n_boxes=12, n_classes=5, size=32),
    "W10": dict(width=96, height=64, n_points=60),
}
_BUILDERS = {
    "W1": w1_seed, "W2": w2_accepted_answer, "W3": w3_large_exact, "W4": w4_pose, "W5": w5_crowd,
    "W6": w6_splats, "W4x4": lambda **kw: w4_pose(**{"n_images": 256, "id": "W4x4", **kw}),
    "G1-map": g1_large_map, "W8": w8_pose_targets, "W9": w9_center_targets, "W10": w10_crowd_adaptive,
}


def build(workload_id, tiny=False) -> Workload:
    """One workload by id (``"W1"`` ... ``"W10"``, ``"W4x4"``, ``"G1-map"``), full size or tiny.

    Raises
    ------
    KeyError
        Unknown id.
    """
    if workload_id not in _BUILDERS:
        raise KeyError(f"unknown workload {workload_id!r}; known: {', '.join(_BUILDERS)}")
    return _BUILDERS[workload_id](**(_TINY.get(workload_id, {}) if tiny else {}))


def _build(ids, tiny) -> dict:
    return {wid: build(wid, tiny) for wid in ids}


def cpu_workloads(tiny=False) -> dict:
    """W1-W6 and W8-W10 by id, at full size or (``tiny=True``) small enough for the test suite.

    Returns
    -------
    dict of str to Workload
    """
    return _build(CPU_IDS, tiny)


def gpu_workloads(tiny=False) -> dict:
    """G1's cases by id: W3, W4 with a 4x batch (W4x4), W6 and the 16384^2 map (G1-map).

    Returns
    -------
    dict of str to Workload
    """
    return _build(GPU_IDS, tiny)


# -- the seed's own code ------------------------------------------------------------------------

def centre_crop(shape, rows, cols) -> tuple:
    """Slices of a ``rows`` x ``cols`` window centred in an image of ``shape`` (..., H, W).

    Returns
    -------
    (slice, slice)
    """
    height, width = shape[-2], shape[-1]
    rows, cols = min(rows, height), min(cols, width)
    r0, c0 = (height - rows) // 2, (width - cols) // 2
    return slice(r0, r0 + rows), slice(c0, c0 + cols)


def seed_loop(case=None, rows=None, cols=None) -> np.ndarray:
    """The seed question's first approach: a Python double loop over pixels with ``norm.pdf``.

    Written the way the asker wrote ``genDensityBox``: per pixel,
    ``I = 1 - (1 - P1) * (1 - P2)`` with each ``P = norm.pdf(y, muY, sY) * norm.pdf(x, muX, sX)``
    (generalised to the case's kernel list). It is slow on purpose: callers time a crop and scale.

    Parameters
    ----------
    case : Workload, optional
        Default the seed (W1). Must use pixel coordinates (no extent), axis-aligned kernels,
        ``normalize="pdf"``, ``combine="por"``, no truncation.
    rows, cols : int, optional
        Size of the window to compute, centred in the image (:func:`centre_crop`); default the
        whole image.

    Returns
    -------
    ndarray of float64, shape (rows, cols)
        The crop ``centre_crop(case.shape, rows, cols)`` of the heatmap.
    """
    from scipy.stats import norm

    case = case or w1_seed()
    opts = case.options
    if opts.get("extent") is not None or opts.get("truncate") is not None or opts.get("combine") != "por" \
            or opts.get("normalize") != "pdf" or bool(np.any(case.kernels.theta != 0)):
        raise ValueError("seed_loop computes the seed's semantics only: pixel grid, axis-aligned, por of pdfs, exact")
    height, width = case.shape[-2:]
    row_slice, col_slice = centre_crop(case.shape, rows or height, cols or width)
    k = case.kernels
    kernels = list(zip(k.y.tolist(), k.x.tolist(), k.sigma_y.tolist(), k.sigma_x.tolist()))
    density = np.zeros((row_slice.stop - row_slice.start, col_slice.stop - col_slice.start))
    for i, y in enumerate(range(row_slice.start, row_slice.stop)):
        for j, x in enumerate(range(col_slice.start, col_slice.stop)):
            complement = 1.0
            for mu_y, mu_x, sigma_y, sigma_x in kernels:
                complement *= 1.0 - norm.pdf(y, loc=mu_y, scale=sigma_y) * norm.pdf(x, loc=mu_x, scale=sigma_x)
            density[i, j] += 1.0 - complement
    return density
