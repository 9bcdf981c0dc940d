"""The Numba backend's dense path: a sum of few axis-aligned kernels over a whole large image.

Such a sum is the rank-K product ``out = GY.T @ GX`` of per-kernel row factors (K, H) and column
factors (K, W). :func:`dense_product` writes it in one parallel pass of FMAs in registers. It beat
``np.matmul`` into the same buffer on W3 (4096^2, K = 16, 2 threads): 8.2 against 11.3 ms into a
fresh output and 5.0 against 6.9 ms into a reused one (float32; float64 into a reused buffer ties),
because the output's fresh pages are faulted by the threads that compute it, and no hand-off to
BLAS's own thread pool follows Numba's (on 2 cores the two pools spun against each other: the
factors and the matmul took 0.5 + 7.1 ms alone and 12.4 ms back to back).

How it vectorises: Numba turns LLVM's SLP vectoriser off, so a register tile of scalar locals stays
scalar. The innermost loop therefore runs along the columns and sums all 16 products of a group of
kernels in one expression; the column factors are packed into panels with a constant stride of
``DENSE_PANEL`` slots per kernel, so every load is a base register plus a constant offset (without
packing the 16 row pointers spill and it runs ~30% slower). Kernels are padded with zero factors to
a multiple of 16: below 16 kernels the loop costs what 16 cost.

:func:`dense_pays` says whether a plan takes this path, :func:`render_dense` renders it: the
factors (:func:`_factor_task`, a task a kernel), then the product (:func:`_panel_task`, a task a
block of ``DENSE_ROWS`` rows), each pass on Numba's threads by address (:func:`.calls.run`):
as the bodies of parallel loops, the two passes made W3's cold first call take 1.6x as long.
"""

from __future__ import annotations

import numpy as np

from ...planning import B_COL0, B_COL1, B_ROW0, B_ROW1, P_SCALE
from . import calls
from .cache import jit
from .factors import COUNT, RELATIVE_FLUSH, SUM, col_factor, col_peak, kernel_params, row_factor, row_peak, smaller

DENSE_MIN_PIXELS = 1 << 20  # images smaller than this never take the dense path
DENSE_MAX_KERNELS = 64  # past this many kernels per image, the product's rank is too high to pay
DENSE_PANEL = 512  # slots per kernel in a packed panel; the offsets in _panel_task are its multiples
DENSE_ROWS = 32  # output rows per parallel task (32 rows x a 32 KiB panel was best or tied)
GROUP = 16  # kernels summed per pass along a row


