"""The code users run today for each workload, written the way they write it.

Each :class:`Baseline` knows its workload, how to time it (some are timed on a part and scaled)
and what float64 reference of the *same* work to check it against. The suite checks a baseline
before timing it and reports ``max|out - ref| / max|ref|``, so no ratio compares different work.

========  =============================  ==================================================================
workload  baseline                       timed on
========  =============================  ==================================================================
W1        seed Python loop (norm.pdf)    a centred 64x64 crop, scaled by pixel count
W1, W2    accepted answer (scipy mvn)    the whole image (W2 exactly as written: sum of two pdfs)
W3        scipy mvn per kernel           the whole 4096^2 grid, every kernel
W3        NumPy dense broadcast          the whole grid, per kernel
W4        CenterNet-style window loop    every keypoint
W5        CSRNet delta + gaussian_filter the first 50 heads, scaled to all
W6        NumPy per-splat window loop    the first 5,000 splats, scaled to all
W8        mmpose MSRA encode per image   every image (a per-instance, per-keypoint loop)
W9        CenterNet draw_umich_gaussian  every box
W10       CSRNet adaptive recipe         the k-NN sigmas of all heads, then the first 50 heads' filters,
                                         scaled to all
========  =============================  ==================================================================

The window loops (W4, W6) decide each kernel's pixel box exactly as DESIGN.md section 2 says
(``ceil(c - r) .. floor(c + r)`` with ``r = t * sqrt(S_xx)``), with sub-pixel centres, so they
compute the library's semantics; CenterNet's own ``draw_umich_gaussian`` rounds centres and radii.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.ndimage
from scipy.stats import multivariate_normal

from bench import target_loops
from gaussheat_gpu.workloads import centre_crop, seed_loop

__all__ = ["Baseline", "Prepared", "BASELINES", "for_workload", "prepare", "check", "seed_python_loop", "accepted_answer",
           "scipy_mvn_per_kernel", "numpy_dense_per_kernel", "centernet_window_loop",
           "csrnet_gaussian_filter", "splat_window_loop", "csrnet_comparable", "support_boxes",
           "inverse_covariance", "mmpose_msra_per_image", "centernet_per_box", "csrnet_adaptive"]


@dataclass(frozen=True)
class Prepared:
    """A baseline made ready for one workload.

    Attributes
    ----------
    call : callable
        Zero-argument; computes the timed part and returns it.
    expected : callable
        Zero-argument; the float64 reference of exactly what ``call`` computes.
    scale : float
        Multiplier from the timed part to the whole workload (1 when nothing is scaled).
    timed_part : str
        What ``call`` computes when that is not the whole workload, e.g. ``"64x64 crop"``.
    check : tuple (callable, callable, str) or None
        When ``call``'s semantics differ from the library's on some inputs (CSRNet's filter):
        ``(check_call, check_expected, how)``, a run on inputs where both compute the same thing.
        The error check uses it instead of ``call``/``expected``; ``how`` says what was checked.
    """

    call: Callable
    expected: Callable
    scale: float = 1.0
    timed_part: str = ""
    check: tuple | None = None


@dataclass(frozen=True)
class Baseline:
    """One baseline: a name, its workload, and how to prepare it.

    Attributes
    ----------
    workload : str
        Workload id (``"W1"`` ...).
    name : str
        Short label for tables and test ids.
    description : str
        Where the code comes from and how it is timed.
    prepare : callable
        ``prepare(case, references, part=None) -> Prepared``; ``references`` is a
        :class:`bench.harness.ReferenceCache`; ``part`` overrides how much is timed (crop side,
        number of kernels), ``None`` for the default.
    """

    workload: str
    name: str
    description: str
    prepare: Callable

    @property
    def id(self) -> str:
        return f"{self.workload}-{self.name}"


# -- the baselines, as users write them ---------------------------------------------------------

def seed_python_loop(case, rows, cols):
    """The seed's first approach (a Python double loop with ``norm.pdf``) on a centred crop."""
    return seed_loop(case, rows=rows, cols=cols)


def _linspace_grid(case):
    """Pixel-centre coordinates as the accepted answer builds them (``linspace`` on the extent)."""
    height, width = case.shape[-2:]
    x0, x1, y0, y1 = case.options["extent"] or (0.0, width - 1.0, 0.0, height - 1.0)
    return np.linspace(x0, x1, width), np.linspace(y0, y1, height)


def _covariance(theta, sx, sy):
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([sx * sx, sy * sy]) @ rot.T


def accepted_answer(case):
    """The accepted answer: ``multivariate_normal`` pdfs on a ``meshgrid``, reshaped to the image.

    As written for two kernels it returns ``k1.pdf(xxyy) + k2.pdf(xxyy)``; for the seed (W1,
    ``combine="por"``) the same pdfs are combined as the question asks, ``1 - (1 - P1)(1 - P2)``.
    """
    k = case.kernels
    dists = [multivariate_normal(mean=(mx, my), cov=_covariance(t, sx, sy))
             for mx, my, sx, sy, t in zip(k.x, k.y, k.sigma_x, k.sigma_y, k.theta)]
    x, y = _linspace_grid(case)
    xx, yy = np.meshgrid(x, y)
    xxyy = np.c_[xx.ravel(), yy.ravel()]
    if case.options["combine"] == "por":
        zz = 1.0 - np.prod([1.0 - d.pdf(xxyy) for d in dists], axis=0)
    else:
        zz = sum(d.pdf(xxyy) for d in dists)
    return zz.reshape(case.shape)


def scipy_mvn_per_kernel(case):
    """Sum of ``multivariate_normal(mean, cov).pdf`` over the whole grid, one kernel at a time."""
    k = case.kernels
    x, y = _linspace_grid(case)
    xx, yy = np.meshgrid(x, y)
    xxyy = np.dstack((xx, yy))
    img = np.zeros(case.shape)
    for mx, my, sx, sy, t, a in zip(k.x, k.y, k.sigma_x, k.sigma_y, k.theta, k.amplitude):
        img += a * multivariate_normal(mean=(mx, my), cov=_covariance(t, sx, sy)).pdf(xxyy)
    return img


def numpy_dense_per_kernel(case):
    """NumPy broadcasting: each axis-aligned kernel's pdf evaluated over the whole image and summed."""
    k = case.kernels
    x, y = _linspace_grid(case)
    x, y = x[None, :], y[:, None]
    img = np.zeros(case.shape)
    for mx, my, sx, sy, a in zip(k.x, k.y, k.sigma_x, k.sigma_y, k.amplitude):
        img += a / (2 * np.pi * sx * sy) * np.exp(-0.5 * (((x - mx) / sx) ** 2 + ((y - my) / sy) ** 2))
    return img


def support_boxes(case):
    """Every kernel's pixel box, (c0, c1, r0, r1), by DESIGN.md section 2's formula (pixel grid).

    Returns
    -------
    c0, c1, r0, r1 : int arrays
        Inclusive column and row ranges, clipped to the image (empty when ``c0 > c1``).
    """
    k, t = case.kernels, case.options["truncate"]
    cos, sin = np.cos(k.theta), np.sin(k.theta)
    rx = t * np.sqrt(cos * cos * (k.sigma_x * k.sigma_x) + sin * sin * (k.sigma_y * k.sigma_y))
    ry = t * np.sqrt(sin * sin * (k.sigma_x * k.sigma_x) + cos * cos * (k.sigma_y * k.sigma_y))
    height, width = case.shape[-2:]
    c0 = np.maximum(np.ceil(k.x - rx), 0).astype(int)
    c1 = np.minimum(np.floor(k.x + rx), width - 1).astype(int)
    r0 = np.maximum(np.ceil(k.y - ry), 0).astype(int)
    r1 = np.minimum(np.floor(k.y + ry), height - 1).astype(int)
    return c0, c1, r0, r1


def inverse_covariance(case):
    """Per-kernel S^-1 = [[a, b], [b, c]] (pixel grid): q = a u^2 + 2 b u w + c w^2.

    Returns
    -------
    a, b, c : float64 arrays
    """
    k = case.kernels
    cos, sin = np.cos(k.theta), np.sin(k.theta)
    ixx, iyy = 1.0 / k.sigma_x ** 2, 1.0 / k.sigma_y ** 2
    return cos * cos * ixx + sin * sin * iyy, cos * sin * (ixx - iyy), sin * sin * ixx + cos * cos * iyy


def centernet_window_loop(case):
    """CenterNet-style targets: per keypoint, a Gaussian window merged with ``np.maximum``.

    Like ``draw_umich_gaussian`` (a float32 heatmap, a float64 Gaussian patch, ``np.maximum`` into
    the heatmap's slice), but with sub-pixel centres and the library's truncation box.
    """
    k = case.kernels
    heatmaps = np.zeros(case.shape, dtype=np.float32).reshape(-1, *case.shape[-2:])
    c0, c1, r0, r1 = support_boxes(case)
    for i in range(len(k)):
        if c0[i] > c1[i] or r0[i] > r1[i]:
            continue  # keypoint's window lies outside the image
        dx = np.arange(c0[i], c1[i] + 1) - k.x[i]
        dy = np.arange(r0[i], r1[i] + 1)[:, None] - k.y[i]
        gaussian = k.amplitude[i] * np.exp(-(dx * dx / (2 * k.sigma_x[i] ** 2) + dy * dy / (2 * k.sigma_y[i] ** 2)))
        window = heatmaps[k.image[i], r0[i]:r1[i] + 1, c0[i]:c1[i] + 1]
        np.maximum(window, gaussian, out=window, casting="unsafe")
    return heatmaps.reshape(case.shape)


def csrnet_gaussian_filter(case):
    """CSRNet's ``gaussian_filter_density``: a unit delta per head, blurred with ``gaussian_filter``.

    As in CSRNet's make_dataset code (float32 maps, ``mode="constant"``), with ``truncate`` set to
    the workload's 3 sigma instead of scipy's default 4. Centres are whole pixels.
    """
    k = case.kernels
    density = np.zeros(case.shape, dtype=np.float32)
    for x, y, sigma in zip(k.x, k.y, k.sigma_x):
        pt2d = np.zeros(case.shape, dtype=np.float32)
        pt2d[int(y), int(x)] = 1.0
        density += scipy.ndimage.gaussian_filter(pt2d, sigma, mode="constant", truncate=case.options["truncate"])
    return density


def csrnet_comparable(case) -> np.ndarray:
    """Indices of heads where CSRNet's filter computes exactly the library's ``count`` semantics.

    ``gaussian_filter`` samples its kernel on ``|d| <= int(t * sigma + 0.5)`` (rounded) while the
    library's box is ``|d| <= floor(t * sigma)``, and ``mode="constant"`` drops the mass that
    falls outside the image where ``count`` renormalises over the visible pixels. Heads whose two
    radii agree and whose window lies inside the image are computed identically by both.
    """
    k = case.kernels
    t = case.options["truncate"]
    height, width = case.shape[-2:]
    scipy_radius = (t * k.sigma_x + 0.5).astype(int)
    box_radius = np.floor(t * k.sigma_x).astype(int)
    inside = (k.x - scipy_radius >= 0) & (k.x + scipy_radius <= width - 1) \
        & (k.y - scipy_radius >= 0) & (k.y + scipy_radius <= height - 1)
    return np.flatnonzero((scipy_radius == box_radius) & inside & (k.sigma_x == k.sigma_y))


def splat_window_loop(case):
    """A per-splat NumPy loop: each rotated Gaussian's pdf evaluated on its box and added in.

    The usual CPU splatting code: inverse covariance per splat, a window of offsets, one ``exp``,
    ``+=`` into a float32 image.
    """
    k = case.kernels
    img = np.zeros(case.shape, dtype=np.float32)
    c0, c1, r0, r1 = support_boxes(case)
    a, b, c = inverse_covariance(case)
    norm = k.amplitude / (2 * np.pi * k.sigma_x * k.sigma_y)
    for i in range(len(k)):
        if c0[i] > c1[i] or r0[i] > r1[i]:
            continue
        u = np.arange(c0[i], c1[i] + 1) - k.x[i]
        w = np.arange(r0[i], r1[i] + 1)[:, None] - k.y[i]
        img[r0[i]:r1[i] + 1, c0[i]:c1[i] + 1] += norm[i] * np.exp(-0.5 * (a[i] * u * u + 2 * b[i] * u * w + c[i] * w * w))
    return img


def mmpose_msra_per_image(case):
    """mmpose's MSRA encode, image by image: keypoints divided by the float32 scale factor, then
    ``generate_gaussian_heatmaps``' per-instance, per-keypoint window loop (max over instances)."""
    _, (keypoints, heatmap_size, sigma), kwargs = case.helper
    factor = (np.array(kwargs["input_size"]) / np.array(heatmap_size)).astype(np.float32)
    image, visible = kwargs["image"], kwargs["visible"]
    return np.stack([target_loops.mmpose_msra(heatmap_size, keypoints[image == b] / factor, visible[image == b],
                                              sigma)[0] for b in range(kwargs["n_images"])])


def centernet_per_box(case):
    """CenterNet's targets, image by image and box by box: boxes scaled to the heatmap, mmdet's
    radius (corrected formula, IoU 0.3), ``draw_umich_gaussian`` into the box's class channel."""
    _, (boxes, labels, n_classes, size), kwargs = case.helper
    ratio = np.array(size * 2) / np.array(kwargs["input_size"] * 2)
    image = kwargs["image"]
    return np.stack([target_loops.centernet_targets(boxes[image == b] * ratio, labels[image == b], n_classes, size,
                                                    0.3, "cornernet") for b in range(kwargs["n_images"])])


def csrnet_adaptive(case, first=None):
    """CSRNet's ``gaussian_filter_density``: sigma 0.3 x the mean distance to the 3 nearest heads
    (a KDTree of every head), then a float32 delta image per head blurred with ``gaussian_filter``
    (``mode="constant"``, truncate 4) and summed; only the first ``first`` heads are blurred."""
    _, (points, shape), _ = case.helper
    sigmas = target_loops.csrnet_sigmas(points, shape)
    n = len(points) if first is None else first
    return target_loops.blurred_deltas(points[:n], sigmas[:n], shape, "constant", dtype=np.float32)


# -- how each is prepared: what is timed, what it is checked against ----------------------------

SEED_CROP = 64
CSRNET_HEADS = 50
SPLATS = 5_000
CSRNET_ADAPTIVE_HEADS = 50


def _prepare_seed_loop(case, references, part=None):
    side = part or SEED_CROP
    rows, cols = centre_crop(case.shape, side, side)
    crop_pixels = (rows.stop - rows.start) * (cols.stop - cols.start)
    scale = case.n_pixels / crop_pixels
    return Prepared(call=lambda: seed_python_loop(case, side, side),
                    expected=lambda: references.get(case)[rows, cols],
                    scale=scale, timed_part=f"{side}x{side} crop" if scale != 1 else "")


def _whole(function):
    def prepare(case, references, part=None):
        return Prepared(call=lambda: function(case), expected=lambda: references.get(case))
    return prepare


def _first_kernels(function, default):
    """Time ``function`` on the first ``part`` kernels and scale by kernel count."""
    def prepare(case, references, part=None):
        n = min(part or default, len(case.kernels))
        sub = case.subset(slice(0, n))
        return Prepared(call=lambda: function(sub), expected=lambda: references.get(sub),
                        scale=len(case.kernels) / n, timed_part=f"first {n:,} kernels" if n < len(case.kernels) else "")
    return prepare


def _prepare_csrnet(case, references, part=None):
    prepared = _first_kernels(csrnet_gaussian_filter, CSRNET_HEADS)(case, references, part)
    comparable = csrnet_comparable(case)[:part or CSRNET_HEADS]
    sub = case.subset(comparable)
    how = (f"checked on {len(comparable)} heads inside the image whose scipy radius int(3s+0.5) equals "
           f"the library's floor(3s); elsewhere CSRNet's map differs (rounded radius, mass lost at borders)")
    return Prepared(prepared.call, prepared.expected, prepared.scale, prepared.timed_part,
                    check=(lambda: csrnet_gaussian_filter(sub), lambda: references.get(sub), how))


def _prepare_csrnet_adaptive(case, references, part=None):
    n = min(part or CSRNET_ADAPTIVE_HEADS, len(case.kernels))
    sub = case.subset(slice(0, n))
    return Prepared(call=lambda: csrnet_adaptive(case, n), expected=lambda: references.get(sub),
                    scale=len(case.kernels) / n, timed_part=f"k-NN of all heads, first {n:,} filters" if n < len(
                        case.kernels) else "")


BASELINES = [
    Baseline("W1", "seed-loop", "the seed's Python double loop with scipy.stats.norm.pdf", _prepare_seed_loop),
    Baseline("W1", "accepted-answer", "scipy multivariate_normal on a meshgrid, por of the two pdfs",
             _whole(accepted_answer)),
    Baseline("W2", "accepted-answer", "the accepted answer as written: k1.pdf(xxyy) + k2.pdf(xxyy)",
             _whole(accepted_answer)),
    Baseline("W3", "scipy-mvn", "scipy multivariate_normal pdf per kernel over the full grid",
             _whole(scipy_mvn_per_kernel)),
    Baseline("W3", "numpy-dense", "NumPy broadcast exp per kernel over the full grid",
             _whole(numpy_dense_per_kernel)),
    Baseline("W4", "centernet-loop", "CenterNet-style per-keypoint window loop with np.maximum",
             _whole(centernet_window_loop)),
    Baseline("W5", "csrnet-filter", "CSRNet-style delta + scipy.ndimage.gaussian_filter per head",
             _prepare_csrnet),
    Baseline("W6", "splat-loop", "NumPy per-splat window loop", _first_kernels(splat_window_loop, SPLATS)),
    Baseline("W8", "mmpose-loop", "mmpose MSRA generate_gaussian_heatmaps, image by image",
             _whole(mmpose_msra_per_image)),
    Baseline("W9", "centernet-draw", "CenterNet draw_umich_gaussian with mmdet's radius, box by box",
             _whole(centernet_per_box)),
    Baseline("W10", "csrnet-adaptive", "CSRNet k-NN sigma + delta + gaussian_filter per head",
             _prepare_csrnet_adaptive),
]


def for_workload(workload_id) -> list:
    """The baselines of one workload, in table order."""
    return [b for b in BASELINES if b.workload == workload_id]


def prepare(baseline, case, references, part=None) -> Prepared:
    """``baseline.prepare(case, references, part)``: the baseline made ready for ``case``."""
    return baseline.prepare(case, references, part)


def check(prepared, out) -> tuple[float, str]:
    """The error of a baseline against the float64 reference of the same work.

    Parameters
    ----------
    prepared : Prepared
    out : ndarray
        What ``prepared.call()`` returned.

    Returns
    -------
    error : float
        ``max|out - ref| / max|ref|``; for baselines with a ``check`` run, the error of that run.
    note : str
        How the check was made when it was not on ``out`` itself, and then also ``out``'s own
        deviation from the library's semantics (informative, not a correctness claim).
    """
    from bench.harness import rel_error

    if prepared.check is None:
        return rel_error(out, prepared.expected()), ""
    check_call, check_expected, how = prepared.check
    error = rel_error(check_call(), check_expected())
    own = rel_error(out, prepared.expected())
    return error, f"{how}; on the timed heads it differs from count semantics by {own:.2g} of the max"
