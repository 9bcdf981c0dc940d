"""NumPy backend: vectorised per-kernel windows, the fallback that runs everywhere.

Large supports are evaluated one window at a time (separable 1-D factors when axis-aligned) and
combined in place. Small supports are evaluated many at once as a padded ``(n, h, w)`` block and
scattered with ``ufunc.at``, so a hundred thousand splats cost a few hundred NumPy calls, not a
Python loop per splat.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, erfc

from ..planning import (B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, P_A, P_B, P_C, P_CX, P_CY,
                        P_SCALE, P_SHIFT_COL, P_SHIFT_ROW, P_SIGMA_COL, P_SIGMA_ROW)
from . import host_free_memory as free_memory  # noqa: F401  (backend interface)

xp = np
LARGE_AREA = 4096  # supports larger than this many pixels are rendered window by window
CHUNK_ELEMENTS = 1 << 20  # padded pixels evaluated per vectorised step
_SQRT_HALF = np.sqrt(0.5)


def unavailable_reason():
    return None


# Peak scratch of one vectorised step, in bytes per element of CHUNK_ELEMENTS: offsets, values,
# masks, scatter indices and the exp/por temporaries, at most ~16 float64-sized arrays at once.
STEP_BYTES_PER_ELEMENT = 16 * 8
KERNEL_BYTES = 12 * 8  # per plan kernel: box sizes, masks, sort orders, per-block gathers


def call_bytes(plan, exact=False):
    """Peak scratch bytes of :func:`render` (see :mod:`gaussheat_gpu.backends`): one vectorised
    step and per-kernel bookkeeping; the bound is the figure, so ``exact`` changes nothing."""
    grid = plan.grid
    step = min(CHUNK_ELEMENTS, plan.n_kernels * grid.height * grid.width)  # padded pixels never exceed a box's
    return STEP_BYTES_PER_ELEMENT * step + KERNEL_BYTES * plan.n_kernels


def render(plan, out):
    """Evaluate ``plan`` into ``out`` (see :mod:`gaussheat_gpu.backends`)."""
    grid = plan.grid
    images = out.reshape(grid.n_images, grid.height, grid.width)
    if not plan.accumulate:
        images.fill(0)
    if plan.n_kernels == 0:
        return
    boxes = plan.boxes
    heights = boxes[:, B_ROW1] - boxes[:, B_ROW0] + 1
    widths = boxes[:, B_COL1] - boxes[:, B_COL0] + 1
    large = heights * widths > LARGE_AREA
    for k in np.flatnonzero(large):
        _render_window(plan, images, k)
    small = np.flatnonzero(~large)
    if small.size:
        _render_small(plan, images.reshape(-1), small, heights[small], widths[small])


def cell_mass(offset, sigma):
    """Normal(0, sigma) probability mass of the unit cell centred ``offset`` pixels from the mean.

    Mirrored to the positive side and taken as an erfc difference there, so far tails keep their
    relative precision.
    """
    d = np.abs(offset)
    lo = (d - 0.5) / sigma * _SQRT_HALF
    hi = (d + 0.5) / sigma * _SQRT_HALF
    return np.where(lo >= 0, 0.5 * (erfc(lo) - erfc(hi)), 0.5 * (erf(hi) - erf(lo)))


def _separable_factors(p, u, w, normalize):
    """1-D factors (fx over columns, gy over rows) of axis-aligned kernels; broadcasting shapes."""
    if normalize == "integral":
        return cell_mass(u, p[..., P_SIGMA_COL]), cell_mass(w, p[..., P_SIGMA_ROW])
    fx = np.exp(-0.5 * (p[..., P_A] * u * u - p[..., P_SHIFT_COL]))
    fy = np.exp(-0.5 * (p[..., P_C] * w * w - p[..., P_SHIFT_ROW]))
    return fx, fy


def _full_values(p, u, w):
    """exp(-(q - shift)/2) for ``u`` (..., 1, W) and ``w`` (..., H, 1).

    Each axis's shift comes off its own term first: an axis-aligned kernel far from the image (in
    a block with rotated ones) has a column term so large that the row term would round away.
    """
    q = (p[..., P_A] * u * u - p[..., P_SHIFT_COL]) + 2.0 * p[..., P_B] * u * w + (p[..., P_C] * w * w - p[..., P_SHIFT_ROW])
    return np.exp(-0.5 * q)


def _render_window(plan, images, k):
    p = plan.params[k]
    c0, c1, r0, r1, image = (int(v) for v in plan.boxes[k, [B_COL0, B_COL1, B_ROW0, B_ROW1, B_IMAGE]])
    u = np.arange(c0, c1 + 1) - p[P_CX]
    separable = p[P_B] == 0.0
    rows_per_strip = max(1, CHUNK_ELEMENTS // u.size)
    strips = [(ra, min(ra + rows_per_strip, r1 + 1)) for ra in range(r0, r1 + 1, rows_per_strip)]

    def strip_values(ra, rb):
        w = np.arange(ra, rb) - p[P_CY]
        if separable:
            fx, fy = _separable_factors(p, u, w, plan.normalize)
            return fy, fx
        return _full_values(p, u[None, :], w[:, None]), None

    scale = p[P_SCALE]
    if plan.normalize == "count":
        if separable:
            fx, fy = _separable_factors(p, u, np.arange(r0, r1 + 1) - p[P_CY], "count")
            total = fx.sum() * fy.sum()
        else:
            total = sum(strip_values(ra, rb)[0].sum() for ra, rb in strips)
        scale = scale / total
    dtype = plan.dtype
    for ra, rb in strips:
        first, second = strip_values(ra, rb)
        if second is None:
            values = (first * scale).astype(dtype, copy=False)
        else:  # outer product of 1-D factors, formed in the output dtype
            values = np.multiply.outer((first * scale).astype(dtype), second.astype(dtype))
        _combine_window(images[image, ra:rb, c0:c1 + 1], values, plan.combine)


def box_sums(plan):
    """Each kernel's float64 sum of ``g = exp(-(q - shifts)/2)`` over its whole box.

    The ``count`` normaliser, for renders that see a kernel's box only in parts (window by window):
    axis-aligned kernels as the product of their row and column sums, rotated ones pixel by pixel,
    a bounded number of pixels per vectorised step.

    Parameters
    ----------
    plan : gaussheat_gpu.planning.Plan
        A host plan (NumPy arrays).

    Returns
    -------
    (M,) float64 array
    """
    params, boxes = plan.params, plan.boxes
    widths = boxes[:, B_COL1] - boxes[:, B_COL0] + 1
    heights = boxes[:, B_ROW1] - boxes[:, B_ROW0] + 1
    sums = np.zeros(plan.n_kernels)
    aligned = params[:, P_B] == 0.0
    ks = np.flatnonzero(aligned)  # one run per kernel: its columns, then its rows
    col_sums, row_sums = np.zeros(ks.size), np.zeros(ks.size)
    for lo, owner, offset in _ragged_steps(widths[ks] + heights[ks]):
        k = ks[owner]
        p = params[k]
        column = offset < widths[k]
        u = np.where(column, boxes[k, B_COL0] + offset - p[:, P_CX], 0.0)
        w = np.where(column, 0.0, boxes[k, B_ROW0] + offset - widths[k] - p[:, P_CY])
        with np.errstate(over="ignore", invalid="ignore"):  # the other axis's entries (offset 0) are not used
            fx, fy = _separable_factors(p, u, w, "count")
        n = int(owner[-1]) - lo + 1
        col_sums[lo:lo + n] += np.bincount(owner - lo, weights=np.where(column, fx, 0.0), minlength=n)
        row_sums[lo:lo + n] += np.bincount(owner - lo, weights=np.where(column, 0.0, fy), minlength=n)
    sums[ks] = col_sums * row_sums
    ks = np.flatnonzero(~aligned)
    for lo, owner, offset in _ragged_steps(widths[ks] * heights[ks]):
        k = ks[owner]
        p = params[k]
        u = boxes[k, B_COL0] + offset % widths[k] - p[:, P_CX]
        w = boxes[k, B_ROW0] + offset // widths[k] - p[:, P_CY]
        n = int(owner[-1]) - lo + 1
        sums[ks[lo:lo + n]] += np.bincount(owner - lo, weights=_full_values(p, u, w), minlength=n)
    return sums


def _ragged_steps(lengths):
    """The elements of consecutive runs (run ``i`` has ``lengths[i]``), a quarter of CHUNK_ELEMENTS at a time: yields
    ``(first run, run of each element, offset of each element in its run)``; a long run spans steps."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if ends.size else 0
    budget = CHUNK_ELEMENTS // 4
    for start in range(0, total, budget):
        element = np.arange(start, min(start + budget, total))
        owner = np.searchsorted(ends, element, side="right")
        yield int(owner[0]), owner, element - (ends - lengths)[owner]


