"""The planning step: everything a backend needs, decided once, in float64.

``make_plan`` turns validated kernels and the render options into a :class:`Plan`:

* per-kernel coefficients in pixel units (``params``, columns named by the ``P_*`` constants),
* integer support boxes clipped to the image and the image index (``boxes``, ``B_*`` columns),
* on demand, a CSR list of kernels per tile (:meth:`Plan.bins`).

With ``u = col - P_CX`` and ``w = row - P_CY`` (pixel units) a kernel's exponent is
``q = A*u**2 + 2*B*u*w + C*w**2`` and its unnormalised value ``g = exp(-(q - SHIFT_COL - SHIFT_ROW)/2)``.
The value written is:

========== ===============================================================================
normalize  value
========== ===============================================================================
pdf        ``SCALE * g`` (``SCALE = a / (2 pi sx sy)``, shifts 0)
peak       ``SCALE * g`` (``SCALE = a``, shifts 0)
count      ``SCALE * g / sum(g over the box)`` (``SCALE = a``; shifts keep ``g`` from underflowing)
integral   ``SCALE * m(u, SIGMA_COL) * m(w, SIGMA_ROW)`` with ``m`` the normal mass of a unit cell
========== ===============================================================================

For axis-aligned kernels (``B == 0``) the shifts split per axis, so separable evaluators can use
``gx = exp(-(A*u**2 - SHIFT_COL)/2)`` and ``gy = exp(-(C*w**2 - SHIFT_ROW)/2)``.
The same column layout is mirrored in ``kernels/gaussheat.cuh``; a test keeps them in step.

The module is written against an array namespace ``xp`` (NumPy, or CuPy for kernels on a GPU),
so the same code plans on the host or on the device.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

COMBINES = ("sum", "max", "por")
NORMALIZES = ("pdf", "peak", "integral", "count")

# Columns of Plan.params (float64).
P_CX, P_CY, P_A, P_B, P_C, P_SIGMA_COL, P_SIGMA_ROW, P_SCALE, P_SHIFT_COL, P_SHIFT_ROW = range(10)
N_PARAMS = 10
# Columns of Plan.boxes (int64): inclusive pixel ranges and the image index.
B_COL0, B_COL1, B_ROW0, B_ROW1, B_IMAGE = range(5)
N_BOX = 5

COMBINE_CODES = {name: code for code, name in enumerate(COMBINES)}
NORMALIZE_CODES = {name: code for code, name in enumerate(NORMALIZES)}
_PEAK = NORMALIZE_CODES["peak"]  # codes up to this one (pdf, peak) give values that peak at SCALE


class Grid(NamedTuple):
    """Pixel grid of an output: ``n_images`` images of ``height x width`` pixels.

    Pixel ``(r, c)`` sits at ``(x0 + c*dx, y0 + r*dy)`` in kernel coordinates. A named tuple: a
    frozen dataclass took a microsecond to build, a measurable part of a small render.
    """

    shape: tuple
    n_images: int
    height: int
    width: int
    x0: float
    dx: float
    y0: float
    dy: float


def make_grid(shape, extent=None) -> Grid:
    """Validate ``shape`` and ``extent`` and describe the pixel grid.

    Parameters
    ----------
    shape : int or tuple of int
        ``(..., H, W)``; leading dimensions are flattened into the image index.
    extent : tuple of 4 float, optional
        ``(x0, x1, y0, y1)``: coordinates of the first and last pixel centres, like
        ``numpy.linspace``. Default ``(0, W-1, 0, H-1)``.

    Returns
    -------
    Grid

    Raises
    ------
    TypeError, ValueError
        ``shape`` is not a tuple of positive integers (at least 2), or ``extent`` is not 4 finite
        numbers giving a nonzero pixel spacing.
    """
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if len(dims) < 2:
        raise ValueError(f"shape must have at least 2 dimensions (..., H, W), got {dims!r}")
    for axis, n in enumerate(dims):
        if type(n) is not int and (isinstance(n, bool) or not isinstance(n, (int, np.integer))):
            raise TypeError(f"shape[{axis}] must be an int, got {n!r} in shape={dims!r}")
        if n <= 0:
            raise ValueError(f"shape[{axis}] = {n} must be > 0 (shape={dims!r})")
    dims = tuple(int(n) for n in dims)
    height, width = dims[-2], dims[-1]
    n_images = math.prod(dims[:-2])
    if extent is None:
        x0, x1, y0, y1 = 0.0, float(width - 1), 0.0, float(height - 1)
    else:
        try:
            x0, x1, y0, y1 = (float(v) for v in extent)
        except (TypeError, ValueError):
            raise TypeError(f"extent must be 4 numbers (x0, x1, y0, y1), got {extent!r}") from None
        for name, v in zip(("x0", "x1", "y0", "y1"), (x0, x1, y0, y1)):
            if not math.isfinite(v):
                raise ValueError(f"extent {name} = {v} is not finite (extent={extent!r})")
    dx = (x1 - x0) / (width - 1) if width > 1 else 1.0
    dy = (y1 - y0) / (height - 1) if height > 1 else 1.0
    for name, step, first, last in (("x", dx, x0, x1), ("y", dy, y0, y1)):
        if step == 0.0 or not math.isfinite(step):
            raise ValueError(
                f"extent gives a {name} pixel spacing of {step} ({name}0 = {first}, {name}1 = {last}); "
                f"the first and last pixel centres must differ"
            )
    return Grid(dims, n_images, height, width, x0, dx, y0, dy)


@dataclass(eq=False)
class Plan:
    """What a backend evaluates: the grid, the modes, and per-kernel coefficients in pixel units.

    Only kernels whose support box holds at least one pixel are kept; ``kernel_index`` maps
    plan rows back to the caller's kernel indices. Rows keep the caller's order. Read-only by
    convention (not frozen: a frozen dataclass costs a microsecond per render to build).
    """

    grid: Grid
    combine: str
    normalize: str
    dtype: np.dtype
    accumulate: bool
    params: object  # (M, N_PARAMS) float64, C-contiguous, on xp
    boxes: object  # (M, N_BOX) int64, C-contiguous, on xp
    kernel_index: object  # (M,) int64, on xp
    axis_aligned: bool  # every kept kernel has B == 0
    xp: object = field(repr=False, default=np)
    _bins_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_kernels(self) -> int:
        return int(self.params.shape[0])

    def bins(self, tile_height: int, tile_width: int):
        """Kernels per tile as a CSR list, tiles ordered (image, tile row, tile column).

        Parameters
        ----------
        tile_height, tile_width : int
            Tile size in pixels; ``tile_width >= width`` gives row bands.

        Returns
        -------
        offsets : (n_tiles + 1,) int64 array
            Kernels of tile ``t`` are ``kernel_ids[offsets[t]:offsets[t+1]]``.
        kernel_ids : (total,) int64 array
            Plan rows, in plan order within each tile.
        """
        key = (int(tile_height), int(tile_width))
        if key not in self._bins_cache:
            self._bins_cache[key] = bin_kernels(self, *key)
        return self._bins_cache[key]

    def tile_counts(self, tile_height: int, tile_width: int) -> tuple[int, int]:
        """Number of tile rows and tile columns per image."""
        return -(-self.grid.height // tile_height), -(-self.grid.width // tile_width)


def bin_kernels(plan: Plan, tile_height: int, tile_width: int):
    """CSR list of the plan's kernels per tile; see :meth:`Plan.bins`."""
    xp = plan.xp
    if tile_height <= 0 or tile_width <= 0:
        raise ValueError(f"tile size must be positive, got {tile_height} x {tile_width}")
    n_tile_rows, n_tile_cols = plan.tile_counts(tile_height, tile_width)
    boxes = plan.boxes
    return tile_lists(boxes[:, B_COL0] // tile_width, boxes[:, B_COL1] // tile_width,
                      boxes[:, B_ROW0] // tile_height, boxes[:, B_ROW1] // tile_height, boxes[:, B_IMAGE],
                      (plan.grid.n_images, n_tile_rows, n_tile_cols), xp)


