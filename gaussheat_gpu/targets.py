"""Training targets and density maps: pose keypoints, detection centres, crowd heads.

Each helper turns a whole batch of annotations into kernels with the conventions of the code it
replaces and renders them with ONE :func:`gaussheat_gpu.render` call:

* :func:`keypoint_heatmaps`: mmpose's MSRA, UDP and DARK encodings (plus ``"exact"``), peak 1,
  max over instances, per-keypoint weights;
* :func:`center_heatmaps` and :func:`gaussian_radius`: CenterNet / CornerNet / mmdet centre
  heatmaps, an exact 1.0 on each floored centre, max per class;
* :func:`density_map`: crowd-counting density maps (fixed or CSRNet's adaptive sigma) with three
  border policies: each head sums to 1, scipy's ``mode="constant"`` or ``mode="reflect"``.

Inputs may be NumPy arrays (or sequences), CuPy arrays, or any array with ``__dlpack__`` (torch
tensors on the CPU or a GPU). The result is of the input's kind on the input's device: NumPy in,
NumPy out; CuPy in, CuPy out; torch in, torch out (through DLPack, without a copy where DLPack
allows). ``backend="auto"`` renders where the input lives: on the GPU (CuPy) for device inputs,
else on the best host backend (Numba, else NumPy); the ``GAUSSHEAT_BACKEND`` environment variable
overrides it. An explicit backend is honoured, and the result is then moved to the input's device.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from typing import NamedTuple

import numpy as np

from . import backends
from ._xp import array_module, first_bad, is_device_array, to_host
from .api import parse_dtype, render
from .kernel_set import Kernels

__all__ = ["keypoint_heatmaps", "center_heatmaps", "gaussian_radius", "density_map", "adaptive_sigma",
           "keypoint_request", "center_request", "density_request", "Request", "CONVENTIONS", "RADIUS_FORMULAS", "BORDERS"]

CONVENTIONS = ("msra", "udp", "dark", "exact")
RADIUS_FORMULAS = ("cornernet", "centernet")
BORDERS = ("count", "constant", "reflect")
_DTYPES = tuple(map(np.dtype, ("float16", "float32", "float64")))  # render's and float16
_DLPACK_DEVICE_TYPES = {1: "cpu", 3: "cpu", 2: "cuda", 13: "cuda"}  # kDLCPU, kDLCUDAHost, kDLCUDA, kDLCUDAManaged
KEYPOINT_TRUNCATE = 3.0  # mmpose's window radius, in sigmas
CENTER_TRUNCATE = 3.0  # CenterNet's window (2r + 1)^2 with sigma = (2r + 1) / 6


# -- arrays in and out ----------------------------------------------------------------------------

class _Kind:
    """Where an input came from, so that outputs go back in the same kind and on the same device."""

    def __init__(self, xp, from_dlpack=None):
        self.xp = xp  # numpy or cupy: what the helper computes with
        self.from_dlpack = from_dlpack  # the input library's from_dlpack (torch, ...), or None

    def give(self, array):
        """``array`` (NumPy or CuPy) as an array of the input's kind, on its device."""
        array = _to_xp(array, self.xp)
        return self.from_dlpack(array) if self.from_dlpack is not None else array


def _adopt(value, name):
    """``(array, kind)``: ``value`` as a NumPy or CuPy array (no copy where DLPack allows)."""
    if isinstance(value, np.ndarray):
        return value, _Kind(np)
    if is_device_array(value) and type(value).__module__.split(".")[0] == "cupy":
        return value, _Kind(array_module(value))
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
        device_type = int(value.__dlpack_device__()[0])
        where = _DLPACK_DEVICE_TYPES.get(device_type)
        if where is None:
            raise TypeError(f"{name} lives on DLPack device type {device_type}; only CPU and CUDA arrays are supported")
        if where == "cuda":
            try:
                import cupy
            except ImportError:
                raise TypeError(f"{name} is on a CUDA device: install CuPy to render it there "
                                f"(pip install 'gaussheat_gpu[cuda12]' or '[cuda13]')") from None
            array, xp = cupy.from_dlpack(value), cupy
        else:
            array, xp = np.from_dlpack(value), np
        try:
            module = importlib.import_module(type(value).__module__.split(".")[0])
        except ImportError:
            module = None
        back = getattr(module, "from_dlpack", None)
        return array, _Kind(xp, None if module in (np, xp) else back)
    try:
        return np.asarray(value), _Kind(np)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None


def _to_xp(array, xp):
    """``array`` moved to ``xp`` (numpy or cupy) if it is not there already."""
    return to_host(array) if xp is np else xp.asarray(array)


def _same_place(value, kind, name):
    """An optional per-item argument (sigma, visible, image, ...) as an array on ``kind.xp``."""
    if value is None:
        return None
    if np.isscalar(value):
        return kind.xp.asarray(value)
    array, _ = _adopt(value, name)
    return _to_xp(array, kind.xp)


def _backend_for(xp, backend):
    """The backend to render with: ``backend``, or for "auto" the input's device's best one."""
    if backend != "auto" or os.environ.get(backends.ENV_VAR, "").strip():
        return backend
    if xp is not np:
        return "cupy"
    return next(name for name in backends.available() if name != "cupy")


class Request(NamedTuple):
    """What a helper renders: its kernels, output shape and render options, decided from the inputs.

    ``render(kernels, shape, **options)`` is the helper's one render call (the "bare render" the
    benchmarks compare a helper with); ``extra`` holds what the helper returns besides the map
    (the keypoint weights), ``kind`` where the inputs came from.
    """

    kind: _Kind
    kernels: Kernels
    shape: tuple
    options: dict
    extra: object = None


