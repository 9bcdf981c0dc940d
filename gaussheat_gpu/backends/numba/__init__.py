"""Numba backend: compiled CPU kernels, parallel over row bands of every image.

``render(plan, out)`` picks what a plan needs and compiles only that, on its first use:

=================  ===========================================================================
file               job
=================  ===========================================================================
``planning.py``    the planner's formulas compiled for host kernels (``make_plan(compiled=True)``):
                   one serial loop, or parallel chunks past ``planning.CHUNK`` kernels
``tiles.py``       kernels binned per row band, prepared once, every band rendered in parallel;
                   specialised for plans of axis-aligned kernels, rotated ones, or both
``calls.py``       a compiled function's tasks on Numba's threads, called by address (compiled once)
``bands.py``       axis-aligned kernels: separable rows, one ``exp`` per row
``rotated.py``     rotated kernels: recurrences, two multiplies a pixel
``dense.py``       a sum of few axis-aligned kernels covering a large image: one rank-K product
``factors.py``     the per-kernel scalar formulas the others share
``cache.py``       where compiled code is cached (with a fallback for read-only installs)
``collector.py``   the objects older than a compile kept out of the garbage collector's way during it
``linking.py``     helpers kept as LLVM IR for their callers, not compiled to machine code alone
``warmup.py``      compiling every path ahead of time (``gaussheat warmup``)
``neighbours.py``  ``targets.density_map``'s nearest-neighbour distances and window sums
=================  ===========================================================================

Modes (combine, normalize, accumulate) are run-time switches inside each compiled function; the
output dtype (float32 or float64) is a type, so each path has one specialisation per dtype. A
first call in a process with an empty cache therefore compiles the planner's serial loop, the
binning (not for a small plan of one image, whose band lists come from its sizes alone) and one
band specialisation with the small function that runs its tasks on Numba's threads by address
(:mod:`.calls`), or the dense product: not the whole backend. Numba copies a called function's
code into its caller and compiles it there again, three times more inside a parallel loop;
called by address, the band renderer, the parallel planner's chunk, the dense product's two passes
and density_map's are compiled once. Helpers called from compiled code only are kept as LLVM IR
(:mod:`.linking`): optimised and turned into machine code once, inside the function that calls
them, not also on their own.
"""

from __future__ import annotations

import numba
import numpy as np

from ..._workspace import SCRATCH
from ...planning import B_COL0, B_COL1, B_ROW0, B_ROW1, COMBINE_CODES, NORMALIZE_CODES, P_B
from .. import host_free_memory as free_memory  # noqa: F401  (backend interface)
from . import calls, dense, tiles
from .planning import WORKSPACE_MIN_KERNELS

xp = np
# make_plan options: the compiled planning pass (~60 NumPy calls cost more than W1 renders), its
# tables in this thread's reused memory (fresh pages cost a W6 call ~10 ms of page faults)
WORKSPACE = SCRATCH
plan_options = {"compiled": True, "workspace": WORKSPACE}