def _combine_window(window, values, combine):
    if combine == "sum":
        window += values
    elif combine == "max":
        np.maximum(window, values, out=window)
    else:  # por: s <- s + v (1 - s)
        window += values * (1 - window)


def _render_small(plan, flat, ks, heights, widths):
    side = np.maximum(heights, widths)
    order = np.argsort(side, kind="stable")
    ks, heights, widths, side = ks[order], heights[order], widths[order], side[order]
    i = 0
    while i < ks.size:
        reach = min(ks.size, i + max(1, CHUNK_ELEMENTS // int(side[i]) ** 2))
        end = min(ks.size, i + max(1, CHUNK_ELEMENTS // int(side[reach - 1]) ** 2))
        _render_block(plan, flat, ks[i:end], heights[i:end], widths[i:end])
        i = end


def _render_block(plan, flat, ks, heights, widths):
    """Evaluate kernels ``ks`` as one padded (n, h, w) block and scatter them into ``flat``."""
    grid = plan.grid
    p = plan.params[ks][:, None, None, :]  # (n, 1, 1, N_PARAMS)
    boxes = plan.boxes[ks]
    h_pad, w_pad = int(heights.max()), int(widths.max())
    cols = boxes[:, B_COL0, None] + np.arange(w_pad)  # (n, w)
    rows = boxes[:, B_ROW0, None] + np.arange(h_pad)  # (n, h)
    u = (cols - plan.params[ks, P_CX, None])[:, None, :]
    w = (rows - plan.params[ks, P_CY, None])[:, :, None]
    # Padding cells lie outside their kernel's box, where q may fall below a count kernel's shift
    # and exp overflow (inf, or 0 * inf = nan in a product of factors): they are masked out below.
    with np.errstate(over="ignore", invalid="ignore"):
        if plan.normalize == "integral" or not plan.params[ks, P_B].any():
            fx, fy = _separable_factors(p, u, w, plan.normalize)
            values = fy * fx
        else:
            values = _full_values(p, u, w)
    inside = (np.arange(h_pad) < heights[:, None])[:, :, None] & (np.arange(w_pad) < widths[:, None])[:, None, :]
    values = np.where(inside, values, 0.0)
    scale = plan.params[ks, P_SCALE]
    if plan.normalize == "count":
        scale = scale / values.sum(axis=(1, 2))
    values *= scale[:, None, None]
    index = ((boxes[:, B_IMAGE, None] * grid.height + rows) * grid.width)[:, :, None] + cols[:, None, :]
    index, values = index[inside], values[inside]
    if plan.combine == "sum":
        np.add.at(flat, index, values.astype(plan.dtype))
    elif plan.combine == "max":
        np.maximum.at(flat, index, values.astype(plan.dtype))
    else:  # por: 1 - prod(1 - v) per pixel, taken in float64 through log1p / expm1
        pixels, inverse = np.unique(index, return_inverse=True)
        with np.errstate(divide="ignore"):  # a value of exactly 1 gives log 0 = -inf, and expm1(-inf) = -1: exact
            log_complement = np.bincount(inverse, weights=np.log1p(-values), minlength=pixels.size)
        old = flat[pixels].astype(np.float64)
        flat[pixels] = old + (1.0 - old) * -np.expm1(log_complement)
