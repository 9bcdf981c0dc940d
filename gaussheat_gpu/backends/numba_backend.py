"""Numba backend: compiled CPU kernels, parallel over row bands of every image.

How a plan is evaluated (see :mod:`gaussheat_gpu.planning` for the columns of ``params``/``boxes``):

1. ``_bin_kernels`` (serial, compiled) lists the kernels of each row band, ``BAND_HEIGHT`` rows of
   one image, as a CSR list (a counting sort: cheaper than NumPy's argsort for 100k kernels), and
   lays out one slot per column of every axis-aligned kernel.
2. ``_render_bands`` (parallel) first prepares every kernel once (``prange`` over kernels):
   axis-aligned kernels get their column factors (one ``exp``, or one ``erf`` difference for
   ``integral``, per column), normalised to a peak of 1 and trimmed where they fall below 2**-60
   of that peak; ``count`` kernels get their sum over the box, in float64. Then each band
   (``prange`` over bands) zeroes its rows unless accumulating and walks its kernel list:

   * axis-aligned: one ``exp`` per row, then a multiply-combine along the row (vectorised);
   * rotated: ``g(u, w) = exp(-(A u^2 + 2 B u w + C w^2 - shift) / 2)`` is a row factor times
     ``column(u) = exp(-(A u^2/2 + B u w))``; one row down, ``column`` is multiplied by
     ``exp(-B u)`` (a vector over the row) and the row factor by a scalar step, so a pixel costs two
     multiplies and no ``exp``. The starting ``column`` is itself stepped along the row. Every
     recurrence restarts from exact exps every ``RESTART`` steps, which bounds its relative error to
     a few hundred float64 ulps (~1e-13, against the 1e-12 of DESIGN.md section 3). Kernels whose
     exponents could overflow a step over their box (narrow, untruncated, far corners) fall back to
     one ``exp`` per pixel.

   Values whose float32 result would be subnormal are flushed to 0 (subnormals cost 2-4x).
3. A sum of axis-aligned kernels that each cover most of a large image (``truncate=None``) is the
   rank-K product ``GY.T @ GX`` of their row and column factors: BLAS does that faster than a loop.

Modes are run-time integer switches, so each compiled function has two specialisations at most
(float32 and float64 output).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..planning import (B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, COMBINE_CODES, NORMALIZE_CODES, P_A,
                        P_B, P_C, P_CX, P_CY, P_SCALE, P_SHIFT_COL, P_SHIFT_ROW, P_SIGMA_COL,
                        P_SIGMA_ROW)
from . import host_free_memory as free_memory  # noqa: F401  (backend interface)

xp = np
compiled_planning = True  # plans in one compiled pass too: ~60 NumPy calls cost more than W1 renders

BAND_HEIGHT = 64  # rows per parallel task: 16-row bands were slower (PERFORMANCE-NOTES)
RESTART = 32  # recurrence steps between exact exp restarts
LOG_FLUSH = -60.0 * math.log(2.0)  # factors below 2**-60 of their peak are dropped
# Rotated kernels are stepped only when every exponent of the recurrences stays inside +-this.
SAFE_EXPONENT = 300.0  # products of two such factors stay normal in float64
DENSE_MIN_PIXELS = 1 << 20  # images smaller than this never take the BLAS path
DENSE_MAX_KERNELS = 64  # past this many kernels per image, the GEMM's rank is too high to pay

SUM = COMBINE_CODES["sum"]
MAX = COMBINE_CODES["max"]
POR = COMBINE_CODES["por"]
INTEGRAL = NORMALIZE_CODES["integral"]
COUNT = NORMALIZE_CODES["count"]
_SQRT_HALF = math.sqrt(0.5)


def unavailable_reason():
    """Numba imported, so the backend can run (an import failure is reported by the registry)."""
    return None


def render(plan, out):
    """Evaluate ``plan`` into ``out`` with compiled, multi-threaded CPU kernels.

    Parameters
    ----------
    plan : gaussheat_gpu.planning.Plan
        What to render: grid, modes and per-kernel coefficients (NumPy arrays).
    out : numpy.ndarray
        C-contiguous, ``plan.grid.shape``, ``plan.dtype`` (float32 or float64). Every pixel is
        overwritten, or combined with its current value when ``plan.accumulate``.

    Notes
    -----
    Axis-aligned sums whose kernels each cover most of a large image are rendered as one BLAS
    matrix product per image; everything else goes through the band kernels. Both agree with the
    NumPy backend within the bounds of DESIGN.md section 3.
    """
    grid = plan.grid
    images = out.reshape(grid.n_images, grid.height, grid.width)
    n_kernels = plan.params.shape[0]
    if n_kernels == 0:
        if not plan.accumulate:
            images.fill(0)
        return
    combine = COMBINE_CODES[plan.combine]
    normalize = NORMALIZE_CODES[plan.normalize]
    if _dense_pays(plan, combine):
        _render_dense(plan, images, normalize)
        return
    offsets, kernel_ids, col_offsets = _bin_kernels(plan.boxes, plan.params, grid.n_images, grid.height,
                                                    BAND_HEIGHT)
    column_factors = np.empty(col_offsets[-1], dtype=out.dtype)
    _render_bands(plan.params, plan.boxes, offsets, kernel_ids, col_offsets, column_factors, images,
                  BAND_HEIGHT, combine, normalize, plan.accumulate)


# -- planning helpers --------------------------------------------------------------------------

@njit(cache=True)
def _bin_kernels(boxes, params, n_images, height, band_height):
    """CSR list of kernels per (image, band), plan order kept, and column-factor slots.

    Returns
    -------
    offsets : (n_images * n_bands + 1,) int64
    kernel_ids : int64, kernels of band ``t`` at ``offsets[t]:offsets[t + 1]``
    col_offsets : (M + 1,) int64, axis-aligned kernel ``k`` owns ``col_offsets[k]:col_offsets[k + 1]``
    """
    n_kernels = boxes.shape[0]
    n_bands = (height + band_height - 1) // band_height
    n_tiles = n_images * n_bands
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    col_offsets = np.empty(n_kernels + 1, dtype=np.int64)
    col_offsets[0] = 0
    for k in range(n_kernels):
        first = boxes[k, B_IMAGE] * n_bands
        for band in range(boxes[k, B_ROW0] // band_height, boxes[k, B_ROW1] // band_height + 1):
            counts[first + band + 1] += 1
        width = boxes[k, B_COL1] - boxes[k, B_COL0] + 1 if params[k, P_B] == 0.0 else 0
        col_offsets[k + 1] = col_offsets[k] + width
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    offsets = counts.copy()
    kernel_ids = np.empty(counts[n_tiles], dtype=np.int64)
    for k in range(n_kernels):
        first = boxes[k, B_IMAGE] * n_bands
        for band in range(boxes[k, B_ROW0] // band_height, boxes[k, B_ROW1] // band_height + 1):
            kernel_ids[counts[first + band]] = k
            counts[first + band] += 1
    return offsets, kernel_ids, col_offsets


# -- 1-D factors -------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _cell_mass(offset, sigma):
    """Normal(0, sigma) mass of the unit cell ``offset`` pixels from the mean (numpy_backend.cell_mass)."""
    d = abs(offset)
    lo = (d - 0.5) / sigma * _SQRT_HALF
    hi = (d + 0.5) / sigma * _SQRT_HALF
    if lo >= 0:  # both edges on one side: an erfc difference keeps the far tail's precision
        return 0.5 * (math.erfc(lo) - math.erfc(hi))
    return 0.5 * (math.erf(hi) - math.erf(lo))


@njit(cache=True, inline="always")
def _factor(offset, coef, shift, sigma, normalize):
    """One axis of a separable kernel at ``offset`` pixels from its centre."""
    if normalize == INTEGRAL:
        return _cell_mass(offset, sigma)
    return math.exp(-0.5 * (coef * offset * offset - shift))


@njit(cache=True, inline="always")
def _nearest(centre, lo, hi):
    """The integer in [lo, hi] nearest ``centre`` (where a unimodal factor peaks)."""
    return min(max(math.floor(centre + 0.5), lo), hi)


# -- per-kernel preparation ---------------------------------------------------------------------

@njit(cache=True)
def _prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info):
    """Column factors of axis-aligned kernel ``k``, normalised to peak 1 and trimmed; its row scale.

    ``info[k]`` receives (row scale, first kept column, last kept column): the row factor of row
    ``r`` is ``row scale * factor(r)``, the pixel value ``row factor * column factor``.
    """
    p = params[k]
    c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
    cx, cy = p[P_CX], p[P_CY]
    peak_col = _factor(_nearest(cx, c0, c1) - cx, p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)
    base = col_offsets[k] - c0
    col_sum = 0.0
    first, last = c1 + 1, c0 - 1
    for c in range(c0, c1 + 1):
        g = _factor(c - cx, p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)
        col_sum += g
        if g >= peak_col * 2.0 ** -60:  # the kept columns are contiguous (unimodal factor)
            first = min(first, c)
            last = c
        column_factors[base + c] = g / peak_col
    scale = p[P_SCALE]
    if normalize == COUNT:  # divide by the kernel's sum over its box, taken in float64
        row_sum = 0.0
        for r in range(r0, r1 + 1):
            row_sum += _factor(r - cy, p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
        scale = scale / (col_sum * row_sum)
    info[k, 0] = scale * peak_col
    info[k, 1] = first
    info[k, 2] = last


@njit(cache=True)
def _rotated_is_safe(p, c0, c1, r0, r1):
    """Whether every exponent the recurrences of ``_rotated_block`` meet stays within +-SAFE_EXPONENT.

    Those exponents are ``A u^2/2 + B u w``, ``C w^2/2``, their unit steps and ``B u``: for fixed
    ``w`` convex or linear in ``u`` and linear or convex in ``w``, so their largest magnitudes over
    the box lie on its corners (widened by one pixel for the steps).
    """
    a, b, c = p[P_A], p[P_B], p[P_C]
    if max(a, abs(b), c, 0.5 * (p[P_SHIFT_COL] + p[P_SHIFT_ROW])) > SAFE_EXPONENT:
        return False
    for u in (c0 - p[P_CX] - 1.0, c1 - p[P_CX] + 1.0):
        if abs(b * u) > SAFE_EXPONENT:
            return False
        for w in (r0 - p[P_CY] - 1.0, r1 - p[P_CY] + 1.0):
            if abs(0.5 * a * u * u + b * u * w) > SAFE_EXPONENT or 0.5 * c * w * w > SAFE_EXPONENT:
                return False
            if abs(0.5 * a * (2.0 * u + 1.0) + b * w) > SAFE_EXPONENT:
                return False
            if abs(0.5 * c * (2.0 * w + 1.0)) > SAFE_EXPONENT:
                return False
    return True


@njit(cache=True)
def _start_columns(p, c0, n, w, column, ratio_x):
    """For ``u_j = c0 + j - cx``, j < n: ``column[j] = exp(-(A u_j^2/2 + B u_j w))`` and
    ``ratio_x[j] = exp(-B u_j)``, the factor that moves ``column[j]`` one row down.

    Stepped along the row (``column`` by ``exp(-(A (2u + 1)/2 + B w))``, which itself steps by
    ``exp(-A)``; ``ratio_x`` by ``exp(-B)``), restarting from exact exps every ``RESTART`` columns.
    """
    a, b = p[P_A], p[P_B]
    step_a = math.exp(-a)
    step_b = math.exp(-b)
    j = 0
    while j < n:
        u = c0 + j - p[P_CX]
        g = math.exp(-(0.5 * a * u * u + b * u * w))
        ratio = math.exp(-(0.5 * a * (2.0 * u + 1.0) + b * w))
        x = math.exp(-b * u)
        for i in range(j, min(n, j + RESTART)):
            column[i] = g
            ratio_x[i] = x
            g *= ratio
            ratio *= step_a
            x *= step_b
        j += RESTART


@njit(cache=True)
def _rotated_block(image, p, r_first, r_last, c0, c1, scale, combine, tiny, column, ratio_x, total):
    """Rows r_first..r_last of rotated kernel ``p`` over columns c0..c1.

    ``g = exp(-(A u^2 + 2 B u w + C w^2 - shift)/2)`` is ``row(w) * column_w(u)`` with
    ``row(w) = exp(-(C w^2 - shift)/2)`` and ``column_w(u) = exp(-(A u^2/2 + B u w))``; one row
    down, ``column`` is multiplied by ``ratio_x = exp(-B u)`` and ``row`` by a step that itself steps
    by ``exp(-C)``. So a pixel costs two multiplies, and the relative error grows linearly down the
    rows (a few hundred ulps at most, before the exact restart every ``RESTART`` rows).

    With ``total`` of length 1 the values are summed into ``total[0]`` (for ``count``) and
    ``image`` is left alone; otherwise ``scale * g`` is combined into ``image`` (2-D).
    """
    n = c1 - c0 + 1
    c = p[P_C]
    shift = p[P_SHIFT_COL] + p[P_SHIFT_ROW]
    step_c = math.exp(-c)
    col = column[:n]
    down = ratio_x[:n]
    summing = total.size == 1
    for block in range(r_first, r_last + 1, RESTART):
        w = block - p[P_CY]
        _start_columns(p, c0, n, w, column, ratio_x)
        row_factor = math.exp(-0.5 * (c * w * w - shift))
        row_step = math.exp(-0.5 * c * (2.0 * w + 1.0))
        for r in range(block, min(r_last + 1, block + RESTART)):
            if summing:
                row_total = 0.0
                for i in range(n):
                    row_total += col[i]
                    col[i] *= down[i]
                total[0] += row_factor * row_total
            else:
                _combine_rotated_row(image[r, c0:c1 + 1], col, down, scale * row_factor, combine, tiny)
            row_factor *= row_step
            row_step *= step_c


@njit(cache=True)
def _exact_sum(p, c0, c1, r0, r1):
    """Sum of ``g`` over the box with one exp per pixel (kernels the recurrences cannot step)."""
    a, b, c = p[P_A], p[P_B], p[P_C]
    shift = p[P_SHIFT_COL] + p[P_SHIFT_ROW]
    total = 0.0
    for r in range(r0, r1 + 1):
        w = r - p[P_CY]
        for col in range(c0, c1 + 1):
            u = col - p[P_CX]
            total += math.exp(-0.5 * (a * u * u + 2.0 * b * u * w + c * w * w - shift))
    return total


# -- combining a row ------------------------------------------------------------------------------

# The row loops below index views with their range variable only: an index like ``base + c`` keeps
# Numba's negative-index check in the loop and stops LLVM from vectorising it (3x slower).

@njit(cache=True)
def _combine_separable_row(row, factors, row_factor, combine):
    """row[i] <- combine(row[i], row_factor * factors[i]).

    The caller trims ``factors`` so that no product is subnormal: none is formed, none flushed.
    """
    one = row.dtype.type(1)
    if combine == SUM:
        for i in range(row.size):
            row[i] += row_factor * factors[i]
    elif combine == MAX:
        for i in range(row.size):
            row[i] = max(row[i], row_factor * factors[i])
    else:
        for i in range(row.size):
            s = row[i]
            row[i] = s + row_factor * factors[i] * (one - s)


@njit(cache=True)
def _combine_rotated_row(row, column, down, row_factor, combine, tiny):
    """Combine ``row_factor * column`` into ``row``, then move ``column`` one row down (``*= down``).

    Products are formed in float64 and flushed to 0 below ``tiny`` BEFORE the cast to the output
    dtype: a float64 -> float32 conversion that underflows costs a microcode assist per lane.
    """
    one = row.dtype.type(1)
    if combine == SUM:
        for i in range(row.size):
            v = row_factor * column[i]
            row[i] += row.dtype.type(v if abs(v) >= tiny else 0.0)
            column[i] *= down[i]
    elif combine == MAX:
        for i in range(row.size):
            v = row_factor * column[i]
            row[i] = max(row[i], row.dtype.type(v if abs(v) >= tiny else 0.0))
            column[i] *= down[i]
    else:
        for i in range(row.size):
            v = row_factor * column[i]
            s = row[i]
            row[i] = s + row.dtype.type(v if abs(v) >= tiny else 0.0) * (one - s)
            column[i] *= down[i]


@njit(cache=True)
def _combine_exact_row(row, p, r, c0, c1, scale, combine, tiny):
    """One exp per pixel: rotated kernels whose recurrences could underflow or overflow."""
    a, b, c = p[P_A], p[P_B], p[P_C]
    shift = p[P_SHIFT_COL] + p[P_SHIFT_ROW]
    w = r - p[P_CY]
    zero = row[0] * 0
    for col in range(c0, c1 + 1):
        u = col - p[P_CX]
        v = scale * math.exp(-0.5 * (a * u * u + 2.0 * b * u * w + c * w * w - shift))
        vv = v if abs(v) >= tiny else zero
        s = row[col]
        if combine == SUM:
            row[col] = s + vv
        elif combine == MAX:
            row[col] = max(s, vv)
        else:
            row[col] = s + vv * (1 - s)


# -- the parallel kernel --------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _render_bands(params, boxes, offsets, kernel_ids, col_offsets, column_factors, images, band_height,
                  combine, normalize, accumulate):
    """Prepare every kernel, then render every (image, band) tile; see the module docstring."""
    n_kernels = params.shape[0]
    n_images, height, width = images.shape
    n_bands = (height + band_height - 1) // band_height
    tiny = np.finfo(images.dtype).tiny  # smallest normal number of the output dtype
    # info[k]: axis-aligned (row scale, first column, last column); rotated (scale, safe, 0).
    info = np.empty((n_kernels, 3), dtype=np.float64)
    for k in prange(n_kernels):
        if params[k, P_B] == 0.0:
            _prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info)
        else:
            p = params[k]
            c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
            safe = _rotated_is_safe(p, c0, c1, r0, r1)
            scale = p[P_SCALE]
            if normalize == COUNT:
                if safe:
                    total = np.zeros(1)
                    column = np.empty(c1 - c0 + 1)
                    ratio_x = np.empty(c1 - c0 + 1)
                    _rotated_block(images[0], p, r0, r1, c0, c1, 1.0, combine, tiny, column, ratio_x, total)
                    scale = scale / total[0]
                else:
                    scale = scale / _exact_sum(p, c0, c1, r0, r1)
            info[k, 0] = scale
            info[k, 1] = 1.0 if safe else 0.0
            info[k, 2] = 0.0
    for tile in prange(n_images * n_bands):
        image = tile // n_bands
        band_first = (tile % n_bands) * band_height
        band_last = min(height, band_first + band_height) - 1
        if not accumulate:  # an explicit loop: Numba's slice assignment is several times slower
            zero = images.dtype.type(0)
            for r in range(band_first, band_last + 1):
                row = images[image, r]
                for i in range(width):
                    row[i] = zero
        column = np.empty(width)  # scratch of _rotated_block
        ratio_x = np.empty(width)
        no_total = np.empty(0)
        for j in range(offsets[tile], offsets[tile + 1]):
            k = kernel_ids[j]
            p = params[k]
            c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
            r_first = max(boxes[k, B_ROW0], band_first)
            r_last = min(boxes[k, B_ROW1], band_last)
            if p[P_B] == 0.0:
                first, last = int(info[k, 1]), int(info[k, 2])
                if first > last:
                    continue
                base = col_offsets[k] - c0
                factors = column_factors[base + first:base + last + 1]
                row_scale = info[k, 0]
                cy = p[P_CY]
                peak_row = _factor(_nearest(cy, boxes[k, B_ROW0], boxes[k, B_ROW1]) - cy, p[P_C],
                                   p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
                for r in range(r_first, r_last + 1):
                    g = _factor(r - cy, p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
                    row_factor = row_scale * g
                    if g < peak_row * 2.0 ** -60 or abs(row_factor) < tiny:
                        continue
                    # Keep the columns whose product with row_factor is a normal number (subnormal
                    # products cost a microcode assist each); factors are unimodal, so trim the ends.
                    lo, hi = 0, factors.size - 1
                    floor = tiny / abs(row_factor)
                    if floor > 2.0 ** -60:
                        while lo <= hi and factors[lo] < floor:
                            lo += 1
                        while hi >= lo and factors[hi] < floor:
                            hi -= 1
                    _combine_separable_row(images[image, r, first + lo:first + hi + 1], factors[lo:hi + 1],
                                           images.dtype.type(row_factor), combine)
            elif info[k, 1] != 0.0:
                _rotated_block(images[image], p, r_first, r_last, c0, c1, info[k, 0], combine, tiny, column,
                               ratio_x, no_total)
            else:
                for r in range(r_first, r_last + 1):
                    _combine_exact_row(images[image, r], p, r, c0, c1, info[k, 0], combine, tiny)


# -- dense sums through BLAS ----------------------------------------------------------------------

def _dense_pays(plan, combine):
    """A sum of few axis-aligned kernels, each covering at least half of a large image."""
    grid = plan.grid
    if combine != SUM or plan.accumulate or not plan.axis_aligned or grid.n_images != 1:
        return False
    if grid.height * grid.width < DENSE_MIN_PIXELS or plan.n_kernels > DENSE_MAX_KERNELS:
        return False
    boxes = plan.boxes
    areas = (boxes[:, B_COL1] - boxes[:, B_COL0] + 1) * (boxes[:, B_ROW1] - boxes[:, B_ROW0] + 1)
    return bool(areas.min() * 2 >= grid.height * grid.width)


@njit(parallel=True, cache=True)
def _dense_factors(params, boxes, normalize, col_factors, row_factors):
    """Rows of ``col_factors`` (K, W) and ``row_factors`` (K, H): zero outside each box, scale in rows.

    Column factors are normalised to a peak of 1. Float32 factors are trimmed so that no product of
    two kept factors is subnormal: columns below 2**-50 of their peak and row factors below 2**-76
    are dropped; float64 ones below 2**-60 of their peak.
    """
    float32 = col_factors.itemsize == 4
    col_floor = 2.0 ** -50 if float32 else 2.0 ** -60
    row_floor = 2.0 ** -76 if float32 else 0.0
    for k in prange(params.shape[0]):
        p = params[k]
        c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
        r0, r1 = boxes[k, B_ROW0], boxes[k, B_ROW1]
        cx, cy = p[P_CX], p[P_CY]
        peak_col = _factor(_nearest(cx, c0, c1) - cx, p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)
        peak_row = _factor(_nearest(cy, r0, r1) - cy, p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
        col_factors[k, :] = 0
        row_factors[k, :] = 0
        col_sum = 0.0
        for c in range(c0, c1 + 1):
            g = _factor(c - cx, p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)
            col_sum += g
            if g >= peak_col * col_floor:
                col_factors[k, c] = g / peak_col
        row_sum = 0.0
        for r in range(r0, r1 + 1):
            row_sum += _factor(r - cy, p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
        scale = p[P_SCALE] * peak_col
        if normalize == COUNT:
            scale = scale / (col_sum * row_sum)
        for r in range(r0, r1 + 1):
            g = _factor(r - cy, p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
            v = scale * g
            if g >= peak_row * 2.0 ** -60 and abs(v) >= row_floor:
                row_factors[k, r] = v


def _render_dense(plan, images, normalize):
    grid = plan.grid
    dtype = images.dtype
    col_factors = np.empty((plan.n_kernels, grid.width), dtype=dtype)
    row_factors = np.empty((plan.n_kernels, grid.height), dtype=dtype)
    _dense_factors(plan.params, plan.boxes, normalize, col_factors, row_factors)
    # matmul, not dot: with out= on a transposed operand np.dot took 8 ms where matmul took 5 (W3).
    np.matmul(row_factors.T, col_factors, out=images[0])
