"""Compiled helpers of :func:`gaussheat_gpu.targets.density_map`: nearest-neighbour distances and
window sums, the two per-head passes that cost more than the render itself in NumPy and scipy.

:func:`mean_nearest_distances` buckets the heads of each image into a grid of square cells (about
``CELL_HEADS`` heads a cell) and searches rings of cells around each head until no unvisited cell
can hold a nearer one: the exact ``k`` smallest distances, as a k-d tree gives them, in tens of
microseconds per thousand heads instead of a millisecond. :func:`window_sums` sums each head's
sampled Gaussian over its window with a two-multiply recurrence per pixel, walking outwards from
the centre so that every factor is at most 1 (no overflow for any sigma or window) and restarting
from ``exp`` every ``ANCHOR`` pixels. Both run on every Numba thread.
"""

from __future__ import annotations

import math

import numpy as np

from . import calls
from .cache import jit
from .factors import larger, smaller

CELL_HEADS = 1.5  # heads per cell on average; fewer cells to visit per ring, fewer heads per cell
HEADS_PER_TASK = 512  # heads searched per parallel task
# Heads summed per parallel task: a task a head cost 13 ns a head more than a parallel loop (1.46x
# on 5,000 heads); a few hundred heads take microseconds, far more than a task's call.
WINDOW_HEADS_PER_TASK = 256
WIDE_WINDOW = 2**20  # pixels; wider windows are summed in closed form
ANCHOR = 64  # pixels of a window-sum recurrence between restarts from exp