def tile_lists(tc0, tc1, tr0, tr1, image, tiles, xp=np):
    """CSR list of kernels per tile from each kernel's inclusive tile ranges.

    Parameters
    ----------
    tc0, tc1, tr0, tr1 : (M,) int64 arrays
        First and last tile column and tile row each kernel meets (``tc0 <= tc1``, ``tr0 <= tr1``).
    image : (M,) int64 array
        Each kernel's tile-image index (0 <= image < ``tiles[0]``).
    tiles : (int, int, int)
        Tile images, tile rows and tile columns; tiles are ordered (image, tile row, tile column).
    xp : module
        Array namespace of the arrays.

    Returns
    -------
    offsets, kernel_ids
        As in :meth:`Plan.bins`: kernel rows in their given order within each tile.
    """
    n_images, n_tile_rows, n_tile_cols = tiles
    n_tiles = n_images * n_tile_rows * n_tile_cols
    n_kernels = int(tc0.shape[0])
    n_cols = tc1 - tc0 + 1
    per_kernel = (tr1 - tr0 + 1) * n_cols
    total = int(per_kernel.sum()) if n_kernels else 0
    if total == 0:
        return xp.zeros(n_tiles + 1, dtype=xp.int64), xp.zeros(0, dtype=xp.int64)
    ends = xp.cumsum(per_kernel)
    if xp is np:
        kernel_ids = np.repeat(np.arange(n_kernels, dtype=np.int64), per_kernel)
    else:  # CuPy's repeat takes no array of counts
        kernel_ids = xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
    starts = ends - per_kernel
    local = xp.arange(total, dtype=xp.int64) - starts[kernel_ids]
    n_cols_k = n_cols[kernel_ids]
    tile_row = tr0[kernel_ids] + local // n_cols_k
    tile_col = tc0[kernel_ids] + local % n_cols_k
    tile = (image[kernel_ids] * n_tile_rows + tile_row) * n_tile_cols + tile_col
    if xp is not np:  # CuPy's argsort is not stable: make the key unique, kernel order within a tile
        order = xp.argsort(tile * n_kernels + kernel_ids)
    elif n_tiles <= 1 << 16:  # NumPy's stable sort is a radix sort on 16-bit keys: ~10x faster
        order = np.argsort(tile.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(tile, kind="stable")
    counts = xp.bincount(tile, minlength=n_tiles)
    offsets = xp.zeros(n_tiles + 1, dtype=xp.int64)
    offsets[1:] = xp.cumsum(counts)
    return offsets, xp.ascontiguousarray(kernel_ids[order])


def make_plan(kernels, grid: Grid, *, combine="sum", normalize="pdf", truncate=4.0,
              dtype=np.float32, accumulate=False, xp=np, compiled=False, workspace=None) -> Plan:
    """Validate the options against the kernels and compute the plan.

    Parameters
    ----------
    kernels : Kernels
        Validated kernels (their arrays on ``xp``).
    grid : Grid
        From :func:`make_grid`.
    combine, normalize, truncate, dtype, accumulate
        As in :func:`gaussheat_gpu.render`; ``truncate`` may be a number, None, or one value per
        kernel (see :func:`check_truncate`).
    xp : module
        Array namespace of the kernel arrays (``numpy`` or ``cupy``).
    compiled : bool
        Plan host (NumPy) kernels in one Numba-compiled pass: the same bits as the array code, with
        a few microseconds of overhead instead of ~60 NumPy calls. Falls back to the array code where
        Numba cannot be imported; ignored for other ``xp``.
    workspace : gaussheat_gpu._workspace.Workspace, optional
        Where the compiled pass puts the plan's tables: reused memory, so the plan is valid only
        until the same thread plans again with it (what one ``render`` call needs). Default: fresh
        arrays.

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        Unknown mode, bad ``truncate``, an image index outside the output, a rotated kernel with
        ``normalize="integral"``, or (``combine="por"``) a kernel whose values leave ``[0, 1]``.
    """
    check_modes(combine, normalize)
    truncate = check_truncate(truncate, len(kernels))
    if np.ndim(truncate) and xp is not np:
        truncate = xp.asarray(truncate)  # per-kernel radii beside the device kernels
    numba_planning = _numba_planning() if compiled and xp is np else None
    if numba_planning is not None:
        tables = numba_planning.plan_tables(kernels, grid, truncate, normalize, workspace)
    else:
        tables = _array_tables(kernels, grid, truncate, normalize, combine, xp)
    _raise_for_bad_kernels(kernels, tables, grid, combine, normalize)
    if normalize == "count":
        _set_count_shifts(tables.params, tables.boxes, xp)
    return Plan(grid, combine, normalize, np.dtype(dtype), bool(accumulate), tables.params, tables.boxes,
                tables.kernel_index, tables.axis_aligned, xp)


def check_modes(combine, normalize):
    """Raise ``ValueError`` unless ``combine`` and ``normalize`` name known modes."""
    if combine not in COMBINES:
        raise ValueError(f"combine = {combine!r} is not one of {', '.join(map(repr, COMBINES))}")
    if normalize not in NORMALIZES:
        raise ValueError(f"normalize = {normalize!r} is not one of {', '.join(map(repr, NORMALIZES))}")


def check_truncate(truncate, n_kernels):
    """Validate ``truncate`` and return it as planning uses it: a float (``inf`` for None, no
    truncation) or a float64 array of one radius per kernel.

    Raises
    ------
    TypeError, ValueError
        Not a number, None or a 1-D array of ``n_kernels`` numbers; or a radius that is not a finite
        number > 0 (the message names the kernel).
    """
    if truncate is None:
        return math.inf  # exact: boxes clip to the whole image
    if isinstance(truncate, bool) or not isinstance(truncate, (int, float, np.integer, np.floating)):
        if np.ndim(truncate) != 1:
            raise TypeError(f"truncate must be a number of sigmas, None, or one number per kernel, got {truncate!r}")
        from ._xp import to_host

        radii = to_host(truncate)
        if radii.dtype.kind not in "biuf" or radii.dtype.kind == "b" or radii.shape != (n_kernels,):
            raise TypeError(f"truncate as an array must hold one number per kernel ({n_kernels}), got dtype "
                            f"{radii.dtype} and shape {radii.shape}")
        radii = radii.astype(np.float64)
        bad = ~(np.isfinite(radii) & (radii > 0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"truncate[{k}] = {float(radii[k])!r} must be a finite number > 0 (kernel {k})")
        return radii
    truncate = float(truncate)
    if not (math.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate = {truncate} must be a finite number > 0, or None for no truncation")
    return truncate


# -- per-kernel formulas, written once ----------------------------------------------------------
#
# These take arrays (NumPy or CuPy: NumPy's ufuncs dispatch to CuPy through ``__array_ufunc__``) or
# float64 scalars inside the compiled host loop (backends/numba/planning.py), which calls them
# through Numba's ``register_jitable``. Plain IEEE operations only (no fused multiply-add), so both
# ways give the same bits; cos/sin come from the C library there only where it matches NumPy's.

def kernel_coefficients(x, y, sigma_x, sigma_y, cos, sin, amplitude, geometry, pdf):
    """Pixel-unit coefficients of kernels (see the module docstring for their meaning).

    Parameters
    ----------
    x, y, sigma_x, sigma_y, cos, sin, amplitude : float or array
        Kernel columns in the caller's coordinates; ``cos``/``sin`` of ``theta``.
    geometry : tuple of 4 float
        ``(x0, dx, y0, dy)`` of the grid.
    pdf : bool
        Whether values are densities (scale ``a / (2 pi sx sy)``) or amplitudes (scale ``a``).

    Returns
    -------
    tuple
        ``cx, cy, A, B, C, sigma_col, sigma_row, scale``, each like the inputs.
    """
    x0, dx, y0, dy = geometry
    cos2, sin2, cos_sin = cos * cos, sin * sin, cos * sin
    sx2, sy2 = sigma_x * sigma_x, sigma_y * sigma_y
    # Inverse covariance R diag(1/sx^2, 1/sy^2) R^T, in pixel units.
    a_coef = (cos2 / sx2 + sin2 / sy2) * (dx * dx)
    b_coef = cos_sin * (1.0 / sx2 - 1.0 / sy2) * (dx * dy)
    c_coef = (sin2 / sx2 + cos2 / sy2) * (dy * dy)
    sigma_col = np.sqrt(cos2 * sx2 + sin2 * sy2) * (1.0 / abs(dx))
    sigma_row = np.sqrt(sin2 * sx2 + cos2 * sy2) * (1.0 / abs(dy))
    cx = (x - x0) / dx
    cy = (y - y0) / dy
    scale = amplitude / (2.0 * math.pi * sigma_x * sigma_y) if pdf else amplitude
    return cx, cy, a_coef, b_coef, c_coef, sigma_col, sigma_row, scale


def support_range(centre, radius, size):
    """Inclusive pixel range ceil(centre - radius) .. floor(centre + radius), clipped to [0, size-1].

    Returned as float64 (an empty range has ``lo > hi``); values are clipped before any integer cast
    so that far-away kernels cannot overflow. ``radius = inf`` gives the whole axis.
    """
    # np.clip costs more than both of these on the small arrays typical of a call.
    lo = np.minimum(np.maximum(np.ceil(centre - radius), 0.0), float(size))
    hi = np.minimum(np.maximum(np.floor(centre + radius), -1.0), float(size - 1))
    return lo, hi


def por_peak_is_bad(scale, amplitude, normalize_code):
    """Whether a kernel's values can leave [0, 1] (``combine="por"`` refuses it).

    pdf/peak values peak at ``scale``; integral masses and count shares are at most 1, so a kernel's
    values never exceed its amplitude there.
    """
    peak = scale if normalize_code <= _PEAK else amplitude
    return (amplitude < 0) | (peak > 1.0)


# -- the plan tables: on arrays (any xp), or in one compiled loop on the host ---------------------

class _Tables(NamedTuple):
    """Plan rows of the kernels with a pixel in the image, and the first kernel each check caught
    (-1: none, or not checked because the modes do not need it)."""

    params: object
    boxes: object
    kernel_index: object
    axis_aligned: bool
    first_bad_image: int
    first_rotated: int
    first_bad_por: int


def _geometry(grid):
    return (grid.x0, grid.dx, grid.y0, grid.dy)


def _array_tables(kernels, grid, truncate, normalize, combine, xp) -> _Tables:
    """The tables with array operations; only the checks ``combine``/``normalize`` need are run
    (each costs a device synchronisation on CuPy)."""
    n = len(kernels)
    theta = kernels.theta
    if n and not int(xp.count_nonzero(theta)):
        # Axis-aligned (the common case): cos = 1 and sin = 0 exactly, so scalars give the same
        # bits as the arrays would, for a third fewer array operations.
        cos, sin = 1.0, 0.0
    else:
        cos, sin = xp.cos(theta), xp.sin(theta)
    normalize_code = NORMALIZE_CODES[normalize]
    cx, cy, a_coef, b_coef, c_coef, sigma_col, sigma_row, scale = kernel_coefficients(
        kernels.x, kernels.y, kernels.sigma_x, kernels.sigma_y, cos, sin, kernels.amplitude,
        _geometry(grid), normalize == "pdf")
    image = kernels.image
    first_bad_image = _first_index((image < 0) | (image >= grid.n_images), xp)
    first_rotated = -1
    if normalize == "integral" and not isinstance(cos, float):
        first_rotated = _first_index(b_coef != 0.0, xp)
    first_bad_por = -1
    if combine == "por":
        first_bad_por = _first_index(por_peak_is_bad(scale, kernels.amplitude, normalize_code), xp)

    params = xp.empty((n, N_PARAMS), dtype=xp.float64)
    for column, values in ((P_CX, cx), (P_CY, cy), (P_A, a_coef), (P_B, b_coef), (P_C, c_coef),
                           (P_SIGMA_COL, sigma_col), (P_SIGMA_ROW, sigma_row), (P_SCALE, scale)):
        params[:, column] = values
    params[:, P_SHIFT_COL:P_SHIFT_ROW + 1] = 0.0
    boxes = xp.empty((n, N_BOX), dtype=xp.int64)
    for (lo, hi), values in (((B_COL0, B_COL1), support_range(cx, truncate * sigma_col, grid.width)),
                             ((B_ROW0, B_ROW1), support_range(cy, truncate * sigma_row, grid.height))):
        boxes[:, lo] = values[0].astype(xp.int64)
        boxes[:, hi] = values[1].astype(xp.int64)
    boxes[:, B_IMAGE] = image
    kernel_index = xp.arange(n, dtype=xp.int64)
    keep = (boxes[:, B_COL0] <= boxes[:, B_COL1]) & (boxes[:, B_ROW0] <= boxes[:, B_ROW1])
    if not bool(keep.all()):
        kernel_index = xp.nonzero(keep)[0]
        params, boxes = params[kernel_index], boxes[kernel_index]
    axis_aligned = not bool(params[:, P_B].any())
    return _Tables(params, boxes, kernel_index, axis_aligned, first_bad_image, first_rotated, first_bad_por)


@functools.cache
def _numba_planning():
    """:mod:`gaussheat_gpu.backends.numba.planning`, the tables in one compiled pass over host
    kernels; None without Numba (imported on first use: the package and the NumPy backend never
    import Numba)."""
    try:
        from .backends.numba import planning
    except ImportError:
        return None
    return planning


# The data checks of a plan, in the order their errors are raised.
CHECK_IMAGE, CHECK_INTEGRAL_ROTATED, CHECK_POR = range(3)


def _raise_for_bad_kernels(kernels, tables, grid, combine, normalize):
    # The compiled pass may report kernels for checks the modes do not need: only the needed ones count.
    for check, k, needed in ((CHECK_IMAGE, tables.first_bad_image, True),
                             (CHECK_INTEGRAL_ROTATED, tables.first_rotated, normalize == "integral"),
                             (CHECK_POR, tables.first_bad_por, combine == "por")):
        if needed and k >= 0:
            raise_for_bad_kernel(kernels, grid, combine, normalize, check, k)


def raise_for_bad_kernel(kernels, grid, combine, normalize, check, k):
    """Raise the ``ValueError`` of data check ``check`` (``CHECK_*``) failed by kernel ``k``."""
    if check == CHECK_IMAGE:
        raise ValueError(
            f"image[{k}] = {int(kernels.image[k])} is out of range: the output holds {grid.n_images} image(s), "
            f"so image indices must lie in [0, {grid.n_images - 1}]"
        )
    if check == CHECK_INTEGRAL_ROTATED:
        raise ValueError(
            f"normalize='integral' needs axis-aligned kernels, but kernel {k} has theta = "
            f"{float(kernels.theta[k])!r} with sigma_x = {float(kernels.sigma_x[k])!r} != sigma_y = "
            f"{float(kernels.sigma_y[k])!r}; rotated pixel integrals are not supported yet (use normalize='pdf')"
        )
    amplitude = float(kernels.amplitude[k])
    scale = kernel_coefficients(0.0, 0.0, float(kernels.sigma_x[k]), float(kernels.sigma_y[k]), 1.0, 0.0,
                                amplitude, (0.0, 1.0, 0.0, 1.0), normalize == "pdf")[-1]
    peak = scale if normalize in ("pdf", "peak") else amplitude
    raise ValueError(
        f"combine='por' needs every kernel value in [0, 1], but kernel {k} has amplitude = "
        f"{amplitude!r} and peak value {peak!r} (normalize={normalize!r})"
    )


def _set_count_shifts(params, boxes, xp):
    """Shift each kernel's exponent by (a lower bound of) its minimum over the box.

    ``count`` divides by the sum of ``g`` over the box, which is invariant to this shift, but without
    it a kernel seen only through its far tail would underflow to 0 in float32. For axis-aligned
    kernels the shift is the exact minimum over pixel centres, per axis; for rotated ones it is the
    minimum of the quadratic over the box's rectangle (at most the lattice minimum).
    """
    cx, cy = params[:, P_CX], params[:, P_CY]
    a, b, c = params[:, P_A], params[:, P_B], params[:, P_C]
    c0, c1 = boxes[:, B_COL0].astype(xp.float64), boxes[:, B_COL1].astype(xp.float64)
    r0, r1 = boxes[:, B_ROW0].astype(xp.float64), boxes[:, B_ROW1].astype(xp.float64)
    u_near = xp.clip(xp.rint(cx), c0, c1) - cx
    w_near = xp.clip(xp.rint(cy), r0, r1) - cy
    aligned = b == 0.0
    shift_col = xp.where(aligned, a * u_near * u_near, 0.0)
    shift_row = xp.where(aligned, c * w_near * w_near, 0.0)
    if not bool(aligned.all()):
        q_min = _quadratic_min_on_rectangle(a, b, c, c0 - cx, c1 - cx, r0 - cy, r1 - cy, xp)
        shift_col = xp.where(aligned, shift_col, q_min)
    params[:, P_SHIFT_COL] = shift_col
    params[:, P_SHIFT_ROW] = shift_row


def _quadratic_min_on_rectangle(a, b, c, u0, u1, w0, w1, xp):
    """Minimum of a*u^2 + 2b*u*w + c*w^2 (positive definite) over [u0, u1] x [w0, w1]."""
    inside = (u0 <= 0) & (u1 >= 0) & (w0 <= 0) & (w1 >= 0)
    best = xp.full(a.shape, xp.inf)
    for w_edge in (w0, w1):  # horizontal edges: minimise over u
        u = xp.clip(-b * w_edge / a, u0, u1)
        best = xp.minimum(best, a * u * u + 2 * b * u * w_edge + c * w_edge * w_edge)
    for u_edge in (u0, u1):  # vertical edges: minimise over w
        w = xp.clip(-b * u_edge / c, w0, w1)
        best = xp.minimum(best, a * u_edge * u_edge + 2 * b * u_edge * w + c * w * w)
    return xp.where(inside, 0.0, xp.maximum(best, 0.0))


def _first_index(mask, xp) -> int:
    """Index of the first True in ``mask``, or -1."""
    hits = xp.nonzero(mask)[0]
    return int(hits[0]) if hits.size else -1


# -- rendering a large output window by window (gaussheat_gpu.dask) ------------------------------

def fix_count_normaliser(plan: Plan, box_sums) -> Plan:
    """A ``count`` plan whose normalisers are fixed, so that any window of it renders exactly.

    A ``count`` kernel divides by the sum of ``g`` over its box; a window that clips the box must
    still divide by the sum over the whole box, not over its part. This folds ``box_sums`` (each
    kernel's float64 sum of ``g`` over its whole box) into ``SCALE`` and returns a ``peak`` plan that
    keeps the shifts: every backend evaluates ``SCALE * exp(-(q - shifts)/2)`` for it, the same value.

    Parameters
    ----------
    plan : Plan
        A ``normalize="count"`` plan on the whole grid.
    box_sums : (M,) float64 array
        Each kernel's sum of ``g`` over its box (``numpy_backend.box_sums``).

    Returns
    -------
    Plan
        A new plan (``params`` copied); ``plan`` is left as it was.
    """
    if plan.normalize != "count":
        raise ValueError(f"fix_count_normaliser needs a normalize='count' plan, got {plan.normalize!r}")
    params = plan.params.copy()
    params[:, P_SCALE] /= box_sums
    return Plan(plan.grid, plan.combine, "peak", plan.dtype, plan.accumulate, params, plan.boxes,
                plan.kernel_index, plan.axis_aligned, plan.xp)


def window_plan(plan: Plan, window) -> Plan:
    """The part of ``plan`` inside a window of its grid, as a plan on the window's own grid.

    Every kernel keeps the coefficients and the support box decided on the whole grid (integer
    box edges are clipped and shifted; centres move by whole pixels), so the window selects exactly
    the pixels of the same region of a whole-grid render, with the same values. Planning the window
    on its own with ``extent=`` would re-derive the boxes from rounded coordinates and could move a
    box edge by a pixel.

    Parameters
    ----------
    plan : Plan
        A plan on the whole grid (any subset of its kernels); not ``count`` (a window cannot see
        the whole box to normalise over: fix the normalisers first with
        :func:`fix_count_normaliser`).
    window : sequence of (start, stop)
        Half-open index ranges, one per axis of ``plan.grid.shape``.

    Returns
    -------
    Plan
        On a grid of the window's shape whose first pixel centre is the window's first pixel;
        only the kernels whose box meets the window.

    Raises
    ------
    ValueError
        A ``count`` plan, or a window that does not fit the grid.
    """
    grid, xp = plan.grid, plan.xp
    if plan.normalize == "count":
        raise ValueError("a window of a normalize='count' plan would normalise over the window: "
                         "fix the normalisers first (fix_count_normaliser)")
    window = tuple((int(a), int(b)) for a, b in window)
    if len(window) != len(grid.shape) or any(not 0 <= a < b <= n for (a, b), n in zip(window, grid.shape)):
        raise ValueError(f"window {window} does not fit the grid of shape {grid.shape}")
    *leading, (row0, row1), (col0, col1) = window
    boxes = plan.boxes
    image = boxes[:, B_IMAGE]
    keep = ((boxes[:, B_COL1] >= col0) & (boxes[:, B_COL0] < col1)
            & (boxes[:, B_ROW1] >= row0) & (boxes[:, B_ROW0] < row1))
    local_image = xp.zeros_like(image)
    if leading:  # the window's images: a box of the leading axes, flattened in its own order
        for index, (a, b), n in zip(xp.unravel_index(image, grid.shape[:-2]), leading, grid.shape[:-2]):
            keep &= (index >= a) & (index < b)
            local_image = local_image * (b - a) + (index - a)
    rows = xp.nonzero(keep)[0]
    boxes = boxes[rows]
    new_boxes = xp.empty_like(boxes)
    new_boxes[:, B_COL0] = xp.maximum(boxes[:, B_COL0], col0) - col0
    new_boxes[:, B_COL1] = xp.minimum(boxes[:, B_COL1], col1 - 1) - col0
    new_boxes[:, B_ROW0] = xp.maximum(boxes[:, B_ROW0], row0) - row0
    new_boxes[:, B_ROW1] = xp.minimum(boxes[:, B_ROW1], row1 - 1) - row0
    new_boxes[:, B_IMAGE] = local_image[rows]
    params = plan.params[rows]  # a copy (fancy indexing)
    params[:, P_CX] -= col0
    params[:, P_CY] -= row0
    shape = tuple(b - a for a, b in window)
    window_grid = Grid(shape, math.prod(shape[:-2]), shape[-2], shape[-1],
                       grid.x0 + col0 * grid.dx, grid.dx, grid.y0 + row0 * grid.dy, grid.dy)
    return Plan(window_grid, plan.combine, plan.normalize, plan.dtype, plan.accumulate, params, new_boxes,
                plan.kernel_index[rows], not bool(params[:, P_B].any()), xp)