def dense_product(row_factors, col_factors, out):
    """``out[r, c] = sum_k row_factors[k, r] * col_factors[k, c]``, every pixel written once.

    Parameters
    ----------
    row_factors : (K, H) array
    col_factors : (K, W) array
        Of the output's dtype (float32 or float64); products are accumulated in it (with FMAs).
    out : (H, W) C-contiguous array
        Overwritten; the result equals ``np.matmul(row_factors.T, col_factors)`` up to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> rows, cols = np.ones((3, 4)), np.arange(10.0).reshape(2, 5).repeat([2, 1], axis=0)
    >>> out = np.empty((4, 5))
    >>> dense_product(rows, cols, out)
    >>> np.array_equal(out, rows.T @ cols)
    True
    """
    if row_factors.shape[0] == 0:
        out[...] = 0
        return
    panel_width = _panel_width(out.itemsize)
    row_packed, packed = packed_factors(row_factors, col_factors, panel_width)
    shared = (row_packed, packed, out, panel_width)
    calls.run(_panel_task, (out.shape[0] + DENSE_ROWS - 1) // DENSE_ROWS, shared)


def packed_factors(row_factors, col_factors, panel_width):
    """Zero-padded copies for :func:`_panel_task`: ``row_packed`` (H, K16) holds the row factors
    transposed; ``packed`` holds, panel after panel, ``DENSE_PANEL`` slots per kernel, of which the
    first ``panel_width`` are that panel's column factors (K16: K rounded up to a multiple of
    ``GROUP``). NumPy copies, a few per panel.
    """
    n_kernels, height = row_factors.shape
    width = col_factors.shape[1]
    n_padded = -(-n_kernels // GROUP) * GROUP
    n_panels = -(-width // panel_width)
    row_packed = np.zeros((height, n_padded), dtype=row_factors.dtype)
    row_packed[:, :n_kernels] = row_factors.T
    packed = np.zeros(n_panels * n_padded * DENSE_PANEL, dtype=col_factors.dtype)
    slots = packed.reshape(n_panels, n_padded, DENSE_PANEL)
    for p in range(n_panels):
        c0 = p * panel_width
        n = min(panel_width, width - c0)
        slots[p, :n_kernels, :n] = col_factors[:, c0:c0 + n]
    return row_packed, packed


def _panel_width(itemsize):
    """Columns per packed panel: 32 KiB of each kernel group's factors stay in L1."""
    return DENSE_PANEL * 4 // itemsize


def scratch_bytes(n_kernels, height, width, itemsize):
    """Peak scratch bytes of :func:`render_dense`: the factors (K, H) and (K, W), and the
    zero-padded copies of them (:func:`packed_factors`) while they are alive."""
    n_padded = -(-n_kernels // GROUP) * GROUP
    n_panels = -(-width // _panel_width(itemsize))
    return itemsize * (n_kernels * (height + width) + n_panels * n_padded * DENSE_PANEL + height * n_padded)


@jit(by_address=True, fastmath={"contract"})
def _panel_task(block, row_packed, packed, out, panel_width):
    """Rows ``block * DENSE_ROWS`` on of ``out``: per panel and group of 16 kernels, one vectorised pass
    along each row sums the 16 products in registers (two chains of 8). Returns 0.

    ``q`` must be a 1-D slice: indexing ``packed[base + ...]`` directly keeps a negative-index check
    in the loop and ran 7x slower.
    """
    height, width = out.shape
    n_padded = row_packed.shape[1]
    n_panels = (width + panel_width - 1) // panel_width
    stride = n_padded * DENSE_PANEL
    r0 = block * DENSE_ROWS
    r1 = smaller(height, r0 + DENSE_ROWS)
    for p in range(n_panels):
        c0 = p * panel_width
        n = smaller(panel_width, width - c0)
        for k0 in range(0, n_padded, GROUP):
            q = packed[p * stride + k0 * DENSE_PANEL:p * stride + (k0 + GROUP) * DENSE_PANEL]
            for r in range(r0, r1):
                o = out[r, c0:c0 + n]
                a = row_packed[r, k0:k0 + GROUP]
                a0, a1, a2, a3, a4, a5, a6, a7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
                a8, a9, a10, a11, a12, a13, a14, a15 = a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]
                if k0 == 0:
                    for j in range(n):
                        o[j] = ((a0 * q[j] + a1 * q[512 + j] + a2 * q[1024 + j] + a3 * q[1536 + j]
                                 + a4 * q[2048 + j] + a5 * q[2560 + j] + a6 * q[3072 + j] + a7 * q[3584 + j])
                                + (a8 * q[4096 + j] + a9 * q[4608 + j] + a10 * q[5120 + j] + a11 * q[5632 + j]
                                   + a12 * q[6144 + j] + a13 * q[6656 + j] + a14 * q[7168 + j]
                                   + a15 * q[7680 + j]))
                else:
                    for j in range(n):
                        o[j] += ((a0 * q[j] + a1 * q[512 + j] + a2 * q[1024 + j] + a3 * q[1536 + j]
                                  + a4 * q[2048 + j] + a5 * q[2560 + j] + a6 * q[3072 + j] + a7 * q[3584 + j])
                                 + (a8 * q[4096 + j] + a9 * q[4608 + j] + a10 * q[5120 + j] + a11 * q[5632 + j]
                                    + a12 * q[6144 + j] + a13 * q[6656 + j] + a14 * q[7168 + j]
                                    + a15 * q[7680 + j]))
    return 0


def dense_pays(plan, combine):
    """A sum of few axis-aligned kernels, each covering at least half of a large image."""
    grid = plan.grid
    if combine != SUM or plan.accumulate or not plan.axis_aligned or grid.n_images != 1:
        return False
    if grid.height * grid.width < DENSE_MIN_PIXELS or plan.n_kernels > DENSE_MAX_KERNELS:
        return False
    boxes = plan.boxes
    areas = (boxes[:, B_COL1] - boxes[:, B_COL0] + 1) * (boxes[:, B_ROW1] - boxes[:, B_ROW0] + 1)
    return bool(areas.min() * 2 >= grid.height * grid.width)


def render_dense(plan, images, normalize):
    """Render ``plan`` (``dense_pays``) into ``images`` (1, H, W)."""
    grid = plan.grid
    dtype = images.dtype
    col_factors = np.empty((plan.n_kernels, grid.width), dtype=dtype)
    row_factors = np.empty((plan.n_kernels, grid.height), dtype=dtype)
    shared = (plan.params, plan.boxes, normalize, col_factors, row_factors)
    calls.run(_factor_task, plan.n_kernels, shared)
    dense_product(row_factors, col_factors, images[0])


@jit(by_address=True)
def _factor_task(k, params, boxes, normalize, col_factors, row_factors):
    """Row ``k`` of ``col_factors`` (K, W) and of ``row_factors`` (K, H): kernel ``k``'s factors, zero
    outside its box, its scale in the row factors. Returns 0.

    Column factors are normalised to a peak of 1. Float32 factors are trimmed so that no product of
    two kept factors is subnormal: columns below 2**-50 of their peak and row factors below 2**-76
    are dropped; float64 ones below 2**-60 of their peak. A kernel whose largest value is below
    2**-36 drops float32 row factors below 2**-40 of it instead (its products may be subnormal: a
    kernel whose values are all tiny keeps them, within 1e-12 of its peak).
    """
    float32 = col_factors.itemsize == 4
    col_floor = 2.0 ** -50 if float32 else RELATIVE_FLUSH
    p = kernel_params(params, k)
    c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
    r0, r1 = boxes[k, B_ROW0], boxes[k, B_ROW1]
    peak_col = col_peak(p, c0, c1, normalize)
    peak_row = row_peak(p, r0, r1, normalize)
    col_factors[k, :] = 0
    row_factors[k, :] = 0
    if not peak_col > 0.0:  # every column factor underflows float64: the kernel writes nothing
        return 0
    col_sum = 0.0
    for c in range(c0, c1 + 1):
        g = col_factor(p, c, normalize)
        col_sum += g
        if g >= peak_col * col_floor:
            col_factors[k, c] = g / peak_col
    scale = p[P_SCALE] * peak_col
    if normalize == COUNT:  # the only mode that needs the row sum
        row_sum = 0.0
        for r in range(r0, r1 + 1):
            row_sum += row_factor(p, r, normalize)
        scale = scale / (col_sum * row_sum)
    row_floor = smaller(2.0 ** -76, abs(scale * peak_row) * 2.0 ** -40) if float32 else 0.0
    for r in range(r0, r1 + 1):
        g = row_factor(p, r, normalize)
        v = scale * g
        if g >= peak_row * RELATIVE_FLUSH and abs(v) >= row_floor:
            row_factors[k, r] = v
    return 0