# Rows per parallel task: the tallest of BAND_HEIGHTS whose tiles split evenly enough over the
# threads (Numba's scheduler, which calls.parallel_calls uses, hands each thread one contiguous run
# of tiles, so more tiles than threads buy no balance, and 3 tiles for 2 threads idle one thread a
# third of the time). A kernel crossing a band edge is prepared once per band: on W6 (1024 rows,
# 2 threads) 64-row bands took 13.4 ms, 128-row ones 11.6 and 256-row ones 11.0 (16-row bands were
# slower still, PERFORMANCE-NOTES); W5's 768 rows in 256-row bands (3 tiles for 2 threads) went
# from 1.55 to 1.84 ms.
BAND_HEIGHTS = (256, 128)
BAND_HEIGHT = 64  # the shortest band, and every band of an image with fewer than SMALL_ROWS rows
SMALL_ROWS = 1024
MAX_IMBALANCE = 1.1  # most work a thread may get, relative to an even split of the tiles
PREPARE_ONE_BY_ONE = 64  # fewer kernels are prepared one a task; more, in one chunk a thread


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
    matrix product per image (:mod:`.dense`); everything else goes through the row bands
    (:mod:`.tiles`), specialised for the kinds of kernel the plan holds. Both agree with the NumPy
    backend within the bounds of DESIGN.md section 3.
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
    if dense.dense_pays(plan, combine):
        dense.render_dense(plan, images, normalize)
        return
    band_height = _band_height(grid.n_images, grid.height)
    n_bands = -(-grid.height // band_height)
    if _lists_every_band(grid, n_kernels, n_bands):
        offsets, kernel_ids, col_offsets = tiles.every_band(n_kernels, n_bands, grid.width)
        axis = plan.axis_aligned or bool((plan.params[:, P_B] == 0.0).any())
    else:
        offsets, kernel_ids, col_offsets = tiles.bin_kernels(plan.boxes, plan.params, grid.n_images, grid.height,
                                                             band_height)
        axis = col_offsets[-1] > 0
    if n_kernels >= WORKSPACE_MIN_KERNELS:
        column_factors = WORKSPACE.empty("column_factors", (col_offsets[-1],), out.dtype)
        info = WORKSPACE.empty("info", (n_kernels, tiles.INFO_COLUMNS), np.float64)
    else:  # allocated here, not in compiled code: two fewer functions to compile
        column_factors = np.empty(col_offsets[-1], out.dtype)
        info = np.empty((n_kernels, tiles.INFO_COLUMNS))
    # Which specialisation: True or None for "has axis-aligned kernels" and "has rotated ones".
    args = (plan.params, plan.boxes, offsets, kernel_ids, col_offsets, column_factors, info, images, band_height,
            combine, normalize, plan.accumulate, True if axis else None, None if plan.axis_aligned else True)
    chunk = 1 if n_kernels < PREPARE_ONE_BY_ONE else -(-n_kernels // numba.get_num_threads())
    # The other arguments' types follow from these (the rest are this function's arrays and ints).
    varying = (plan.params, plan.boxes, images, args[-2], args[-1])
    tiles.render_bands(calls.address(tiles.render_task, (0, 0, *args), varying), chunk, *args)


def _lists_every_band(grid, n_kernels, n_bands):
    """Whether a plan is small enough to list every kernel in every band (:func:`.tiles.every_band`)."""
    return grid.n_images == 1 and n_kernels * (n_bands + grid.width) <= tiles.EVERY_BAND_ENTRIES


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
        n_tiles = n_images * ((height + band_height - 1) // band_height)
        rounds = (n_tiles + threads - 1) // threads
        if n_tiles >= threads and rounds * threads <= MAX_IMBALANCE * n_tiles:
            return band_height
    return BAND_HEIGHT


def call_bytes(plan, exact=False):
    """Peak scratch bytes of :func:`render` beyond ``out`` and the plan (see :mod:`gaussheat_gpu.backends`).

    The band lists (two ``n_tiles + 1`` int64 arrays and one kernel id per kernel and band it
    meets), the column factors (one per column of each axis-aligned kernel), per-kernel info, and
    each thread's row scratch; for a small plan of one image, every kernel listed in every band and
    given a row's width of column factors (:func:`.tiles.every_band`); or the dense path's factors
    and their padded copies. The bound (arithmetic only: it runs on every call) takes the shortest
    bands, every kernel spanning every band and the whole width, and the dense path's scratch
    besides.
    """
    grid = plan.grid
    n, itemsize = plan.n_kernels, plan.dtype.itemsize
    if n == 0:
        return 0
    if not exact:
        n_bands = -(-grid.height // BAND_HEIGHT)
        return (16 * (grid.n_images * n_bands + 1) + n * (8 * tiles.INFO_COLUMNS + 16 + 8 * n_bands)
                + n * itemsize * grid.width + numba.config.NUMBA_NUM_THREADS * 24 * grid.width
                + dense.scratch_bytes(n, grid.height, grid.width, itemsize))
    if dense.dense_pays(plan, COMBINE_CODES[plan.combine]):
        return dense.scratch_bytes(n, grid.height, grid.width, itemsize)
    band_height = _band_height(grid.n_images, grid.height)
    n_bands = -(-grid.height // band_height)
    if _lists_every_band(grid, n, n_bands):
        return (8 * (n_bands + 1 + n * n_bands + n + 1) + n * 8 * tiles.INFO_COLUMNS + itemsize * n * grid.width
                + numba.get_num_threads() * 24 * grid.width)
    boxes = plan.boxes
    bands = (boxes[:, B_ROW1] // band_height - boxes[:, B_ROW0] // band_height + 1).sum()
    widths = np.where(plan.params[:, P_B] == 0.0, boxes[:, B_COL1] - boxes[:, B_COL0] + 1, 0).sum()
    return (16 * (grid.n_images * n_bands + 1) + n * (8 * tiles.INFO_COLUMNS + 16) + 8 * int(bands) + itemsize * int(widths)
            + numba.get_num_threads() * 24 * grid.width)