def mean_nearest_distances(x, y, image, n_images, k, means, counts):
    """Into ``means``: each head's mean distance to its ``k`` nearest other heads of its image (to
    all of them where the image holds ``k`` or fewer others); into ``counts``: how many that is.

    ``image`` holds values in ``0 .. n_images - 1``. A head at the same position as another is at
    distance 0 from it (duplicates are each other's neighbours). The distances are summed nearest
    first, as ``numpy.sum`` sums a k-d tree query's row.

    The search runs in tasks of ``HEADS_PER_TASK`` heads on every Numba thread, :func:`_nearest`
    called by address (:mod:`.calls`), which compiles it once instead of copying it into a parallel
    loop's body (2 s less of a first call's compilation).
    """
    if x.size == 0:
        return
    xs, ys, cell_of, starts, (x0, y0, cell, nx, ny) = cell_lists(x, y, image, n_images)
    args = (x, y, xs, ys, cell_of, starts, x0, y0, cell, nx, ny, image, k, means, counts)
    calls.run(_nearest, (x.size + HEADS_PER_TASK - 1) // HEADS_PER_TASK, args)


@jit(forceinline=True)
def _bounds(values):
    """``values.min(), values.max()`` (both NaN where a value is, as NumPy gives them). Not the array
    methods: code that calls them needs NumPy's implementations in Numba (which import SciPy's linear
    algebra) loaded again whenever it is loaded from the cache, 0.1 s."""
    lo = hi = values[0]
    for v in values:
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
        elif v != v:
            return v, v
    return lo, hi


@jit(entry=True)
def cell_lists(x, y, image, n_images):
    """The heads sorted by cell, ``xs, ys``; the cell of each head, ``cell_of``; where each cell's
    heads start in the sorted ones, ``starts``; and ``(x0, y0, cell, nx, ny)``."""
    n = x.size
    x0, x1 = _bounds(x)
    y0, y1 = _bounds(y)
    span_x, span_y = x1 - x0, y1 - y0
    per_image = larger(n / n_images, 1.0)
    # Square cells holding about CELL_HEADS heads when the heads fill the bounding box; never more
    # cells along an axis than heads per image (collinear or clustered heads).
    cell = larger(math.sqrt(span_x * span_y * CELL_HEADS / per_image), (span_x + span_y) / per_image)
    if cell > 0.0 and math.isfinite(cell):  # then span / cell <= per_image: at most ~1.5 cells a head
        nx, ny = np.int64(span_x / cell) + 1, np.int64(span_y / cell) + 1
    else:  # every head at one position, or a span past float64's range: one cell, searched whole
        cell, nx, ny = 1.0, 1, 1
    cells = nx * ny
    # Heads sorted by (image, cell row, cell column), a counting sort: a row of cells is one run.
    cell_of = np.empty(n, dtype=np.int64)
    starts = np.zeros(n_images * cells + 1, dtype=np.int64)
    for i in range(n):
        # (with one cell the quotient may pass int64's range: spans past 1e154 take that branch)
        cx = smaller(np.int64((x[i] - x0) / cell), nx - 1) if nx > 1 else 0
        cy = smaller(np.int64((y[i] - y0) / cell), ny - 1) if ny > 1 else 0
        cell_of[i] = image[i] * cells + cy * nx + cx
        starts[cell_of[i] + 1] += 1
    for c in range(n_images * cells):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        order[fill[cell_of[i]]] = i
        fill[cell_of[i]] += 1
    return x[order], y[order], cell_of, starts, (x0, y0, cell, nx, ny)


@jit(by_address=True)
def _nearest(task, x, y, xs, ys, cell_of, starts, x0, y0, cell, nx, ny, image, k, means, counts):
    """:func:`mean_nearest_distances` of the ``task``-th ``HEADS_PER_TASK`` heads, from
    :func:`cell_lists`'s ``xs, ys, cell_of, starts`` and grid ``x0, y0, cell, nx, ny``. Returns 0."""
    first = task * HEADS_PER_TASK
    stop = smaller(x.size, first + HEADS_PER_TASK)
    cells = nx * ny
    # The smallest squared distances so far, ascending (the head itself, 0, first): k + 1 of them,
    # or 4 for k < 3 (the slots past k + 1 are not read).
    best = np.empty(larger(k + 1, 4))
    for i in range(first, stop):
        for j in range(best.size):
            best[j] = np.inf
        base = image[i] * cells
        cy, cx = (cell_of[i] - base) // nx, (cell_of[i] - base) % nx
        ring = 1
        while True:
            # Ring ``ring`` of cells around the head's: whole rows at its top and bottom, the two
            # end cells of the rows between; each row's cells are one run of the sorted heads.
            # The first pass takes the 3 x 3 block as three runs (the head's own cell alone seldom
            # holds its k nearest).
            for gy in range(larger(cy - ring, 0), smaller(cy + ring, ny - 1) + 1):
                row = base + gy * nx
                if ring == 1 or gy == cy - ring or gy == cy + ring:
                    _merge(xs, ys, x[i], y[i], starts[row + larger(cx - ring, 0)],
                           starts[row + smaller(cx + ring, nx - 1) + 1], best)
                else:
                    if cx - ring >= 0:
                        _merge(xs, ys, x[i], y[i], starts[row + cx - ring], starts[row + cx - ring + 1], best)
                    if cx + ring < nx:
                        _merge(xs, ys, x[i], y[i], starts[row + cx + ring], starts[row + cx + ring + 1], best)
            # Every head not yet seen lies outside the block of cells searched: at least as far
            # as the block's nearest edge (an edge of the grid has no heads beyond it).
            if ring >= larger(nx, ny):
                break
            reach = np.inf
            if cx - ring > 0:
                reach = smaller(reach, x[i] - (x0 + (cx - ring) * cell))
            if cx + ring < nx - 1:
                reach = smaller(reach, x0 + (cx + ring + 1) * cell - x[i])
            if cy - ring > 0:
                reach = smaller(reach, y[i] - (y0 + (cy - ring) * cell))
            if cy + ring < ny - 1:
                reach = smaller(reach, y0 + (cy + ring + 1) * cell - y[i])
            if best[k] <= reach * reach:
                break
            ring += 1
        # (a distance whose square overflows is infinite, as in a k-d tree: the mean is too)
        found = smaller(k, starts[base + cells] - starts[base] - 1)
        total = 0.0
        for j in range(1, found + 1):
            total += math.sqrt(best[j])
        means[i] = total / larger(found, 1)
        counts[i] = found
    return 0


@jit(forceinline=True)
def _merge(xs, ys, x, y, first, stop, best):
    """Merge the squared distances from (x, y) to heads ``first .. stop - 1`` into ``best``.

    Branch-free: slot j becomes min(slot j, max(slot j - 1, d2)), top slot first (a branch on
    "d2 < the largest kept" mispredicts on about half the candidates). Four slots (k <= 3, CSRNet's
    k = 3) are kept in registers: through memory, each candidate waits for the last one's stores
    (1.8x slower).
    """
    if best.size == 4:
        b0, b1, b2, b3 = best[0], best[1], best[2], best[3]
        for m in range(first, stop):
            dx, dy = x - xs[m], y - ys[m]
            d2 = dx * dx + dy * dy
            b3 = smaller(b3, larger(b2, d2))
            b2 = smaller(b2, larger(b1, d2))
            b1 = smaller(b1, larger(b0, d2))
            b0 = smaller(b0, d2)
        best[0], best[1], best[2], best[3] = b0, b1, b2, b3
        return
    k = best.size - 1
    for m in range(first, stop):
        dx, dy = x - xs[m], y - ys[m]
        d2 = dx * dx + dy * dy
        for slot in range(k, 0, -1):
            best[slot] = smaller(best[slot], larger(best[slot - 1], d2))
        best[0] = smaller(best[0], d2)


@jit(forceinline=True)
def _walk(scale, d, count):
    """``sum of exp(scale (d + j)^2)`` for ``j = 0 .. count - 1`` (``d >= 0``, ``scale < 0``).

    By the recurrence g(d + 1) = g(d) r(d), r(d + 1) = r(d) exp(2 scale), with r(d) = exp(scale
    (2d + 1)) <= 1 (no overflow), restarted from exp every ``ANCHOR`` pixels: rounding grows with
    the square of the steps since the last restart, so it stays near 1e-13 for any window.
    """
    step = math.exp(2.0 * scale)
    total = 0.0
    for start in range(0, count, ANCHOR):
        at = d + start
        g, r = math.exp(scale * at * at), math.exp(scale * (2.0 * at + 1.0))
        for _ in range(smaller(ANCHOR, count - start)):
            total += g
            g *= r
            r *= step
    return total


def window_sums(centre, sigma, half, sums):
    """Into ``sums``: sum of ``exp(-d^2 / (2 sigma^2))`` over the pixels ``p`` of each head's window
    ``ceil(centre - half) .. floor(centre + half)``, ``d = p - centre``.

    Windows wider than ``WIDE_WINDOW`` pixels take the integral over the pixels' unit cells (erf),
    whose relative error is about ``1 / (24 sigma^2)`` (below 1e-6 for them) instead of a loop over
    every pixel. Tasks of ``WINDOW_HEADS_PER_TASK`` heads run on Numba's threads
    (:func:`.calls.run`): :func:`_window_sums` is called by address and compiled once, not
    again as a parallel loop's body.
    """
    args = (centre, sigma, half, sums)
    n_tasks = (centre.size + WINDOW_HEADS_PER_TASK - 1) // WINDOW_HEADS_PER_TASK
    calls.run(_window_sums, n_tasks, args)


@jit(by_address=True)
def _window_sums(task, centre, sigma, half, sums):
    """:func:`window_sums` of the ``task``-th ``WINDOW_HEADS_PER_TASK`` heads. Returns 0."""
    for i in range(task * WINDOW_HEADS_PER_TASK, smaller(centre.size, (task + 1) * WINDOW_HEADS_PER_TASK)):
        c = centre[i]
        first, last = np.ceil(c - half[i]), np.floor(c + half[i])
        if last - first >= WIDE_WINDOW:
            spread = sigma[i] * math.sqrt(2.0)
            sums[i] = (sigma[i] * math.sqrt(math.pi / 2.0)
                       * (math.erf((last + 0.5 - c) / spread) - math.erf((first - 0.5 - c) / spread)))
            continue
        scale = -0.5 / (sigma[i] * sigma[i])
        # Two walks outwards, from the first pixel at or right of the centre and from the one before.
        right = larger(np.ceil(c), first)
        left = smaller(right - 1.0, last)
        n_right, n_left = np.int64(larger(last - right + 1.0, 0.0)), np.int64(larger(left - first + 1.0, 0.0))
        total = _walk(scale, right - c, n_right)
        if right == c and n_left == n_right - 1:  # a whole-pixel centre: the left walk mirrors the right one
            sums[i] = 2.0 * total - 1.0
        else:
            sums[i] = total + _walk(scale, c - left, n_left)
    return 0
