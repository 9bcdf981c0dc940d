"""Planning and binning on the device: a few kernel launches and one read by the host per call.

:func:`make_plan` runs ``plan_kernels.cu`` (one thread per kernel: planning.py's coefficients, boxes
and checks, the float32 coefficients, tile counts), a prefix sum of the tile counts and a column-wise
min of the per-kernel summary rows, then reads the last prefix and the summary in ONE device-to-host
copy: that is the call's only synchronisation. From it the host raises planning.py's errors and picks
the path (:func:`call_bytes` tells ``render`` the memory that path will need):

``"dense"``
    Axis-aligned sums over one image whose boxes cover most of it: a rank-K product of row and
    column factors (``dense_factors.cu`` and cuBLAS through ``cupy.matmul``), no tile list.
``"tiles"``
    ``bin_kernels.cu`` writes a (tile key, kernel) entry per tile a box meets, a stable argsort on the
    32-bit keys orders them, ``finish_bins.cu`` writes the kernel list and CSR offsets per tile,
    ``render_tiles.cu`` evaluates (:func:`bin_tiles`).
``"empty"``
    No kernel has a pixel in the image.

The evaluation is float32 (``fast`` table) for float32 outputs, float64 for float64 outputs, for
``normalize="integral"`` and for calls with a kernel past the float32 limits of kernels/gaussheat.cuh
(``eval64``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cupy
import numpy as np

from ... import cuda_sources, planning
from .kernels import elementwise

N_FAST = 8
N_IBOX = 8
N_SUMMARY = 3
S_ERROR, S_NEEDS64, S_ROTATED = range(N_SUMMARY)
NO_ERROR = np.iinfo(np.int64).max

# Bytes per kernel of the plan's device tables (params, fast, ibox, tile counts and prefix, summary,
# count sums) and of host kernels' one upload (8 float64 columns and the radii), and per tile-list entry
# (keys, ids, argsort's order and its scratch, sorted ids).
PLAN_BYTES_PER_KERNEL = 8 * planning.N_PARAMS + 4 * N_FAST + 4 * N_IBOX + 8 + 8 + 8 * N_SUMMARY + 8 + 8 * 9
ENTRY_BYTES = 4 + 4 + 8 + (4 + 8) * 2 + 4
# Dense path: average box coverage of the image (tile entries / (kernels x tiles)) at least this,
# and at most this many kernels (the product's cost grows with every kernel, the tile path's not).
DENSE_MIN_COVERAGE = 0.25
DENSE_MAX_KERNELS = 4096


@dataclass(eq=False, slots=True)
class DevicePlan:
    """What :func:`gaussheat_gpu.backends.cupy.render` evaluates: tables on the device and the path.

    Attributes mirror :class:`gaussheat_gpu.planning.Plan` where they mean the same thing (``grid``,
    ``combine``, ``normalize``, ``dtype``, ``accumulate``); tables hold one row per caller's kernel,
    kernels without a pixel in the image having empty boxes and no tile entries.
    """

    grid: object
    combine: str
    normalize: str
    dtype: np.dtype
    accumulate: bool
    n_kernels: int
    params: object  # (N, N_PARAMS) float64
    fast: object  # (N, N_FAST) float32 (a placeholder when eval64 is always taken)
    ibox: object  # (N, N_IBOX) int32
    ends: object  # (N,) int64: inclusive prefix of tile_counts
    tile_counts: object  # (N,) int64
    count_sums: object  # (N,) float64 in count mode, else a placeholder
    n_entries: int
    path: str  # "dense", "tiles" or "empty"
    eval64: bool
    rotated: bool  # a kept kernel has B != 0

    @property
    def tile_rows(self) -> int:
        return -(-self.grid.height // cuda_sources.TILE)

    @property
    def tile_cols(self) -> int:
        return -(-self.grid.width // cuda_sources.TILE)

    @property
    def n_tiles(self) -> int:
        return self.grid.n_images * self.tile_rows * self.tile_cols


def make_plan(kernels, grid, *, combine="sum", normalize="pdf", truncate=4.0, dtype=np.float32,
              accumulate=False) -> DevicePlan:
    """Plan ``kernels`` on the current device (see the module docstring).

    Parameters
    ----------
    kernels : Kernels
        On the host (uploaded here in one copy) or on the current device.
    grid : gaussheat_gpu.planning.Grid
    combine, normalize, truncate, dtype, accumulate
        As in :func:`gaussheat_gpu.render`.

    Returns
    -------
    DevicePlan

    Raises
    ------
    ValueError
        As :func:`gaussheat_gpu.planning.make_plan`, and past the int32 tile keys and offsets.
    """
    planning.check_modes(combine, normalize)
    n = len(kernels)
    truncate = planning.check_truncate(truncate, n)
    dtype = np.dtype(dtype)
    planning.check_ranges(kernels, grid, normalize, dtype, kernels.xp)
    tile_rows, tile_cols = _check_tiles(grid)
    params = cupy.empty((n, planning.N_PARAMS), dtype=cupy.float64)
    fast = cupy.empty((n, N_FAST), dtype=cupy.float32)
    ibox = cupy.empty((n, N_IBOX), dtype=cupy.int32)
    tiles = cupy.empty(n, dtype=cupy.int64)
    summary = cupy.empty((n, N_SUMMARY), dtype=cupy.int64)
    stats = cupy.empty(n + N_SUMMARY, dtype=cupy.int64)  # tile-count prefix, then the reduced summary
    count_sums = cupy.empty(n if normalize == "count" else 1, dtype=cupy.float64)
    if n == 0:
        return DevicePlan(grid, combine, normalize, dtype, bool(accumulate), 0, params, fast, ibox, stats, tiles,
                          count_sums, n_entries=0, path="empty", eval64=False, rotated=False)

    columns, trig_given = _device_columns(kernels, truncate)
    elementwise(cuda_sources.PLAN_KERNELS)(
        *columns, trig_given, grid.x0, grid.dx, grid.y0, grid.dy, grid.height, grid.width, grid.n_images,
        tile_rows, tile_cols, planning.COMBINE_CODES[combine], planning.NORMALIZE_CODES[normalize],
        params, fast, ibox, tiles, summary, count_sums, size=n)
    cupy.cumsum(tiles, out=stats[:n])
    cupy.min(summary, axis=0, out=stats[n:])
    n_entries, error, needs64, rotated = (int(v) for v in stats[n - 1:].get())  # the one synchronisation

    if error != NO_ERROR:
        _raise_for_error(kernels, grid, combine, normalize, error // n, error % n, params, ibox)
    eval64 = dtype == np.float64 or normalize == "integral" or needs64 < 0
    dense = (n_entries > 0 and rotated == 0 and combine == "sum" and normalize != "integral"
             and grid.n_images == 1 and not accumulate and (dtype == np.float64 or needs64 == 0)
             and n <= DENSE_MAX_KERNELS and n_entries >= DENSE_MIN_COVERAGE * n * tile_rows * tile_cols)
    if dense:
        path = "dense"
    elif n_entries:
        _check_entries(n_entries)
        path = "tiles"
    else:
        path = "empty"
    return DevicePlan(grid, combine, normalize, dtype, bool(accumulate), n, params, fast, ibox, stats[:n], tiles,
                      count_sums, n_entries=n_entries, path=path, eval64=eval64, rotated=rotated < 0)


def plan_from_rows(plan) -> DevicePlan:
    """A :class:`DevicePlan` of a plan made on the host (:class:`gaussheat_gpu.planning.Plan`), such as a
    window of a larger grid's plan: its rows are uploaded as they are (boxes and coefficients decided
    there, so seams between windows stay exact) and evaluated in float64 on the tile path.

    Raises
    ------
    ValueError
        A ``count`` plan: its normalisers must be folded in first
        (:func:`gaussheat_gpu.planning.fix_count_normaliser`).
    """
    if plan.normalize == "count":
        raise ValueError("a host plan with normalize='count' must have its normalisers folded in first "
                         "(planning.fix_count_normaliser)")
    grid, n = plan.grid, plan.n_kernels
    _check_tiles(grid)
    params = cupy.asarray(plan.params, dtype=cupy.float64)
    boxes = cupy.asarray(plan.boxes, dtype=cupy.int64)
    ibox = cupy.empty((n, N_IBOX), dtype=cupy.int32)
    tiles = cupy.empty(n, dtype=cupy.int64)
    ends = cupy.empty(n, dtype=cupy.int64)
    n_entries = 0
    if n:
        elementwise(cuda_sources.PLAN_ROWS)(boxes, ibox, tiles, size=n)
        cupy.cumsum(tiles, out=ends)
        n_entries = int(ends[-1].get())  # the one synchronisation
    _check_entries(n_entries)
    return DevicePlan(grid, plan.combine, plan.normalize, np.dtype(plan.dtype), plan.accumulate, n, params,
                      cupy.empty(1, dtype=cupy.float32), ibox, ends, tiles, cupy.empty(1, dtype=cupy.float64),
                      n_entries=n_entries, path="tiles" if n_entries else "empty", eval64=True,
                      rotated=not plan.axis_aligned)


def bin_tiles(plan: DevicePlan):
    """The CSR list of kernels per tile (tiles ordered image, tile row, tile column; kernels in the
    caller's order within a tile), built by four launches on the device.

    Returns
    -------
    offsets : (n_tiles + 1,) int32 cupy array
    kernel_ids : (n_entries,) int32 cupy array
    """
    n, total = plan.n_kernels, plan.n_entries
    count_mode = plan.normalize == "count"
    if count_mode and plan.rotated:
        lanes = cupy.empty(n * cuda_sources.COUNT_LANES_PER_KERNEL, dtype=cupy.float64)
        elementwise(cuda_sources.COUNT_LANES)(plan.params, plan.ibox, lanes)
    else:
        lanes = plan.count_sums  # never read
    keys = cupy.empty(total, dtype=cupy.int32)
    ids = cupy.empty(total, dtype=cupy.int32)
    elementwise(cuda_sources.BIN_KERNELS)(
        plan.ends, plan.tile_counts, plan.ibox, plan.tile_rows, plan.tile_cols, lanes, int(count_mode),
        plan.params, keys, ids, plan.fast, plan.count_sums, size=n)
    order = cupy.argsort(keys)  # stable: kernels keep the caller's order within a tile
    kernel_ids = cupy.empty(total, dtype=cupy.int32)
    offsets = cupy.empty(plan.n_tiles + 1, dtype=cupy.int32)
    elementwise(cuda_sources.FINISH_BINS)(order, keys, ids, total, plan.n_tiles, kernel_ids, offsets, size=total)
    return offsets, kernel_ids


def _device_columns(kernels, truncate):
    """The plan kernel's column arguments (x, y, sigma_x, sigma_y, cos, sin, amplitude, image, truncate,
    per_kernel_truncate, truncate_value) and ``trig_given``.

    Host kernels travel in ONE copy: the columns packed row-wise, with cos and sin of theta computed
    here by NumPy (so boxes are bit for bit the host backends'), the image index as int64 bits and
    per-kernel truncation radii. Device kernels stay where they are; their cos and sin are taken on
    the device.
    """
    per_kernel = np.ndim(truncate) == 1
    scalar = 0.0 if per_kernel else float(truncate)
    if kernels.xp is np:
        n = len(kernels)
        packed = np.empty((8 + per_kernel, n), dtype=np.float64)
        for row, name in enumerate(("x", "y", "sigma_x", "sigma_y")):
            packed[row] = getattr(kernels, name)
        np.cos(kernels.theta, out=packed[4])
        np.sin(kernels.theta, out=packed[5])
        packed[6] = kernels.amplitude
        packed.view(np.int64)[7] = kernels.image
        if per_kernel:
            packed[8] = truncate
        device = cupy.asarray(packed)
        radius = device[8] if per_kernel else device[0]
        return (*device[:7], device[7].view(cupy.int64), radius, int(per_kernel), scalar), 1
    k = kernels
    radius = cupy.asarray(truncate, dtype=cupy.float64) if per_kernel else k.x
    return (k.x, k.y, k.sigma_x, k.sigma_y, k.theta, k.theta, k.amplitude, k.image, radius, int(per_kernel), scalar), 0


def _check_tiles(grid):
    """(tile rows, tile columns) of ``grid``; ``ValueError`` past the int32 tile keys."""
    tile_rows, tile_cols = -(-grid.height // cuda_sources.TILE), -(-grid.width // cuda_sources.TILE)
    if grid.n_images * tile_rows * tile_cols >= 2**31:
        raise ValueError(f"shape = {grid.shape} has {grid.n_images * tile_rows * tile_cols} tiles of "
                         f"{cuda_sources.TILE}x{cuda_sources.TILE} pixels; the cupy backend takes at most 2**31 - 1")
    return tile_rows, tile_cols


def _check_entries(n_entries):
    """``ValueError`` when a tile list of ``n_entries`` is past the int32 offsets."""
    if n_entries >= 2**31:
        raise ValueError(f"the kernels' boxes meet {n_entries} tiles in all; the cupy backend takes at most "
                         f"2**31 - 1: render in parts (extent=, or fewer kernels per call)")


def _raise_for_error(kernels, grid, combine, normalize, check, k, params, ibox):
    """Raise planning.py's error for the first failed check (read back from the device only now)."""
    if check != planning.CHECK_ROTATED_REACH:
        planning.raise_for_bad_kernel(kernels, grid, combine, normalize, check=check, k=k)
    p, box = params[k].get(), ibox[k].get().astype(np.float64)
    a, b, c = p[planning.P_A], p[planning.P_B], p[planning.P_C]
    lam = 0.5 * (a + c) + math.sqrt((0.5 * (a - c)) ** 2 + b * b)
    du = max(abs(box[planning.B_COL0] - p[planning.P_CX]), abs(box[planning.B_COL1] - p[planning.P_CX]))
    dw = max(abs(box[planning.B_ROW0] - p[planning.P_CY]), abs(box[planning.B_ROW1] - p[planning.P_CY]))
    planning.raise_rotated_reach(kernels, k, math.sqrt((du * du + dw * dw) * lam))


def free_memory() -> int:
    """Bytes a new allocation may take on the current device.

    The device's free memory plus what CuPy's default memory pool holds unused: CuPy returns those
    blocks to the device and retries when an allocation would otherwise fail.
    """
    free = int(cupy.cuda.Device().mem_info[0])
    return free + int(cupy.get_default_memory_pool().free_bytes())


def call_bytes(plan: DevicePlan, exact=False) -> int:
    """Peak device bytes of :func:`~gaussheat_gpu.backends.cupy.render` beyond ``out`` and the plan
    (see :mod:`gaussheat_gpu.backends`).

    The dense path's row and column factors; the tile path's tile list (``ENTRY_BYTES`` per entry, the
    CSR offsets per tile) and, for ``count`` with rotated kernels, the count lanes; nothing for an
    empty plan. The plan holds its entry count already, so the figure is exact and costs O(1).

    Parameters
    ----------
    plan : DevicePlan
    exact : bool, default False
        Accepted for the backend interface; the figure is exact either way.

    Returns
    -------
    int
    """
    if plan.path == "dense":
        return plan.n_kernels * (plan.grid.height + plan.grid.width) * plan.dtype.itemsize
    if plan.path == "empty":
        return 0
    lanes = plan.n_kernels * cuda_sources.COUNT_LANES_PER_KERNEL * 8 if plan.normalize == "count" and plan.rotated else 0
    return plan.n_entries * ENTRY_BYTES + 4 * (plan.n_tiles + 1) + lanes
