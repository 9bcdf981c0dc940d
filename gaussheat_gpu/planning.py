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

from ._xp import to_host

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
# The supported range (see check_ranges and docs/semantics.md).
MAX_PIXELS = 1e50
MIN_SIGMA_PIXELS = 1e-50
# Caller-unit sigmas and pixel spacings: kernel_coefficients squares them (as the device code does),
# so they must stay within 1e+-100 for every square and product of them to be a normal number.
MIN_CALLER, MAX_CALLER = 1e-100, 1e100


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
        if not MIN_CALLER <= abs(step) <= MAX_CALLER:
            raise ValueError(
                f"extent gives a pixel spacing d{name} = {step:.3g} ({name}0 = {first!r}, {name}1 = {last!r}); "
                f"spacings must be {MIN_CALLER:.0e} to {MAX_CALLER:.0e} in magnitude: rescale the coordinates"
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
        Unknown mode, bad ``truncate``, a kernel outside the supported range (:func:`check_ranges`,
        :func:`check_rotated_reach`), an image index outside the output, a rotated kernel with
        ``normalize="integral"``, or (``combine="por"``) a kernel whose values leave ``[0, 1]``.
    TypeError
        ``combine``/``normalize`` not a string, ``truncate`` not a number or array of numbers.
    """
    check_modes(combine, normalize)
    truncate = check_truncate(truncate, len(kernels))
    check_ranges(kernels, grid, normalize, np.dtype(dtype), xp)
    if np.ndim(truncate) and xp is not np:
        truncate = xp.asarray(truncate)  # per-kernel radii beside the device kernels
    numba_planning = _numba_planning() if compiled and xp is np else None
    if numba_planning is not None:
        tables = numba_planning.plan_tables(kernels, grid, truncate, normalize, workspace)
    else:
        tables = _array_tables(kernels, grid, truncate, normalize, combine, xp)
    _raise_for_bad_kernels(kernels, tables, grid, combine, normalize)
    if not tables.axis_aligned:
        check_rotated_reach(kernels, tables, grid, truncate, xp)
    if normalize == "count":
        _set_count_shifts(tables.params, tables.boxes, xp)
    return Plan(grid, combine, normalize, np.dtype(dtype), bool(accumulate), tables.params, tables.boxes,
                tables.kernel_index, tables.axis_aligned, xp)


def check_modes(combine, normalize):
    """Raise ``TypeError`` (not a string) or ``ValueError`` (unknown) unless ``combine`` and
    ``normalize`` name known modes."""
    if type(combine) is str and type(normalize) is str and combine in COMBINES and normalize in NORMALIZES:
        return  # the usual case, in a third of the time of the loop below
    for name, value, choices in (("combine", combine, COMBINES), ("normalize", normalize, NORMALIZES)):
        if type(value) is not str:
            raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, choices))}; got {value!r}")
        if value not in choices:
            raise ValueError(f"{name} = {value!r} is not one of {', '.join(map(repr, choices))}")


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

        radii = to_host(truncate)
        if radii.dtype.kind not in "iuf" or radii.shape != (n_kernels,):
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


# -- the supported range ------------------------------------------------------------------------
#
# In pixel units (caller values over the pixel spacing), every kernel must have its centre within
# MAX_PIXELS of the first pixel centre and both standard deviations within [MIN_SIGMA_PIXELS,
# MAX_PIXELS] along both axes. Then the precision matrix in pixel units has eigenvalues in
# [1e-100, 1e100] and, with |u|, |w| < 1e50 + 2**63 over any box, every term of the exponent stays
# below ~1e201: no overflow, no inf - inf, no NaN, in any backend. In the coordinates' own units,
# sigmas and spacings lie within 1e+-100 (MIN_CALLER, MAX_CALLER), so that the squares and products
# kernel_coefficients forms are normal numbers. The value a kernel peaks at must fit the output dtype.


def check_ranges(kernels, grid: Grid, normalize: str, dtype, xp=np) -> None:
    """Refuse kernels outside the supported range (``docs/semantics.md``), before anything is computed.

    An O(1) test on the bounds ``Kernels`` kept from validation passes nearly every call; only when
    it fails are the kernels scanned one by one, to name the first bad one (or find none).

    Raises
    ------
    ValueError
        Naming the argument, the kernel index, the value and the limit.
    """
    limit = _LARGEST.get(dtype) or float(np.finfo(dtype).max)
    extremes = kernels.extremes()
    if extremes is None or _ranges_hold(extremes, grid, normalize, limit):
        return
    arrays = {name: getattr(kernels, name) for name in ("x", "y", "sigma_x", "sigma_y", "amplitude")}
    with np.errstate(all="ignore"):
        failures = _range_failures(arrays, grid, normalize, limit, xp)
    firsts = [(_first_index(bad, xp), order) for order, (bad, _) in enumerate(failures)]
    hits = [(k, order) for k, order in firsts if k >= 0]
    if not hits:
        return  # the bounds mixed extremes of different kernels; each kernel is inside the range
    k, order = min(hits)
    raise ValueError(failures[order][1](k, {name: float(values[k]) for name, values in arrays.items()}))


_LARGEST = {np.dtype(np.float32): float(np.finfo(np.float32).max), np.dtype(np.float64): float(np.finfo(np.float64).max)}


def _ranges_hold(extremes, grid, normalize, limit):
    """The range test on the columns' extremes (``Kernels.extremes``): sufficient, not necessary."""
    x_lo, x_hi, y_lo, y_hi, sigma_lo, sigma_hi, peak, pdf_peak = extremes
    adx, ady = abs(grid.dx), abs(grid.dy)
    spacing_lo, spacing_hi = (adx, ady) if adx <= ady else (ady, adx)
    return (abs(x_lo - grid.x0) <= MAX_PIXELS * adx and abs(x_hi - grid.x0) <= MAX_PIXELS * adx
            and abs(y_lo - grid.y0) <= MAX_PIXELS * ady and abs(y_hi - grid.y0) <= MAX_PIXELS * ady
            and MIN_CALLER <= sigma_lo and sigma_hi <= MAX_CALLER
            and sigma_lo >= MIN_SIGMA_PIXELS * spacing_hi and sigma_hi <= MAX_PIXELS * spacing_lo
            and (pdf_peak if normalize == "pdf" else peak) <= limit)


MAX_ROTATED_REACH = 1e6


def check_rotated_reach(kernels, tables, grid: Grid, truncate, xp=np) -> None:
    """Refuse rotated kernels whose box reaches more than ``MAX_ROTATED_REACH`` of their narrowest
    standard deviation from their centre.

    A rotated kernel's exponent ``A u^2 + 2B u w + C w^2`` cancels terms of size ``(reach /
    sigma_min)^2``; past ~1e7 float64 rounding alone moves it by hundreds, and ``exp`` overflows.
    Axis-aligned kernels have no such limit. An O(1) test on the kernels' bounds passes nearly
    every call; otherwise the plan's rotated rows are measured.
    """
    sx, sy = kernels.bounds("sigma_x"), kernels.bounds("sigma_y")
    spacing_lo, spacing_hi = min(abs(grid.dx), abs(grid.dy)), max(abs(grid.dx), abs(grid.dy))
    sigma_min = min(sx[0], sy[0]) / spacing_hi
    largest = float(truncate.max()) if np.ndim(truncate) else truncate  # one radius per kernel, or one for all
    if math.isfinite(largest):
        reach = largest * max(sx[1], sy[1]) / spacing_lo * math.sqrt(2.0) + 2.0
    else:
        reach = math.inf
    if reach <= MAX_ROTATED_REACH * sigma_min:
        return
    params, boxes = tables.params, tables.boxes
    a, b, c = params[:, P_A], params[:, P_B], params[:, P_C]
    lam = 0.5 * (a + c) + xp.sqrt((0.5 * (a - c)) ** 2 + b * b)  # 1 / sigma_min^2, pixel units
    du = xp.maximum(xp.abs(boxes[:, B_COL0] - params[:, P_CX]), xp.abs(boxes[:, B_COL1] - params[:, P_CX]))
    dw = xp.maximum(xp.abs(boxes[:, B_ROW0] - params[:, P_CY]), xp.abs(boxes[:, B_ROW1] - params[:, P_CY]))
    reach2 = (du * du + dw * dw) * lam
    row = _first_index((b != 0.0) & ~(reach2 <= MAX_ROTATED_REACH ** 2), xp)
    if row < 0:
        return
    raise_rotated_reach(kernels, int(tables.kernel_index[row]), math.sqrt(float(reach2[row])))


def raise_rotated_reach(kernels, k, reach):
    """Raise the ``ValueError`` of a rotated kernel ``k`` whose box reaches ``reach`` of its narrowest
    standard deviation (:func:`check_rotated_reach`)."""
    raise ValueError(
        f"kernel {k} (theta = {float(kernels.theta[k])!r}, sigma_x = {float(kernels.sigma_x[k])!r}, sigma_y = "
        f"{float(kernels.sigma_y[k])!r}) is rotated and its box reaches {reach:.3g} of its "
        f"narrowest standard deviation from its centre; rotated kernels are supported up to {MAX_ROTATED_REACH:.0e} "
        f"(beyond, float64 rounding swamps the exponent): use a finite truncate, a wider sigma, or theta = 0"
    )


def _range_failures(arrays, grid, normalize, limit, xp):
    """(mask of kernels failing, message builder) per rule, in the order they are reported."""
    failures = []
    for axis, origin, step in (("x", grid.x0, grid.dx), ("y", grid.y0, grid.dy)):
        pixels = xp.abs((arrays[axis] - origin) / step)
        failures.append((~(pixels <= MAX_PIXELS), functools.partial(
            _far_centre, axis, origin, step)))
    spacing_lo, spacing_hi = min(abs(grid.dx), abs(grid.dy)), max(abs(grid.dx), abs(grid.dy))
    for name in ("sigma_x", "sigma_y"):
        sigma = arrays[name]
        bad = ~((sigma / spacing_hi >= MIN_SIGMA_PIXELS) & (sigma / spacing_lo <= MAX_PIXELS)
                & (sigma >= MIN_CALLER) & (sigma <= MAX_CALLER))
        failures.append((bad, functools.partial(_bad_sigma, name, grid)))
    peak = xp.abs(arrays["amplitude"])
    if normalize == "pdf":
        peak = peak / (2.0 * math.pi * arrays["sigma_x"] * arrays["sigma_y"])
    failures.append((~(peak <= limit), functools.partial(_bad_peak, normalize, limit)))
    return failures


def _far_centre(axis, origin, step, k, kernel):
    value = kernel[axis]
    pixels = abs((value - origin) / step) if math.isfinite(value - origin) else math.inf
    return (f"{axis}[{k}] = {value!r} is {pixels:.3g} pixels from the first pixel centre ({axis}0 = {origin!r}, "
            f"pixel spacing {abs(step):.3g}) (kernel {k}); centres must lie within {MAX_PIXELS:.0e} pixels of it: "
            f"drop the kernel or change extent")


def _bad_sigma(name, grid, k, kernel):
    value = kernel[name]
    pixels = [value / abs(grid.dx), value / abs(grid.dy)]
    shown = f"{pixels[0]:.3g} pixels" if pixels[0] == pixels[1] else f"{pixels[0]:.3g} columns and {pixels[1]:.3g} rows"
    return (f"{name}[{k}] = {value!r} is {shown} (kernel {k}); standard deviations must be "
            f"{MIN_SIGMA_PIXELS:.0e} to {MAX_PIXELS:.0e} pixels along both axes, and {MIN_CALLER:.0e} to "
            f"{MAX_CALLER:.0e} in the coordinates' units: change the kernel or extent")


def _bad_peak(normalize, limit, k, kernel):
    amplitude = kernel["amplitude"]
    if normalize == "pdf":
        with np.errstate(all="ignore"):
            peak = float(np.float64(abs(amplitude)) / (2.0 * math.pi * np.float64(kernel["sigma_x"]) * kernel["sigma_y"]))
        what = (f"amplitude[{k}] = {amplitude!r} with sigma_x = {kernel['sigma_x']!r}, sigma_y = {kernel['sigma_y']!r} "
                f"peaks at |amplitude| / (2 pi sigma_x sigma_y) = {peak:.3g}")
    else:
        what = f"amplitude[{k}] = {amplitude!r} peaks at {abs(amplitude):.3g}"
    dtype = "float32" if limit < 1e300 else "float64"
    hint = "use dtype='float64', " if dtype == "float32" else ""
    return (f"{what} (kernel {k}), beyond {dtype}'s largest value {limit:.3g}: {hint}"
            f"scale the amplitudes down{' or use normalize=' + repr('peak') if normalize == 'pdf' else ''}")


# -- per-kernel formulas, written once ----------------------------------------------------------
#
# These take arrays (NumPy or CuPy: NumPy's ufuncs dispatch to CuPy through ``__array_ufunc__``) or
# float64 scalars inside the compiled host loop (backends/numba/planning.py), which compiles them as
# its helpers. Plain IEEE operations only (no fused multiply-add), so both
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
    from . import _threading

    _threading.prefer_tbb()  # before Numba's first parallel call (Dask chunks plan here without the registry)
    try:
        from .backends.numba import planning
    except ImportError:
        return None
    return planning


# The data checks of a plan, in the order their errors are raised.
CHECK_IMAGE, CHECK_INTEGRAL_ROTATED, CHECK_POR, CHECK_ROTATED_REACH = range(4)


def _raise_for_bad_kernels(kernels, tables, grid, combine, normalize):
    # The compiled pass may report kernels for checks the modes do not need: only the needed ones count.
    for check, k, needed in ((CHECK_IMAGE, tables.first_bad_image, True),
                             (CHECK_INTEGRAL_ROTATED, tables.first_rotated, normalize == "integral"),
                             (CHECK_POR, tables.first_bad_por, combine == "por")):
        if needed and k >= 0:
            raise_for_bad_kernel(kernels, grid, combine, normalize, check, k)


def raise_for_bad_kernel(kernels, grid, combine, normalize, check, k):
    """Raise the ``ValueError`` of data check ``check`` (``CHECK_*`` but ``CHECK_ROTATED_REACH``, whose
    message needs the plan's tables) failed by kernel ``k``; a ``RuntimeError`` for any other code."""
    if check not in (CHECK_IMAGE, CHECK_INTEGRAL_ROTATED, CHECK_POR):  # a device's code read back wrong
        raise RuntimeError(f"kernel {k} failed an unknown data check (code {check!r}): this is a bug in gaussheat_gpu")
    if check == CHECK_IMAGE:
        raise ValueError(
            f"image[{k}] = {int(kernels.image[k])} is out of range: the output holds {grid.n_images} image(s), "
            f"so image indices must lie in [0, {grid.n_images - 1}]"
        )
    if check == CHECK_INTEGRAL_ROTATED:
        theta = float(kernels.theta[k])
        raise ValueError(
            f"normalize='integral' supports axis-aligned kernels only (theta = 0, or sigma_x == sigma_y), but kernel "
            f"{k} has theta = {theta!r} (cos*sin = {math.cos(theta) * math.sin(theta):.3g}, not 0) with sigma_x = "
            f"{float(kernels.sigma_x[k])!r} != sigma_y = {float(kernels.sigma_y[k])!r}; for a quarter turn swap "
            f"sigma_x and sigma_y instead, or use normalize='pdf'"
        )
    amplitude = float(kernels.amplitude[k])
    sigma_x, sigma_y = float(kernels.sigma_x[k]), float(kernels.sigma_y[k])
    if normalize == "pdf":
        with np.errstate(all="ignore"):  # no ZeroDivisionError or overflow while explaining
            peak = float(np.float64(amplitude) / (2.0 * math.pi * np.float64(sigma_x) * sigma_y))
        detail = f"peak value {peak!r} = amplitude / (2 pi sigma_x sigma_y) with sigma_x = {sigma_x!r}, sigma_y = {sigma_y!r}"
    else:
        detail = f"peak value {amplitude!r}"
    raise ValueError(
        f"combine='por' needs every kernel value in [0, 1], but kernel {k} has amplitude = {amplitude!r} and "
        f"{detail} (normalize={normalize!r})"
    )


def _set_count_shifts(params, boxes, xp):
    """Shift each kernel's exponent by (a lower bound of) its minimum over the box.

    ``count`` divides by the sum of ``g`` over the box, which is invariant to this shift, but without
    it a kernel seen only through its far tail would underflow to 0 in float32. For axis-aligned
    kernels the shift is the exact minimum over pixel centres, per axis; for rotated ones it is the
    minimum of the quadratic over the box's rectangle (at most the lattice minimum), or the lattice
    minimum itself where the two could differ by more than ``LATTICE_GAP`` (thin kernels between
    pixel centres: every pixel's ``g`` would otherwise underflow and the sum be 0).
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
        # The lattice point nearest the rectangle's minimiser is within half a pixel on each axis,
        # so (sqrt(q) + sqrt(d'Pd))**2 with d'Pd <= (A + C)/2 bounds the lattice minimum.
        half_trace = 0.5 * (a + c)
        gap = 2.0 * xp.sqrt(q_min * half_trace) + half_trace
        far = xp.nonzero(~aligned & (gap > LATTICE_GAP))[0]
        if far.size:
            q_min[far] = _lattice_min(params, boxes, far, xp)
        shift_col = xp.where(aligned, shift_col, q_min)
    params[:, P_SHIFT_COL] = shift_col
    params[:, P_SHIFT_ROW] = shift_row


LATTICE_GAP = 600.0  # exp(-300) is far from float64's underflow: sums of g stay exact enough


def _lattice_min(params, boxes, rows, xp):
    """Minimum of kernels ``rows``' exponent q over the pixel centres of their boxes, row by row
    (on the host: few kernels need it). In each row q is a parabola in the column, lowest at one
    of the two columns around its vertex, clipped to the box."""

    p, box = to_host(params[rows]), to_host(boxes[rows])
    n_rows = box[:, B_ROW1] - box[:, B_ROW0] + 1
    starts = np.concatenate([[0], np.cumsum(n_rows)[:-1]])
    owner = np.repeat(np.arange(rows.size), n_rows)
    row = box[owner, B_ROW0] + (np.arange(owner.size) - starts[owner])
    cx, cy, a, b, c = (p[owner, col] for col in (P_CX, P_CY, P_A, P_B, P_C))
    w = row - cy
    vertex = cx - b * w / a
    best = np.full(owner.size, np.inf)
    for col in (np.floor(vertex), np.ceil(vertex)):
        u = np.clip(col, box[owner, B_COL0], box[owner, B_COL1]) - cx
        best = np.minimum(best, a * u * u + 2.0 * b * u * w + c * w * w)
    return xp.asarray(np.minimum.reduceat(best, starts))


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


def window_plan(plan: Plan, window, workspace=None) -> Plan:
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
    workspace : gaussheat_gpu._workspace.Workspace, optional
        Where the window's tables go (host plans): reused memory, so the result is valid only until
        the same thread cuts a window with it again. Default: fresh arrays.

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
    workspace = workspace if xp is np else None

    def take(name, table):  # the kept rows of a table ("clip": valid rows, no buffered copy)
        if workspace is None:
            return table[rows]
        return np.take(table, rows, axis=0, mode="clip",
                       out=workspace.empty(name, (rows.shape[0], table.shape[1]), table.dtype))

    boxes = take("window_box_rows", boxes)
    new_boxes = xp.empty_like(boxes) if workspace is None else workspace.empty("window_boxes", boxes.shape, boxes.dtype)
    new_boxes[:, B_COL0] = xp.maximum(boxes[:, B_COL0], col0) - col0
    new_boxes[:, B_COL1] = xp.minimum(boxes[:, B_COL1], col1 - 1) - col0
    new_boxes[:, B_ROW0] = xp.maximum(boxes[:, B_ROW0], row0) - row0
    new_boxes[:, B_ROW1] = xp.minimum(boxes[:, B_ROW1], row1 - 1) - row0
    new_boxes[:, B_IMAGE] = local_image[rows]
    params = take("window_params", plan.params)  # a copy
    params[:, P_CX] -= col0
    params[:, P_CY] -= row0
    shape = tuple(b - a for a, b in window)
    window_grid = Grid(shape, math.prod(shape[:-2]), shape[-2], shape[-1],
                       grid.x0 + col0 * grid.dx, grid.dx, grid.y0 + row0 * grid.dy, grid.dy)
    return Plan(window_grid, plan.combine, plan.normalize, plan.dtype, plan.accumulate, params, new_boxes,
                plan.kernel_index[rows], not bool(params[:, P_B].any()), xp)
