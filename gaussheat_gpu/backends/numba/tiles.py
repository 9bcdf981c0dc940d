"""Numba backend: compiled CPU kernels, parallel over row bands of every image.

How a plan is evaluated (see :mod:`gaussheat_gpu.planning` for the columns of ``params``/``boxes``):

1. ``_bin_kernels`` (serial, compiled) lists the kernels of each row band, 64 to 256 rows of one
   image (``_band_height``), as a CSR list (a counting sort: cheaper than NumPy's argsort for 100k
   kernels), and lays out one slot per column of every axis-aligned kernel.
2. ``_render_bands`` (parallel) first prepares every kernel once (``prange`` over kernels):
   axis-aligned kernels get their column factors (one ``exp``, or one ``erf`` difference for
   ``integral``, per column), normalised to a peak of 1 and trimmed where they fall below 2**-60
   of that peak; ``count`` kernels get their sum over the box, in float64. Then each band
   (``prange`` over bands) zeroes its rows unless accumulating and walks its kernel list (a first
   kernel that is axis-aligned and spans the band's rows writes them whole instead, zeros
   around its values: one pass over the rows less; when the second kernel qualifies too, both
   are written in that one pass, by the same operations in the same order as two passes):

   * axis-aligned: one ``exp`` per row, then a multiply-combine along the row (vectorised);
   * rotated: with ``u0`` the box's first column, ``g(u, w)`` is the row factor ``g(u0, w)`` times
     ``column(u) = exp(-(A (u^2 - u0^2)/2 + B (u - u0) w))``; one row down, ``column`` is multiplied
     by ``exp(-B (u - u0))`` (a vector over the row) and the row factor by a scalar step, so a pixel
     costs two multiplies and no ``exp``, a visit three and the kernel's preparation three more.
     ``column`` starts stepped along the row.
     Every recurrence restarts from exact exps every ``RESTART`` steps, which bounds its relative
     error to ~1000 float64 ulps (~1e-13, against the 1e-12 of DESIGN.md section 3). Rows are
     combined over windows of whole ``LANES``-pixel blocks (lanes outside the box hold column factor
     0 and leave their pixel alone), so the vectorised loop never ends in its scalar remainder.
     Kernels whose factors could leave float64's normal range over their box (narrow, untruncated,
     far corners) fall back to one ``exp`` per pixel.

   Values whose float32 result would be subnormal are flushed to 0 (subnormals cost 2-4x).
3. A sum of axis-aligned kernels that each cover most of a large image (``truncate=None``) is the
   rank-K product ``GY.T @ GX`` of their row and column factors, written in one parallel pass by
   :func:`.numba_dense.dense_product` (faster than ``np.matmul`` into a fresh output, and no
   hand-off to BLAS's thread pool).

Modes are run-time integer switches, so each compiled function has two specialisations at most
(float32 and float64 output). The rotated visit's helpers are inlined (``inline="always"``): as
calls, their array arguments (7 scalars each) cost as much as a short row.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .._workspace import Workspace
from ..planning import (B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, COMBINE_CODES, NORMALIZE_CODES, P_A,
                        P_B, P_C, P_CX, P_CY, P_SCALE, P_SHIFT_COL, P_SHIFT_ROW, P_SIGMA_COL,
                        P_SIGMA_ROW)
from . import host_free_memory as free_memory  # noqa: F401  (backend interface)
from .numba_dense import dense_product
from .numba_planning import WORKSPACE_MIN_KERNELS

xp = np
# make_plan options: the compiled planning pass (~60 NumPy calls cost more than W1 renders), its
# tables in this thread's reused memory (fresh pages cost a W6 call ~10 ms of page faults)
WORKSPACE = Workspace()
plan_options = {"compiled": True, "workspace": WORKSPACE}

# Rows per parallel task: the tallest of BAND_HEIGHTS whose tiles split evenly enough over the
# threads (a prange hands each thread one contiguous run of tiles, so more tiles than threads buy
# no balance, and 3 tiles for 2 threads idle one thread a third of the time). A kernel crossing
# a band edge is prepared once per band: on W6 (1024 rows, 2 threads) 64-row bands took 13.4 ms,
# 128-row ones 11.6 and 256-row ones 11.0 (16-row bands were slower still, PERFORMANCE-NOTES);
# W5's 768 rows in 256-row bands (3 tiles for 2 threads) went from 1.55 to 1.84 ms.
BAND_HEIGHTS = (256, 128)
BAND_HEIGHT = 64  # the shortest band, and every band of an image with fewer than SMALL_ROWS rows
SMALL_ROWS = 1024
MAX_IMBALANCE = 1.1  # most work a thread may get, relative to an even split of the tiles
RESTART = 32  # recurrence steps between exact exp restarts
LANES = 8  # rotated rows are combined over windows of a multiple of this many pixels
LOG_FLUSH = -60.0 * math.log(2.0)  # factors below 2**-60 of their peak are dropped
# Rotated kernels are stepped only when every factor of the recurrences stays inside exp(+-this):
# normal in float64 with a margin of exp(100) for the kernel's scale.
SAFE_EXPONENT = 600.0
DENSE_MIN_PIXELS = 1 << 20  # images smaller than this never take the dense path
DENSE_MAX_KERNELS = 64  # past this many kernels per image, the product's rank is too high to pay

INFO_COLUMNS = 5  # what _render_bands's preparation keeps per kernel (its comment lists them)

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
    Axis-aligned sums whose kernels each cover most of a large image are rendered as one dense
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
    band_height = _band_height(grid.n_images, grid.height)
    offsets, kernel_ids, col_offsets = _bin_kernels(plan.boxes, plan.params, grid.n_images, grid.height,
                                                    band_height)
    if n_kernels >= WORKSPACE_MIN_KERNELS:
        column_factors = WORKSPACE.empty("column_factors", (col_offsets[-1],), out.dtype)
        info = WORKSPACE.empty("info", (n_kernels, INFO_COLUMNS), np.float64)
    else:
        column_factors = np.empty(col_offsets[-1], dtype=out.dtype)
        info = np.empty((n_kernels, INFO_COLUMNS), dtype=np.float64)
    _render_bands(plan.params, plan.boxes, offsets, kernel_ids, col_offsets, column_factors, info, images,
                  band_height, combine, normalize, plan.accumulate)


def _band_height(n_images, height):
    """Rows per band: the tallest of ``BAND_HEIGHTS`` that gives every Numba thread a tile and no
    thread more than ``MAX_IMBALANCE`` times its share of the tiles, else ``BAND_HEIGHT``.

    Outputs of fewer than ``SMALL_ROWS`` rows in all keep ``BAND_HEIGHT`` without asking Numba for
    its thread count (0.6 us, 1% of W1's render()).
    """
    if n_images * height < SMALL_ROWS:
        return BAND_HEIGHT
    threads = numba.get_num_threads()
    for band_height in BAND_HEIGHTS:
        tiles = n_images * ((height + band_height - 1) // band_height)
        rounds = (tiles + threads - 1) // threads
        if tiles >= threads and rounds * threads <= MAX_IMBALANCE * tiles:
            return band_height
    return BAND_HEIGHT


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
    # Each kernel's first and last tile, kept for the second pass: reading the boxes again cost
    # a third of the function (W6: 1.29 -> 0.90 ms; as int64, 1.71 ms).
    if n_tiles >= 2 ** 31:
        raise ValueError("more than 2**31 row bands in the output: split it")
    tiles = np.empty((n_kernels, 2), dtype=np.int32)
    col_offsets[0] = 0
    for k in range(n_kernels):
        box = boxes[k]
        t0 = box[B_IMAGE] * n_bands + box[B_ROW0] // band_height
        t1 = box[B_IMAGE] * n_bands + box[B_ROW1] // band_height
        tiles[k, 0] = t0
        tiles[k, 1] = t1
        for t in range(t0, t1 + 1):
            counts[t + 1] += 1
        width = box[B_COL1] - box[B_COL0] + 1 if params[k, P_B] == 0.0 else 0
        col_offsets[k + 1] = col_offsets[k] + width
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    offsets = counts.copy()
    kernel_ids = np.empty(counts[n_tiles], dtype=np.int64)
    for k in range(n_kernels):
        for t in range(tiles[k, 0], tiles[k, 1] + 1):
            kernel_ids[counts[t]] = k
            counts[t] += 1
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


@njit(cache=True, inline="always")
def _kernel_params(params, k):
    """Row ``k`` of ``params`` as a tuple: ``params[k]`` would be a view, and every view increfs and
    decrefs its array with an atomic instruction on a cache line all threads share (11% of W6's
    samples sat in NRT_incref/NRT_decref)."""
    return (params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4], params[k, 5], params[k, 6],
            params[k, 7], params[k, 8], params[k, 9])


@njit(cache=True, inline="always")
def _col_peak(p, c0, c1, normalize):
    """Largest column factor of an axis-aligned kernel over columns c0..c1 (nearest its centre)."""
    return _factor(_nearest(p[P_CX], c0, c1) - p[P_CX], p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)


@njit(cache=True, inline="always")
def _row_peak(p, r0, r1, normalize):
    """Largest row factor of an axis-aligned kernel over rows r0..r1 (nearest its centre)."""
    return _factor(_nearest(p[P_CY], r0, r1) - p[P_CY], p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)


@njit(cache=True, inline="always")
def _kept_factors(k, boxes, info, col_offsets, column_factors):
    """First kept column of axis-aligned kernel ``k`` and its column factors from there (empty when
    ``_prepare_separable`` kept none)."""
    first, last = int(info[k, 1]), int(info[k, 2])
    base = col_offsets[k] - boxes[k, B_COL0]
    return first, column_factors[base + first:base + max(last, first - 1) + 1]


# -- per-kernel preparation ---------------------------------------------------------------------

@njit(cache=True)
def _prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info):
    """Column factors of axis-aligned kernel ``k``, normalised to peak 1 and trimmed; its row scale.

    ``info[k]`` receives (row scale, first kept column, last kept column): the row factor of row
    ``r`` is ``row scale * factor(r)``, the pixel value ``row factor * column factor``.
    """
    p = _kernel_params(params, k)
    c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
    cx, cy = p[P_CX], p[P_CY]
    peak_col = _col_peak(p, c0, c1, normalize)
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
    """Whether every factor ``_rotated_block`` forms stays within exp(+-SAFE_EXPONENT).

    With ``U`` and ``V`` the largest ``|u|`` and ``|w|`` over the box widened by one pixel,
    ``E1 = A U^2/2 + |B| U V`` bounds ``|A u^2/2 + B u w|`` and ``E2 = C V^2/2`` bounds ``C w^2/2``:
    row factors and values are within ``E1 + E2 + |shift|/2``, column factors (differences of two
    ``A u^2/2 + B u w``) within ``2 E1``; the steps are linear in ``u`` and ``w``.
    """
    a, b, c = p[P_A], p[P_B], p[P_C]
    big_u = max(abs(c0 - p[P_CX]), abs(c1 - p[P_CX])) + 1.0
    big_w = max(abs(r0 - p[P_CY]), abs(r1 - p[P_CY])) + 1.0
    e1 = 0.5 * a * big_u * big_u + abs(b) * big_u * big_w
    e2 = 0.5 * c * big_w * big_w
    worst = max(e1 + e2 + 0.5 * abs(p[P_SHIFT_COL] + p[P_SHIFT_ROW]), 2.0 * e1,
                a * (big_u + 0.5) + abs(b) * big_w, abs(b) * (2.0 * big_u + 1.0),
                abs(b) * big_u + c * (big_w + 0.5), a, c)
    return worst <= SAFE_EXPONENT


@njit(cache=True, inline="always")
def _start_columns(a, b, u0, w, n, step_a, step_b, column, down):
    """For ``j < n``: ``column[j] = exp(-(A (u_j^2 - u0^2)/2 + B (u_j - u0) w))`` with ``u_j = u0 + j``,
    the column factor relative to the first column, and ``down[j] = exp(-B j)``, the factor that moves
    it one row down.

    Stepped along the row (``column`` by ``exp(-(A (u + 1/2) + B w))``, which itself steps by
    ``exp(-A)``; ``down`` by ``exp(-B)``), restarting from exact exps every ``RESTART`` columns; the
    first start needs one ``exp`` (``column[0] = down[0] = 1``).
    """
    j = 0
    while j < n:
        if j == 0:
            g = 1.0
            x = 1.0
        else:
            g = math.exp(-j * (a * (u0 + 0.5 * j) + b * w))
            x = math.exp(-b * j)
        ratio = math.exp(-(a * (u0 + j + 0.5) + b * w))
        for i in range(j, min(n, j + RESTART)):
            column[i] = g
            down[i] = x
            g *= ratio
            ratio *= step_a
            x *= step_b
        j += RESTART


@njit(cache=True, inline="always")
def _start_rows(p, u0, w, n, step_a, step_b, column, down):
    """Exact start of a run of rows at ``w``: fills ``column``/``down`` (``_start_columns``) and
    returns the row factor ``g(u0, w)`` and its step one row down, ``exp(-(B u0 + C (w + 1/2)))``."""
    a, b, c = p[P_A], p[P_B], p[P_C]
    _start_columns(a, b, u0, w, n, step_a, step_b, column, down)
    row_factor = math.exp(-0.5 * (a * u0 * u0 + 2.0 * b * u0 * w + c * w * w - (p[P_SHIFT_COL] + p[P_SHIFT_ROW])))
    return row_factor, math.exp(-(b * u0 + c * (w + 0.5)))


@njit(cache=True, inline="always")
def _rotated_block(image, p, r_first, r_last, c0, c1, scale, steps, combine, tiny, column, down, spare):
    """Combine ``scale * g`` of rotated kernel ``p`` into rows r_first..r_last, columns c0..c1 of
    ``image`` (2-D).

    With ``u0 = c0 - cx`` and ``w`` the row, ``g = exp(-(A u^2 + 2 B u w + C w^2 - shift)/2)`` is
    ``row(w) * column_w(u)``: ``row(w) = g(u0, w)`` and ``column_w`` relative to ``u0``
    (``_start_columns``). One row down, ``column`` is multiplied by ``down = exp(-B (u - u0))`` and
    ``row`` by a step ``exp(-(B u0 + C (w + 1/2)))`` that itself steps by ``exp(-C)``. So a pixel
    costs two multiplies, a visit three exps (``steps``, exp(-A), exp(-B), exp(-C), come from the
    kernel's preparation), and the relative error grows with the column and the row
    (~1000 ulps at most, before the exact restart every ``RESTART`` rows and columns).

    Rows are combined over a window of whole blocks of ``LANES`` pixels that holds the box, shifted
    left at the image's right edge: the vectorised loop then never ends in its scalar remainder
    (6 of a 14-pixel row's pixels otherwise). Lanes outside the box hold column factor 0 and leave
    their pixel alone. An image narrower than the window gets a window of exactly the box.

    Inlined, like the functions it calls: as calls they cost ~40% of W6 (each array argument
    travels as 7 scalars).
    """
    n = c1 - c0 + 1
    span = (n + LANES - 1) // LANES * LANES
    if span <= image.shape[1]:
        start = min(c0, image.shape[1] - span)
        for i in range(span):  # lanes outside the box stay 0 through every row
            column[i] = 0.0
            down[i] = 0.0
    else:
        start, span = c0, n
    lead = c0 - start
    u0 = c0 - p[P_CX]
    step_a, step_b, step_c = steps
    col = column[:span]
    dn = down[:span]
    for block in range(r_first, r_last + 1, RESTART):
        row_factor, row_step = _start_rows(p, u0, block - p[P_CY], n, step_a, step_b, column[lead:lead + n],
                                           down[lead:lead + n])
        stop = min(r_last + 1, block + RESTART)
        for r in range(block, stop, 2):
            row_factor2 = row_factor * row_step
            row_step *= step_c
            # An odd last row pairs with the spare row: the same loop, and no other to compile.
            row2 = image[r + 1, start:start + span] if r + 1 < stop else spare[:span]
            _combine_rotated_rows(image[r, start:start + span], row2, col, dn, scale * row_factor,
                                  scale * row_factor2, combine, tiny)
            row_factor = row_factor2 * row_step
            row_step *= step_c


@njit(cache=True)
def _rotated_total(p, c0, c1, r0, r1):
    """Sum of ``g`` over the box, by the recurrences of ``_rotated_block`` (for ``count``)."""
    n = c1 - c0 + 1
    column = np.empty(n)
    down = np.empty(n)
    u0 = c0 - p[P_CX]
    step_a = math.exp(-p[P_A])
    step_b = math.exp(-p[P_B])
    step_c = math.exp(-p[P_C])
    total = 0.0
    for block in range(r0, r1 + 1, RESTART):
        row_factor, row_step = _start_rows(p, u0, block - p[P_CY], n, step_a, step_b, column, down)
        for r in range(block, min(r1 + 1, block + RESTART)):
            row_total = 0.0
            for i in range(n):
                row_total += column[i]
                column[i] *= down[i]
            total += row_factor * row_total
            row_factor *= row_step
            row_step *= step_c
    return total


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
def _fill_row(row, begin, end):
    """row[begin:end] <- 0 (an explicit loop: Numba's slice assignment is several times slower)."""
    zero = row.dtype.type(0)
    for i in range(begin, end):
        row[i] = zero


@njit(cache=True)
def _set_separable_row(row, begin, factors, row_factor, combine):
    """row <- combine(0, row_factor * factors) from column ``begin``, and 0 around it.

    Exactly what zero-filling ``row`` and then ``_combine_separable_row`` write: with s = 0, sum and
    por give 0 + v (por's v * (1 - 0) is v), max gives max(0, v).
    """
    zero = row.dtype.type(0)
    _fill_row(row, 0, begin)
    values = row[begin:begin + factors.size]
    if combine == MAX:
        for i in range(values.size):
            values[i] = max(zero, row_factor * factors[i])
    else:
        for i in range(values.size):
            values[i] = zero + row_factor * factors[i]
    _fill_row(row, begin + factors.size, row.size)


@njit(cache=True, inline="always")
def _combine_rotated_rows(row, row2, column, down, row_factor, row_factor2, combine, tiny):
    """Combine ``row_factor * column`` into ``row`` and, one row down, ``row_factor2 * column * down``
    into ``row2``; leave ``column`` two rows down (``*= down**2``).

    Two rows a pass halve the per-row work around the vectorised loop (its slices and aliasing
    checks). Pixels whose column factor is 0 (the lanes of a window outside the kernel's box) keep
    their value bit for bit; in-box column factors are never 0 (``_rotated_is_safe`` keeps them and
    ``down`` above exp(-600)). Products are formed in float64 and flushed to 0 below ``tiny`` BEFORE
    the cast to the output dtype: a float64 -> float32 conversion that underflows costs a microcode
    assist per lane. Inlined: a call costs as much as a 14-pixel row (each array travels as 7
    arguments).
    """
    one = row.dtype.type(1)
    if combine == SUM:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = s + row.dtype.type(v if abs(v) >= tiny else 0.0)
            t2 = s2 + row.dtype.type(v2 if abs(v2) >= tiny else 0.0)
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d
    elif combine == MAX:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = max(s, row.dtype.type(v if abs(v) >= tiny else 0.0))
            t2 = max(s2, row.dtype.type(v2 if abs(v2) >= tiny else 0.0))
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d
    else:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = s + row.dtype.type(v if abs(v) >= tiny else 0.0) * (one - s)
            t2 = s2 + row.dtype.type(v2 if abs(v2) >= tiny else 0.0) * (one - s2)
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d


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
def _render_bands(params, boxes, offsets, kernel_ids, col_offsets, column_factors, info, images, band_height,
                  combine, normalize, accumulate):
    """Prepare every kernel, then render every (image, band) tile; see the module docstring.

    The loop bodies are functions of their own: inlined into a ``prange`` body, the rotated helpers
    nearly doubled the cold compile time (Numba's parfor passes on a large body).
    """
    n_kernels = params.shape[0]
    n_images, height, width = images.shape
    n_bands = (height + band_height - 1) // band_height
    tiny = np.finfo(images.dtype).tiny  # smallest normal number of the output dtype
    # info (n_kernels, INFO_COLUMNS) receives, per kernel: axis-aligned (row scale, first column, last column,
    # -, -); rotated (scale, safe, exp(-A), exp(-B), exp(-C)), the steps of the recurrences:
    # computed once a kernel, not once a band, and here their exps overlap across kernels.
    for k in prange(n_kernels):
        if params[k, P_B] == 0.0:
            _prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info)
        else:
            _prepare_rotated(params, boxes, k, normalize, info)
    for tile in prange(n_images * n_bands):
        band_first = (tile % n_bands) * band_height
        _render_tile(params, boxes, kernel_ids[offsets[tile]:offsets[tile + 1]], col_offsets, column_factors,
                     info, images[tile // n_bands], band_first, min(height, band_first + band_height) - 1,
                     combine, normalize, accumulate, tiny)


@njit(cache=True)
def _prepare_rotated(params, boxes, k, normalize, info):
    """``info[k]`` of rotated kernel ``k``: (scale, whether the recurrences are safe, exp(-A), exp(-B),
    exp(-C))."""
    p = _kernel_params(params, k)
    c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
    safe = _rotated_is_safe(p, c0, c1, r0, r1)
    scale = p[P_SCALE]
    if normalize == COUNT:
        if safe:
            scale = scale / _rotated_total(p, c0, c1, r0, r1)
        else:
            scale = scale / _exact_sum(p, c0, c1, r0, r1)
    info[k, 0] = scale
    info[k, 1] = 1.0 if safe else 0.0
    info[k, 2] = math.exp(-p[P_A])
    info[k, 3] = math.exp(-p[P_B])
    info[k, 4] = math.exp(-p[P_C])


@njit(cache=True, inline="always")
def _spans_band(params, boxes, info, k, band_first, band_last):
    """Whether kernel ``k`` is axis-aligned, keeps some columns and its box spans every band row."""
    return (params[k, P_B] == 0.0 and info[k, 1] <= info[k, 2] and boxes[k, B_ROW0] <= band_first
            and boxes[k, B_ROW1] >= band_last)


@njit(cache=True, inline="always")
def _separable_row(p, r, factors, row_scale, peak_row, normalize, tiny):
    """Row ``r`` of an axis-aligned kernel: ``(lo, hi, row_factor)``, its values being
    ``row_factor * factors[lo:hi + 1]``; ``lo > hi`` when the whole row is flushed.

    Only columns whose product with row_factor is a normal number are kept (a subnormal product
    costs a microcode assist each); factors are unimodal, so the ends are trimmed.
    """
    g = _factor(r - p[P_CY], p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)
    row_factor = row_scale * g
    if g < peak_row * 2.0 ** -60 or abs(row_factor) < tiny:
        return 1, 0, row_factor
    lo, hi = 0, factors.size - 1
    floor = tiny / abs(row_factor)
    if floor > 2.0 ** -60:
        while lo <= hi and factors[lo] < floor:
            lo += 1
        while hi >= lo and factors[hi] < floor:
            hi -= 1
    return lo, hi, row_factor


@njit(cache=True)
def _set_pair_rows(image, params, boxes, k1, k2, col_offsets, column_factors, info, band_first, band_last,
                   combine, normalize, tiny):
    """Rows band_first..band_last written by two axis-aligned kernels that span them, in one pass.

    Every pixel gets exactly what zero-filling, ``_set_separable_row`` with ``k1`` and then
    ``_combine_separable_row`` with ``k2`` would give, by the same operations in the same order.
    """
    one = image.dtype.type(1)
    zero = image.dtype.type(0)
    width = image.shape[1]
    first1, f1 = _kept_factors(k1, boxes, info, col_offsets, column_factors)
    first2, f2 = _kept_factors(k2, boxes, info, col_offsets, column_factors)
    p1, p2 = _kernel_params(params, k1), _kernel_params(params, k2)
    peak1 = _row_peak(p1, boxes[k1, B_ROW0], boxes[k1, B_ROW1], normalize)
    peak2 = _row_peak(p2, boxes[k2, B_ROW0], boxes[k2, B_ROW1], normalize)
    for r in range(band_first, band_last + 1):
        lo1, hi1, v1 = _separable_row(p1, r, f1, info[k1, 0], peak1, normalize, tiny)
        lo2, hi2, v2 = _separable_row(p2, r, f2, info[k2, 0], peak2, normalize, tiny)
        rf1, rf2 = image.dtype.type(v1), image.dtype.type(v2)
        # Kept columns [b, e) of each kernel (empty when its row is flushed).
        b1, e1 = (first1 + lo1, first1 + hi1 + 1) if lo1 <= hi1 else (width, width)
        b2, e2 = (first2 + lo2, first2 + hi2 + 1) if lo2 <= hi2 else (width, width)
        row = image[r]
        start = 0
        while start < width:
            stop = width
            for cut in (b1, e1, b2, e2):
                if start < cut < stop:
                    stop = cut
            out = row[start:stop]
            in1, in2 = b1 <= start < e1, b2 <= start < e2
            g1 = f1[lo1 + start - b1:lo1 + stop - b1] if in1 else f1[:0]
            g2 = f2[lo2 + start - b2:lo2 + stop - b2] if in2 else f2[:0]
            if in1 and in2:
                if combine == SUM:
                    for i in range(out.size):
                        out[i] = (zero + rf1 * g1[i]) + rf2 * g2[i]
                elif combine == MAX:
                    for i in range(out.size):
                        out[i] = max(max(zero, rf1 * g1[i]), rf2 * g2[i])
                else:
                    for i in range(out.size):
                        s = zero + rf1 * g1[i]
                        out[i] = s + rf2 * g2[i] * (one - s)
            elif in1 or in2:
                rf, g = (rf1, g1) if in1 else (rf2, g2)
                if combine == MAX:
                    for i in range(out.size):
                        out[i] = max(zero, rf * g[i])
                elif in1 or combine == SUM:
                    for i in range(out.size):
                        out[i] = zero + rf * g[i]
                else:  # por of the second kernel into 0, as _combine_separable_row forms it
                    for i in range(out.size):
                        out[i] = zero + rf * g[i] * (one - zero)
            else:
                for i in range(out.size):
                    out[i] = zero
            start = stop


@njit(cache=True)
def _render_tile(params, boxes, kernel_ids, col_offsets, column_factors, info, image, band_first, band_last,
                 combine, normalize, accumulate, tiny):
    """Rows band_first..band_last of ``image`` (2-D): zeroed unless accumulating, then every kernel
    of ``kernel_ids`` combined in."""
    width = image.shape[1]
    # Unless accumulating, a band whose first kernel is axis-aligned and spans all its rows is
    # written by that kernel (combine(0, v), zeros around it) in one pass, not zeroed and then
    # combined: one pass over the rows less (W1: every band).
    overwrite = False
    if not accumulate:
        if kernel_ids.size > 0:
            k = kernel_ids[0]
            overwrite = _spans_band(params, boxes, info, k, band_first, band_last)
        if not overwrite:
            for r in range(band_first, band_last + 1):
                _fill_row(image[r], 0, width)
    # When the second kernel qualifies too, both are written in one pass (W1: a third less work).
    paired = overwrite and kernel_ids.size > 1 and _spans_band(params, boxes, info, kernel_ids[1], band_first,
                                                               band_last)
    column = np.empty(width)  # scratch of _rotated_block
    down = np.empty(width)
    spare = np.zeros(width, dtype=image.dtype)  # the odd last row of _rotated_block
    for j in range(kernel_ids.size):
        k = kernel_ids[j]
        p = _kernel_params(params, k)
        c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
        r_first = max(boxes[k, B_ROW0], band_first)
        r_last = min(boxes[k, B_ROW1], band_last)
        if paired and j < 2:
            if j == 0:  # both kernels at once; j == 1 is then done
                _set_pair_rows(image, params, boxes, kernel_ids[0], kernel_ids[1], col_offsets, column_factors,
                               info, band_first, band_last, combine, normalize, tiny)
        elif p[P_B] == 0.0:
            first, factors = _kept_factors(k, boxes, info, col_offsets, column_factors)
            if factors.size == 0:
                continue
            row_scale = info[k, 0]
            peak_row = _row_peak(p, boxes[k, B_ROW0], boxes[k, B_ROW1], normalize)
            setting = overwrite and j == 0
            for r in range(r_first, r_last + 1):
                lo, hi, row_factor = _separable_row(p, r, factors, row_scale, peak_row, normalize, tiny)
                if lo > hi:
                    if setting:
                        _fill_row(image[r], 0, width)
                    continue
                if setting:
                    _set_separable_row(image[r], first + lo, factors[lo:hi + 1], image.dtype.type(row_factor),
                                       combine)
                else:
                    _combine_separable_row(image[r, first + lo:first + hi + 1], factors[lo:hi + 1],
                                           image.dtype.type(row_factor), combine)
        elif info[k, 1] != 0.0:
            _rotated_block(image, p, r_first, r_last, c0, c1, info[k, 0], (info[k, 2], info[k, 3], info[k, 4]),
                           combine, tiny, column, down, spare)
        else:
            for r in range(r_first, r_last + 1):
                _combine_exact_row(image[r], p, r, c0, c1, info[k, 0], combine, tiny)


# -- dense sums as one product ----------------------------------------------------------------------

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
        p = _kernel_params(params, k)
        c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
        r0, r1 = boxes[k, B_ROW0], boxes[k, B_ROW1]
        cx, cy = p[P_CX], p[P_CY]
        peak_col = _col_peak(p, c0, c1, normalize)
        peak_row = _row_peak(p, r0, r1, normalize)
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
    dense_product(row_factors, col_factors, images[0])