def _render(request, dtype, backend):
    """The request's render call in ``dtype`` (float16: rendered in float32, then rounded), on the
    inputs' device and of their kind."""
    kind, shape = request.kind, request.shape
    if math.prod(shape) == 0:
        return _empty(kind, shape, dtype)
    backend = _backend_for(kind.xp, backend)
    out = render(request.kernels, shape, dtype="float32" if dtype == "float16" else dtype, backend=backend,
                 **request.options)
    if dtype == "float16":
        out = out.astype(np.float16)
    return kind.give(out)


def _size_pair(value, name, order="(W, H)"):
    """Two positive integers, in ``order``: ints, NumPy integers or whole floats (64.0, not 64.5)."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = None
    if pair is None or len(pair) != 2 or not all(_is_number(v) for v in pair):
        raise TypeError(f"{name} must be {order}, two positive integers, got {value!r}")
    for v in pair:
        whole = isinstance(v, numbers.Integral) or (math.isfinite(v) and v == int(v))
        if not whole or v <= 0:
            raise ValueError(f"{name} = {pair!r} must be {order}, two positive integers ({v!r} is not)")
    return int(pair[0]), int(pair[1])


def _is_number(value):
    """A real number (NumPy's included) that is not a bool: ``render`` refuses bools in its ``shape``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _batch(image, n_items, n_images, kind, item):
    """``(image index per item or None, number of images or None)`` after validation."""
    xp = kind.xp
    if image is None:
        if n_images is not None:
            raise ValueError("n_images needs image= (the image of each item)")
        return None, None
    image = _same_place(image, kind, "image")
    if image.ndim == 0:  # checked as given below: a scalar 1.5 is refused like [1.5, 0]
        image = xp.broadcast_to(image, (n_items,))
    if image.shape != (n_items,):
        raise ValueError(f"image has shape {tuple(image.shape)}; expected one index per {item}, shape ({n_items},)")
    if image.dtype.kind == "f":
        bad = ~(image == xp.round(image))
        if bool(bad.any()):
            i = int(xp.nonzero(bad)[0][0])
            raise ValueError(f"image[{i}] = {float(image[i])!r} is not an integer ({item} {i})")
    elif image.dtype.kind not in "iu":
        raise TypeError(f"image must hold integers, got dtype {image.dtype}")
    image = image.astype(xp.int64)
    top = int(image.max()) + 1 if n_items else 0
    if n_images is None:
        n_images = top
    elif isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise ValueError(f"n_images = {n_images!r} must be a non-negative integer")
    first_bad(image, (image < 0) | (image >= n_images), xp,
               f"must lie in [0, {int(n_images) - 1}] (n_images = {int(n_images)})", item, "image")
    return image, int(n_images)


def _per_item(value, kind, n, item, name):
    """A number or one per item, as a float64 array of shape (n,) on ``kind.xp``."""
    values = _same_place(value, kind, name).astype(kind.xp.float64)
    if values.ndim == 0:
        values = kind.xp.full(n, float(values))
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {tuple(values.shape)}; give one number or one per {item}, shape ({n},)")
    return values


def _positive_per_item(sigma, kind, n, item):
    sigma = _per_item(sigma, kind, n, item, "sigma")
    xp = kind.xp
    first_bad(sigma, ~(sigma > 0) | ~xp.isfinite(sigma), xp, "must be finite and > 0", item, "sigma")
    return sigma


def _empty(kind, shape, dtype):
    return kind.give(kind.xp.zeros(shape, dtype=dtype))


# -- pose: keypoint heatmaps ----------------------------------------------------------------------

def keypoint_heatmaps(keypoints, heatmap_size, sigma, *, visible=None, image=None, n_images=None,
                      input_size=None, convention="msra", dtype="float32", backend="auto"):
    """Pose-estimation heatmaps of a batch of instances, mmpose's encodings in one render call.

    Parameters
    ----------
    keypoints : array (N, K, 2)
        x, y of K keypoints of N instances, in input pixels (extra columns after the second are
        ignored). NumPy, CuPy, or any ``__dlpack__`` array (torch).
    heatmap_size : (W, H)
        Heatmap width and height in pixels, in mmpose's order: positive ints, NumPy integers or
        whole floats (``48.0``; ``48.5`` is refused).
    sigma : float or array (N,)
        Standard deviation in heatmap pixels, one for all or one per instance.
    visible : array (N, K), optional
        Keypoints with ``visible < 0.5`` are not drawn and get weight 0. Default: all visible.
        Invisible keypoints may hold anything (NaN included).
    image : array (N,) of int, optional
        Image of each instance; the heatmaps then get a leading batch axis of ``n_images``.
    n_images : int, optional
        Number of images (default ``max(image) + 1``).
    input_size : (W, H), optional
        Size of the input image the keypoints are given in; default ``heatmap_size``.
    convention : {"msra", "udp", "dark", "exact"}
        * ``"msra"`` (mmpose ``MSRAHeatmap``, HRNet): keypoints scaled by ``heatmap / input``
          (mmpose's float32 scale factor), centre ``int(kp + 0.5)`` (rounded half up, towards 0
          for negatives, as ``astype(int)`` does), value 1 at that pixel, window ``|d| <= 3 sigma``.
        * ``"udp"`` (``UDPHeatmap``): scale ``(heatmap - 1) / (input - 1)``, the Gaussian centred
          on the sub-pixel point (pixel maximum <= 1), window ``|d| <= 3 sigma`` around that point.
        * ``"dark"`` (``MSRAHeatmap(unbiased=True)``): MSRA's scale, sub-pixel centre, every pixel
          of the map (no window).
        * ``"exact"``: MSRA's scale, sub-pixel centre, peak 1 at the true centre, window
          ``|d| <= 3 sigma`` by :func:`gaussheat_gpu.render`'s box rule.
    dtype : {"float32", "float64", "float16"}
        Heatmap dtype, in any spelling :func:`gaussheat_gpu.render` takes (``"f4"``,
        ``numpy.float32``; None is float32); float16 is rendered in float32, then rounded.
    backend : {"auto", "cupy", "numba", "numpy"}
        See the module docstring.

    Returns
    -------
    heatmaps : array (K, H, W), or (n_images, K, H, W) with ``image``
        Instances combined by max, per keypoint channel.
    weights : array (N, K) float32
        ``visible`` where the keypoint is drawn, 0 where it is invisible or its 3-sigma window
        holds no pixel of the map.

    Raises
    ------
    ValueError, TypeError
        Wrong shapes, a non-finite visible keypoint (instance and keypoint named), ``sigma <= 0``,
        an unknown convention or dtype, image indices out of range.

    Notes
    -----
    Where mmpose's code (``mmpose/codecs/utils/gaussian_heatmap.py``) has quirks:

    * MSRA with a non-integer ``3 sigma`` (sigma 1.5: radius 4.5): mmpose's window is
      ``2*3sigma+1 = 10`` pixels, one more on the left/top than on the right/bottom, and near the
      left/top border ``int()`` of its negative start truncates towards 0, which moves its peak one
      pixel right/down. **Fixed**: the window is always the symmetric ``|d| <= 3 sigma`` and the
      peak always sits on the rounded centre. For integer sigma (every mmpose config) the two are
      identical.
    * MSRA/UDP: mmpose zeroes a weight when ``right < 0`` (window end, exclusive), so a window that
      ends exactly one pixel left of (or above) the map keeps weight 1 while drawing nothing.
      **Fixed**: the weight is 0 whenever nothing is drawn. Every other weight is mmpose's.
      For DARK, mmpose's float test ``mu + 3 sigma + 1 < 0`` / ``mu - 3 sigma >= W`` is replaced
      by the same rule (the 3-sigma box around the centre holds a pixel).
    * UDP: mmpose anchors its ``2*3sigma+1`` window on the rounded centre; here the window is
      ``|d| <= 3 sigma`` around the true sub-pixel centre. Pixels in both windows get mmpose's
      values; a pixel in only one of them is at more than ``3 sigma`` from the centre along one
      axis, where the value is below ``exp(-4.5) = 0.011``.
    * mmpose keeps a weight of ``visible`` for ``0 < visible < 0.5`` although it draws nothing;
      here such a keypoint gets weight 0.
    * Rounding ``int(kp + 0.5)`` is reproduced, including its truncation towards 0 for keypoints
      left of or above the map (x in (-1.5, -0.5) is drawn on column 0).

    Examples
    --------
    >>> import numpy as np
    >>> from gaussheat_gpu.targets import keypoint_heatmaps
    >>> kp = np.array([[[40.0, 20.0], [100.0, 160.0]]])          # 1 instance, 2 keypoints, 192x256 input
    >>> heat, weights = keypoint_heatmaps(kp, (48, 64), 2.0, input_size=(192, 256), backend="numpy")
    >>> heat.shape, float(heat[0, 5, 10]), weights.tolist()
    ((2, 64, 48), 1.0, [[1.0, 1.0]])
    """
    dtype = parse_dtype(dtype, _DTYPES)
    request = keypoint_request(keypoints, heatmap_size, sigma, visible=visible, image=image, n_images=n_images,
                               input_size=input_size, convention=convention)
    return _render(request, dtype, backend), request.kind.give(request.extra)


def keypoint_request(keypoints, heatmap_size, sigma, *, visible=None, image=None, n_images=None, input_size=None,
                     convention="msra") -> Request:
    """What :func:`keypoint_heatmaps` renders: its kernels, shape and options, and the weights.

    Parameters
    ----------
    keypoints, heatmap_size, sigma, visible, image, n_images, input_size, convention
        As in :func:`keypoint_heatmaps`.

    Returns
    -------
    Request
        ``render(request.kernels, request.shape, **request.options)`` gives the heatmaps;
        ``request.extra`` holds the weights (on the inputs' array module).

    Raises
    ------
    ValueError, TypeError
        As :func:`keypoint_heatmaps`.

    Examples
    --------
    >>> import numpy as np
    >>> request = keypoint_request(np.array([[[4.4, 2.6]]]), (8, 6), 1.0)
    >>> request.shape, request.kernels.x.tolist(), request.kernels.y.tolist(), request.options["truncate"]
    ((1, 6, 8), [4.0], [3.0], 3.0)
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention = {convention!r} is not one of {', '.join(map(repr, CONVENTIONS))}")
    keypoints, kind = _adopt(keypoints, "keypoints")
    xp = kind.xp
    if keypoints.ndim != 3 or keypoints.shape[2] < 2:
        raise ValueError(f"keypoints must have shape (N, K, 2), got {tuple(keypoints.shape)}")
    if keypoints.dtype.kind not in "iuf":
        raise TypeError(f"keypoints must hold numbers, got dtype {keypoints.dtype}")
    n, k = int(keypoints.shape[0]), int(keypoints.shape[1])
    width, height = _size_pair(heatmap_size, "heatmap_size")
    in_width, in_height = _size_pair(input_size, "input_size") if input_size is not None else (width, height)
    image, n_images = _batch(image, n, n_images, kind, "instance")
    shape = (k, height, width) if image is None else (n_images, k, height, width)

    sigma = _positive_per_item(sigma, kind, n, "instance")
    if visible is None:
        visible = xp.ones((n, k), dtype=xp.float32)
    else:
        visible = _same_place(visible, kind, "visible").astype(xp.float32)
        if visible.shape != (n, k):
            raise ValueError(f"visible has shape {tuple(visible.shape)}; expected (N, K) = ({n}, {k})")

    # Heatmap coordinates, computed like mmpose: keypoints (in their own float dtype) divided by a
    # float32 scale factor.
    if convention == "udp":
        factor = np.array([(in_width - 1) / max(width - 1, 1), (in_height - 1) / max(height - 1, 1)])
    else:
        factor = np.array([in_width / width, in_height / height])
    # Only the visible keypoints are looked at (invisible ones may hold anything, NaN included).
    rows = xp.nonzero(visible.reshape(-1) >= 0.5)[0]
    factor = factor.astype(np.float32)
    x, y = (keypoints[..., axis].reshape(-1)[rows] for axis in (0, 1))
    if x.dtype.kind != "f":
        x, y = x.astype(xp.float64), y.astype(xp.float64)
    x, y = x / factor[0], y / factor[1]  # in the keypoints' dtype (float32 stays float32), as mmpose
    if not bool(xp.isfinite(x).all() & xp.isfinite(y).all()):
        i, j = divmod(int(rows[xp.nonzero(~(xp.isfinite(x) & xp.isfinite(y)))[0][0]]), k)
        raise ValueError(f"keypoints[{i}, {j}] = {keypoints[i, j, :2].tolist()!r} is not finite but visible "
                         f"(instance {i}, keypoint {j}); mark it invisible with visible=0")
    if convention == "msra":  # mmpose's (kp + 0.5).astype(int64)
        x, y = xp.trunc(x + 0.5), xp.trunc(y + 0.5)
    x, y = x.astype(xp.float64), y.astype(xp.float64)
    instance = rows // k
    reach = KEYPOINT_TRUNCATE * sigma[instance]
    # The 3-sigma box holds a pixel: floor(c + r) >= 0 and ceil(c - r) <= size - 1, per axis.
    inside = (x + reach >= 0) & (x - reach <= width - 1) & (y + reach >= 0) & (y - reach <= height - 1)
    if not bool(inside.all()):
        rows, instance, x, y = rows[inside], instance[inside], x[inside], y[inside]
    weights = xp.zeros(n * k, dtype=xp.float32)
    weights[rows] = visible.reshape(-1)[rows]
    weights = weights.reshape(n, k)
    channel = rows % k
    target = channel if image is None else image[instance] * k + channel
    kernels = Kernels(x, y, sigma_x=sigma[instance], image=target)
    options = dict(combine="max", normalize="peak", truncate=None if convention == "dark" else KEYPOINT_TRUNCATE)
    return Request(kind, kernels, shape, options, weights)


# -- detection: CenterNet centre heatmaps ---------------------------------------------------------

def gaussian_radius(height, width, min_overlap=0.3, formula="cornernet"):
    """CornerNet's Gaussian radius of boxes: how far a corner may move keeping IoU >= ``min_overlap``.

    With ``o = min_overlap`` and a box ``h x w``, three cases bound a corner displacement ``r``:
    one corner inside and one outside the box (``r^2 - (h+w) r + wh (1-o)/(1+o) = 0``), both
    inside (``4 r^2 - 2(h+w) r + (1-o) wh = 0``) and both outside
    (``4o r^2 + 2o(h+w) r + (o-1) wh = 0``). The radius is the smallest of the three roots.

    Parameters
    ----------
    height, width : float or array_like
        Box sizes (heatmap pixels); broadcast together.
    min_overlap : float, default 0.3
        IoU to keep, in (0, 1).
    formula : {"cornernet", "centernet"}
        * ``"cornernet"``: the corrected roots ``(b - sqrt(b^2 - 4ac)) / 2a`` (cases 1, 2) and
          ``(b3 + sqrt(b3^2 - 4 a3 c3)) / 2 a3`` (case 3), as in CornerNet since its 2019 fix
          ("Fix a bug", which also moved its configs from IoU 0.7 to 0.3) and in mmdet
          (``gaussian_target.gaussian_radius``, used with ``min_overlap=0.3``).
        * ``"centernet"``: the original code, ``(b + sqrt(b^2 - 4ac)) / 2`` for every case (the
          other root, not divided by ``2a``), still in CenterNet (default IoU 0.7), mmdet3d,
          CenterPoint and FairMOT. Cases 1 and 2 are then always large, so the result is case 3
          scaled by ``4o``; CornerNet's authors acknowledged the mistake and CenterNet kept it
          because its loss settings were tuned with it.

    Returns
    -------
    float64 array of the broadcast shape (a 0-d array for scalars)
        The radius before rounding; the target code then takes ``int()`` of it.

    Raises
    ------
    ValueError
        Unknown formula, ``min_overlap`` outside (0, 1), negative or non-finite sizes.

    Examples
    --------
    >>> from gaussheat_gpu.targets import gaussian_radius
    >>> gaussian_radius([10, 64], [10, 64], 0.3).round(2).tolist()
    [2.26, 14.47]
    >>> float(gaussian_radius(10, 10, 0.7, "centernet").round(2))
    2.73
    """
    if formula not in RADIUS_FORMULAS:
        raise ValueError(f"formula = {formula!r} is not one of {', '.join(map(repr, RADIUS_FORMULAS))}")
    o = float(min_overlap)
    if not 0 < o < 1:
        raise ValueError(f"min_overlap = {min_overlap!r} must lie in (0, 1)")
    xp = array_module(height, width)
    h, w = xp.broadcast_arrays(xp.asarray(height, dtype=xp.float64), xp.asarray(width, dtype=xp.float64))
    for name, values in (("height", h), ("width", w)):
        bad = ~(values >= 0) | ~xp.isfinite(values)
        if bool(bad.any()):
            i = tuple(int(v) for v in xp.argwhere(bad)[0]) if values.ndim else ()
            raise ValueError(f"{name}{list(i) if i else ''} = {float(values[i])!r} must be finite and >= 0")
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    sq1 = xp.sqrt(b1 ** 2 - 4 * c1)
    sq2 = xp.sqrt(b2 ** 2 - 16 * c2)
    sq3 = xp.sqrt(b3 ** 2 - 4 * a3 * c3)
    if formula == "cornernet":
        r1, r2, r3 = (b1 - sq1) / 2, (b2 - sq2) / 8, (b3 + sq3) / (2 * a3)
    else:
        r1, r2, r3 = (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    return xp.minimum(xp.minimum(r1, r2), r3)


def center_heatmaps(boxes, labels, num_classes, heatmap_size, *, image=None, n_images=None, input_size=None,
                    min_overlap=0.3, radius="cornernet", min_radius=0, dtype="float32", backend="auto"):
    """CenterNet centre heatmaps of a batch of boxes: one channel per class, in one render call.

    Each box draws CenterNet's ``draw_umich_gaussian``: centre ``((x1+x2)/2, (y1+y2)/2)`` scaled
    to the heatmap and floored to a pixel, radius ``r = max(min_radius, int(gaussian_radius(h, w)))``
    of the scaled box, ``sigma = (2r + 1) / 6``, a ``(2r+1) x (2r+1)`` window clipped to the map,
    value ``exp(-d^2 / (2 sigma^2))``, combined by max per class channel.

    Parameters
    ----------
    boxes : array (M, 4)
        ``x1, y1, x2, y2`` in input pixels (NumPy, CuPy or ``__dlpack__``).
    labels : array (M,) of int
        Class of each box, in ``[0, num_classes)``.
    num_classes : int
    heatmap_size : (W, H)
    image : array (M,) of int, optional
        Image of each box; the output then gets a leading batch axis of ``n_images``.
    n_images : int, optional
        Default ``max(image) + 1``.
    input_size : (W, H), optional
        Size of the image the boxes are given in (default ``heatmap_size``); boxes and centres are
        multiplied by ``heatmap / input`` like mmdet's ``CenterNetHead``.
    min_overlap : float, default 0.3
        IoU of :func:`gaussian_radius` (mmdet's 0.3; CenterNet used 0.7 with ``"centernet"``).
    radius : {"cornernet", "centernet"} or array (M,)
        The :func:`gaussian_radius` formula, or each box's radius in heatmap pixels.
    min_radius : int, default 0
        Smallest radius (CenterPoint uses 2).
    dtype : {"float32", "float64", "float16"}
        As in :func:`keypoint_heatmaps`.
    backend : {"auto", "cupy", "numba", "numpy"}

    Returns
    -------
    array (num_classes, H, W), or (n_images, num_classes, H, W) with ``image``
        Exactly 1.0 on every centre inside the map, in every dtype (mmdet's
        ``gaussian_focal_loss`` counts positives with ``target == 1``).

    Raises
    ------
    ValueError, TypeError
        Wrong shapes, non-finite boxes, ``x2 < x1`` or ``y2 < y1``, labels outside the classes,
        negative radii (the box is named).

    Notes
    -----
    CenterNet clips boxes to the map first and so never sees a centre outside it; here a centre
    outside the map draws the part of its window inside (floor, not ``int()``'s truncation towards
    0, decides the pixel). CenterNet's ``gaussian2D`` zeroes values below ``eps * max``; inside a
    ``(2r+1)^2`` window the smallest value is ``exp(-18 r^2 / (2r+1)^2) > exp(-4.5)``, so that cut
    never applies.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussheat_gpu.targets import center_heatmaps
    >>> heat = center_heatmaps(np.array([[8.0, 8.0, 40.0, 24.0]]), [2], 3, (64, 32), backend="numpy")
    >>> heat.shape, float(heat[2, 16, 24]), int((heat == 1).sum())
    ((3, 32, 64), 1.0, 1)
    """
    dtype = parse_dtype(dtype, _DTYPES)
    request = center_request(boxes, labels, num_classes, heatmap_size, image=image, n_images=n_images,
                             input_size=input_size, min_overlap=min_overlap, radius=radius, min_radius=min_radius)
    return _render(request, dtype, backend)


def center_request(boxes, labels, num_classes, heatmap_size, *, image=None, n_images=None, input_size=None,
                   min_overlap=0.3, radius="cornernet", min_radius=0) -> Request:
    """What :func:`center_heatmaps` renders: its kernels, shape and options.

    Parameters
    ----------
    boxes, labels, num_classes, heatmap_size, image, n_images, input_size, min_overlap, radius, min_radius
        As in :func:`center_heatmaps`.

    Returns
    -------
    Request
        ``render(request.kernels, request.shape, **request.options)`` gives the heatmaps.

    Raises
    ------
    ValueError, TypeError
        As :func:`center_heatmaps`.

    Examples
    --------
    >>> import numpy as np
    >>> request = center_request(np.array([[2.0, 2.0, 7.0, 9.0]]), [1], 2, (16, 16), radius=[2])
    >>> request.kernels.x.tolist(), request.kernels.y.tolist(), request.kernels.sigma_x.tolist()
    ([4.0], [5.0], [0.8333333333333334])
    """
    boxes, kind = _finite_rows(boxes, "boxes", 4, "(M, 4) (x1, y1, x2, y2)", "box")
    xp = kind.xp
    m = int(boxes.shape[0])
    first_bad(boxes, (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), xp, "has x2 < x1 or y2 < y1",
               "box", "boxes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f"num_classes = {num_classes!r} must be a positive integer")
    labels = _same_place(labels, kind, "labels")
    if labels.shape != (m,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {m} integers (one per box), got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    first_bad(labels, (labels < 0) | (labels >= num_classes), xp,
               f"is not a class in [0, {num_classes - 1}]", "box", "labels")
    width, height = _size_pair(heatmap_size, "heatmap_size")
    in_width, in_height = _size_pair(input_size, "input_size") if input_size is not None else (width, height)
    image, n_images = _batch(image, m, n_images, kind, "box")
    shape = (num_classes, height, width) if image is None else (n_images, num_classes, height, width)

    ratio_x, ratio_y = width / in_width, height / in_height
    cx = xp.floor((boxes[:, 0] + boxes[:, 2]) / 2 * ratio_x)
    cy = xp.floor((boxes[:, 1] + boxes[:, 3]) / 2 * ratio_y)
    if isinstance(radius, str):
        r = gaussian_radius((boxes[:, 3] - boxes[:, 1]) * ratio_y, (boxes[:, 2] - boxes[:, 0]) * ratio_x,
                            min_overlap, radius)
        r = xp.floor(r)
    else:
        r = _per_item(radius, kind, m, "box", "radius")
        first_bad(r, ~(r >= 0) | ~xp.isfinite(r) | (r != xp.floor(r)), xp, "must be an integer >= 0",
                   "box", "radius")
    r = xp.maximum(r, float(min_radius))
    sigma = (2 * r + 1) / 6
    target = labels.astype(xp.int64) if image is None else image * num_classes + labels
    kernels = Kernels(cx, cy, sigma_x=sigma, image=target)
    # Half-width r + 1/2 = 3 sigma: the box is exactly the integer centre +- r (3 sigma lies within ulps of
    # r + 1/2, never near an integer).
    return Request(kind, kernels, shape, dict(combine="max", normalize="peak", truncate=CENTER_TRUNCATE))


def _finite_rows(value, name, columns, layout, item):
    """``value`` as a float64 ``(M, columns)`` array of finite rows, and its kind."""
    rows, kind = _adopt(value, name)
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(rows.shape)}")
    rows = rows.astype(kind.xp.float64, copy=False)
    finite = kind.xp.isfinite(rows)
    if not bool(finite.all()):  # (a row-wise reduction of a narrow array costs more than the check)
        first_bad(rows, ~finite.all(axis=1), kind.xp, "is not finite", item, name)
    return rows, kind


# -- crowds: density maps -------------------------------------------------------------------------

def density_map(points, shape, *, sigma=4.0, k=3, beta=0.3, lone_sigma=None, image=None, n_images=None,
                border="count", truncate=4.0, dtype="float32", backend="auto"):
    """Crowd-counting density map of a batch of head points, in one render call.

    Parameters
    ----------
    points : array (N, 2)
        x (column), y (row) of each head, as pixel-centre coordinates: ``(3, 5)`` is the centre of
        pixel row 5, column 3; sub-pixel values are used as given. CSRNet's annotation
        ``k[int(y), int(x)] = 1`` is the point ``(floor(x), floor(y))``: floor the points to
        reproduce it (CSRNet also collapses heads that floor to the same pixel; here each counts).
    shape : (H, W)
        Map height and width: positive ints, NumPy integers or whole floats.
    sigma : float, array (N,) or "adaptive"
        Gaussian standard deviation in pixels. ``"adaptive"`` is CSRNet's geometry-adaptive
        kernel: ``beta`` times the mean distance to the ``k`` nearest other heads of the same
        image (the distances of CSRNet's cKDTree query; ``beta=0.3, k=3`` is CSRNet's
        ``0.1 * (d1 + d2 + d3)``).
    k : int, default 3
    beta : float, default 0.3
    lone_sigma : float, optional
        Fallback of ``"adaptive"`` for a head alone in its image; default CSRNet's
        ``mean(H, W) / 4``. A head whose image has fewer than ``k + 1`` heads but more than one
        uses the mean distance to the others it has (CSRNet's script crashes there, with an
        infinite sigma).
    image : array (N,) of int, optional
        Image of each head; the map then gets a leading batch axis of ``n_images``.
    n_images : int, optional
        Default ``max(image) + 1``.
    border : {"count", "constant", "reflect"}
        * ``"count"``: each head's visible pixels sum to 1 (the map sums to the head count).
        * ``"constant"``: ``scipy.ndimage.gaussian_filter(delta, sigma, mode="constant",
          truncate=truncate)`` of the heads' delta image: each window sums to 1 before the image
          edge cuts it, and mass outside is lost (CSRNet, ShanghaiTech part A).
        * ``"reflect"``: scipy's default ``mode="reflect"``: mass outside is folded back in by
          mirroring about the edges, so the count is kept (CSRNet's part B, ``gaussian_filter(k, 15)``).
    truncate : float, default 4
        The window of each head, scipy's: ``|dx|, |dy| <= R`` pixels with ``R = int(truncate *
        sigma + 0.5)``, for every border mode.
    dtype : {"float32", "float64", "float16"}
        As in :func:`keypoint_heatmaps`.
    backend : {"auto", "cupy", "numba", "numpy"}

    Returns
    -------
    array (H, W), or (n_images, H, W) with ``image``

    Raises
    ------
    ValueError, TypeError
        Wrong shapes, non-finite points, bad sigma, ``k < 1``, an adaptive sigma of 0 (a head with
        its ``k`` nearest heads all at its own position: remove duplicate annotations).
    gaussheat_gpu.backends.BackendUnavailable
        ``sigma="adaptive"``, ``"constant"`` or ``"reflect"`` where Numba cannot run (their
        per-head passes are compiled code, whatever ``backend`` renders).

    Notes
    -----
    For heads on whole pixels, ``"constant"`` and ``"reflect"`` equal scipy's filter of the delta
    image to float rounding (a window sum ``S`` along each axis, each pixel
    ``exp(-d^2 / (2 sigma^2)) / S_x S_y``, the reflected copies at ``-1 - x`` and ``2W - 1 - x``).
    They cannot agree for sub-pixel heads, which a delta image cannot hold: those get the same
    Gaussian sampled around the true centre, normalised over its window. ``"count"`` differs from
    both only at the borders. The adaptive sigmas (the same distances as scipy's cKDTree query)
    and the window sums of ``"constant"`` and ``"reflect"`` are computed on the host by compiled,
    multi-threaded code (Numba; its first call in a new environment compiles it, ~4 s on 2 cores,
    unless ``gaussheat warmup`` ran): device inputs are copied there for that step.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussheat_gpu.targets import density_map
    >>> heads = np.array([[2.0, 3.0], [50.0, 40.0], [51.0, 44.0], [60.0, 30.0]])
    >>> m = density_map(heads, (64, 96), sigma="adaptive", backend="numpy")
    >>> round(float(m.sum()), 4)
    4.0
    """
    dtype = parse_dtype(dtype, _DTYPES)
    request = density_request(points, shape, sigma=sigma, k=k, beta=beta, lone_sigma=lone_sigma, image=image,
                              n_images=n_images, border=border, truncate=truncate)
    return _render(request, dtype, backend)


def density_request(points, shape, *, sigma=4.0, k=3, beta=0.3, lone_sigma=None, image=None, n_images=None,
                    border="count", truncate=4.0) -> Request:
    """What :func:`density_map` renders: its kernels, shape and options.

    Parameters
    ----------
    points, shape, sigma, k, beta, lone_sigma, image, n_images, border, truncate
        As in :func:`density_map`.

    Returns
    -------
    Request
        ``render(request.kernels, request.shape, **request.options)`` gives the map (for
        ``"reflect"``, the kernels include every head's mirrored copies).

    Raises
    ------
    ValueError, TypeError
        As :func:`density_map`.

    Examples
    --------
    >>> import numpy as np
    >>> request = density_request(np.array([[0.0, 6.0]]), (12, 12), sigma=1.0, border="reflect")
    >>> request.kernels.x.tolist(), request.kernels.y.tolist(), request.options["normalize"]
    ([0.0, -1.0], [6.0, 6.0], 'peak')
    """
    if border not in BORDERS:
        raise ValueError(f"border = {border!r} is not one of {', '.join(map(repr, BORDERS))}")
    points, kind = _finite_rows(points, "points", 2, "(N, 2) (x, y)", "point")
    xp = kind.xp
    n = int(points.shape[0])
    height, width = _size_pair(shape, "shape", "(H, W)")
    image, n_images = _batch(image, n, n_images, kind, "point")
    out_shape = (height, width) if image is None else (n_images, height, width)
    truncate = float(truncate)
    if not (math.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate = {truncate} must be a finite number > 0")

    if isinstance(sigma, str):
        if sigma != "adaptive":
            raise ValueError(f"sigma = {sigma!r}: give a number, one per point, or 'adaptive'")
        sigma = xp.asarray(adaptive_sigma(_to_xp(points, np), None if image is None else _to_xp(image, np),
                                          (height, width), k=k, beta=beta, lone_sigma=lone_sigma))
    else:
        sigma = _positive_per_item(sigma, kind, n, "point")
    if n == 0:
        return Request(kind, Kernels(points[:, 0], points[:, 1], 1.0), out_shape, {})

    reach = xp.floor(truncate * sigma + 0.5)  # scipy's radius R = int(truncate * sigma + 0.5)
    t = (reach + 0.5) / sigma  # a box of exactly the pixels within R of a whole-pixel centre
    half = t * xp.sqrt(sigma * sigma)  # the box's half-width, as the planner computes it
    x, y = points[:, 0], points[:, 1]
    target = xp.zeros(n, dtype=xp.int64) if image is None else image
    if border == "count":
        kernels = Kernels(x, y, sigma_x=sigma, image=target)
        return Request(kind, kernels, out_shape, dict(normalize="count", truncate=t))
    # constant / reflect: each head's window sums to 1 before the border (scipy's normalisation).
    sums_x = _window_sums(x, sigma, half, xp)
    # Heads whose x and y have the same fractional part (whole pixels: CSRNet's) have the same sums.
    same = (x - xp.floor(x)) == (y - xp.floor(y))
    sums_y = sums_x if bool(same.all()) else xp.where(same, sums_x, _window_sums(y, sigma, half, xp))
    amplitude = 1.0 / (sums_x * sums_y)
    if border == "constant":
        kernels = Kernels(x, y, sigma_x=sigma, amplitude=amplitude, image=target)
        return Request(kind, kernels, out_shape, dict(normalize="peak", truncate=t))
    copy_x, pos_x = _mirror_positions(x, half, width, xp)
    copy_y, pos_y = _mirror_positions(y, half, height, xp)
    # Every pair of an x copy and a y copy of the same head (copies come sorted by head).
    starts = xp.searchsorted(copy_y, copy_x, side="left")
    counts = xp.searchsorted(copy_y, copy_x, side="right") - starts  # y copies of each x copy's head
    ends = xp.cumsum(counts)
    pair = xp.arange(int(ends[-1]))
    pair_x = xp.searchsorted(ends, pair, side="right")  # (CuPy's repeat takes no array of counts)
    pair_y = starts[pair_x] + pair - (ends - counts)[pair_x]
    head = copy_x[pair_x]
    kernels = Kernels(pos_x[pair_x], pos_y[pair_y], sigma_x=sigma[head], amplitude=amplitude[head], image=target[head])
    return Request(kind, kernels, out_shape, dict(normalize="peak", truncate=t[head]))


def adaptive_sigma(points, image, shape, *, k=3, beta=0.3, lone_sigma=None):
    """CSRNet's geometry-adaptive sigma of each head: ``beta`` times the mean distance to its ``k``
    nearest other heads of the same image.

    Parameters
    ----------
    points : ndarray (N, 2)
    image : ndarray (N,) of int, or None (one image)
    shape : (H, W)
    k : int
    beta : float
    lone_sigma : float, optional
        Sigma of a head alone in its image; default ``mean(H, W) / 4`` (CSRNet's).

    Returns
    -------
    ndarray (N,) float64

    Raises
    ------
    ValueError
        ``k < 1``, ``beta <= 0``, ``lone_sigma <= 0``, a head whose ``k`` nearest heads all sit
        at its own position (sigma 0), or one whose distance to them overflows (sigma infinite).
    gaussheat_gpu.backends.BackendUnavailable
        Numba cannot run here (the nearest-neighbour search is compiled code).

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_sigma(np.array([[0.0, 0.0], [3.0, 4.0]]), None, (10, 10), k=3).tolist()
    [1.5, 1.5]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k = {k!r} must be an integer >= 1")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta = {beta!r} must be a finite number > 0")
    lone = float(np.mean(shape)) / 4 if lone_sigma is None else float(lone_sigma)
    if not (math.isfinite(lone) and lone > 0):
        raise ValueError(f"lone_sigma = {lone_sigma!r} must be a finite number > 0")
    n = points.shape[0]
    if n == 0:
        return np.zeros(0)
    if image is None:
        image, n_present = np.zeros(n, dtype=np.int64), 1
    else:  # the images that hold heads, numbered 0 .. n_present - 1
        present, image = np.unique(np.asarray(image, dtype=np.int64), return_inverse=True)
        n_present = present.size
    mean, count = np.empty(n), np.empty(n, dtype=np.int64)
    points = np.asarray(points, dtype=np.float64)
    x, y = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    _compiled().mean_nearest_distances(x, y, image.astype(np.int64, copy=False), n_present, int(k), mean, count)
    sigma = np.where(count > 0, beta * mean, lone)
    zero = np.flatnonzero(sigma <= 0)
    if zero.size:
        i = int(zero[0])
        raise ValueError(f"point {i} at {points[i].tolist()!r} has its {int(count[i])} nearest heads at distance 0 "
                         f"(duplicate annotations), so its adaptive sigma is 0; remove duplicates or give sigma")
    far = np.flatnonzero(~np.isfinite(sigma))
    if far.size:
        i = int(far[0])
        raise ValueError(f"point {i} at {points[i].tolist()!r} is too far from its nearest heads: the distance "
                         f"overflows float64, so its adaptive sigma is infinite; give sigma")
    return sigma


def _compiled():
    """The compiled per-head passes (:mod:`gaussheat_gpu.backends.numba.neighbours`: parallel Numba
    code); ``BackendUnavailable`` with the reason where Numba cannot run here (for instance in a
    child forked after GNU OpenMP threads ran, where parallel code would abort)."""
    backends.get("numba")
    from .backends.numba import neighbours

    return neighbours


def _window_sums(centre, sigma, half, xp):
    """Sum of ``exp(-d^2 / (2 sigma^2))`` over the pixels ``d = p - centre`` of each head's window
    ``ceil(centre - half) .. floor(centre + half)`` (the render box, unclipped), on the host."""
    centre, sigma, half = (np.ascontiguousarray(_to_xp(a, np), dtype=np.float64) for a in (centre, sigma, half))
    sums = np.empty(centre.shape)
    _compiled().window_sums(centre, sigma, half, sums)
    return xp.asarray(sums)


def _mirror_positions(centre, half, size, xp):
    """Copies of each head under scipy's ``reflect`` extension along one axis.

    The extended signal is symmetric about -1/2 and ``size - 1/2`` and periodic with period
    ``2 size``: a head at ``c`` appears at ``c + 2 size j`` and ``-1 - c + 2 size j``. Copies whose
    window (``|d| <= half``) reaches a pixel of the axis are kept.

    Returns
    -------
    head : int array
        Which head each copy belongs to.
    position : float array
    """
    period = 2.0 * size
    bases = []
    for base in (centre, -1.0 - centre):
        # The periods j whose copy may reach the axis, from one before the first to one after the last.
        first = xp.floor((-half - base) / period) - 1.0
        count = xp.floor((size - 1.0 + half - base) / period) + 2.0 - first
        bases.append((base, first, int(xp.max(count))))
    width = max(n for _, _, n in bases)
    steps = xp.arange(width, dtype=xp.float64)
    candidates = xp.concatenate([base[:, None] + period * (first[:, None] + steps) for base, first, _ in bases], axis=1)
    keep = (xp.floor(candidates + half[:, None]) >= 0) & (xp.ceil(candidates - half[:, None]) <= size - 1)
    head, column = xp.nonzero(keep)
    return head, candidates[head, column]
