"""The planner's formulas compiled for host kernels: what ``make_plan(compiled=True)`` runs.

:mod:`gaussheat_gpu.planning` writes each per-kernel formula once (``kernel_coefficients``,
``support_range``, ``por_peak_is_bad``) and evaluates it on arrays for NumPy and CuPy. Here Numba
compiles the same functions (as helpers of :func:`.cache.jit`) into one loop over the kernels, which gives the
array code's bits: plain IEEE operations, no fused multiply-add. A call with few kernels costs ~60
NumPy calls on arrays (~30 us) and takes ~3 us here. With 100k rotated kernels (W6) the array
code's strided column writes and temporaries cost ~10 ms; one loop on one thread after NumPy's
cos/sin took 3.5 ms (2.0 of them cos/sin), and chunks of ``CHUNK`` kernels on the VM's two threads
with cos/sin inside take 1.7 ms.

cos/sin come from the C library (what ``math.cos`` compiles to), inside the loop, wherever that
library gives NumPy's bits on a probe of angles (:func:`libm_trig_matches_numpy`); elsewhere
NumPy computes them first and the loop reads them.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...planning import (B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, N_BOX, N_PARAMS, NORMALIZE_CODES, P_A, P_B,
                        P_C, P_CX, P_CY, P_SCALE, P_SHIFT_COL, P_SHIFT_ROW, P_SIGMA_COL, P_SIGMA_ROW, _geometry,
                        _Tables, kernel_coefficients, por_peak_is_bad, support_range)
from . import calls
from .cache import jit
from .factors import smaller

# The shared formulas, compiled (for the argument types of their calls here, once each).
_kernel_coefficients = jit(forceinline=True)(kernel_coefficients)
_support_range = jit(forceinline=True)(support_range)
_por_peak_is_bad = jit(forceinline=True)(por_peak_is_bad)

CHUNK = 4096  # kernels per parallel task; plans of at most this many kernels run on the calling thread
WORKSPACE_MIN_KERNELS = 512  # fewer kernels' tables (< 60 KiB) are cheaper to allocate afresh
PDF = NORMALIZE_CODES["pdf"]
# Where a kernel's cos/sin come from.
NO_ROTATION, LIBM_TRIG, GIVEN_TRIG = range(3)


def plan_tables(kernels, grid, truncate, normalize, workspace=None):
    """The plan tables of ``kernels``: what ``planning._array_tables`` computes, in one compiled pass.

    Parameters
    ----------
    kernels : Kernels
        Validated host kernels.
    grid : gaussheat_gpu.planning.Grid
    truncate : float or ndarray
        Support radius in sigmas (``inf``: whole image), or a float64 array of one per kernel.
    normalize : str
        One of ``planning.NORMALIZES``.
    workspace : gaussheat_gpu._workspace.Workspace, optional
        Where to put the tables of ``WORKSPACE_MIN_KERNELS`` kernels or more; default (and below
        that) fresh arrays.

    Returns
    -------
    planning._Tables
        Rows of the kernels with a pixel in the image, packed in the caller's order, and the first
        kernel each check caught (-1: none); every check is run.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> from gaussheat_gpu.planning import make_grid
    >>> tables = plan_tables(gh.Kernels(x=[2.0, 50.0], y=[2.0, 2.0], sigma_x=1.0), make_grid((5, 5)), 3.0, "pdf")
    >>> tables.boxes.tolist(), tables.kernel_index.tolist(), tables.first_bad_image
    ([[0, 4, 0, 4, 0]], [0], -1)
    """
    arrays = kernels.as_dict()  # one dict copy costs less than six attribute look-ups
    theta = arrays["theta"]
    trig = (_NO_TRIG, _NO_TRIG)
    if not np.count_nonzero(theta):
        source = NO_ROTATION
    elif libm_trig_matches_numpy():
        source = LIBM_TRIG
    else:
        source = GIVEN_TRIG
        trig = (np.cos(theta), np.sin(theta))
    inputs = ((arrays["x"], arrays["y"], arrays["sigma_x"], arrays["sigma_y"], arrays["amplitude"]),
              arrays["image"], theta, trig, source)
    # A per-kernel truncate travels as an array, a single one as a float beside an empty array: one
    # compiled signature for both.
    truncates = truncate if isinstance(truncate, np.ndarray) else _NO_TRUNCATES
    setup = (_geometry(grid), (grid.n_images, grid.height, grid.width),
             (float(truncate) if truncates is _NO_TRUNCATES else math.inf, truncates), NORMALIZE_CODES[normalize])
    n = theta.size
    if workspace is None or n < WORKSPACE_MIN_KERNELS:
        tables = (np.empty((n, N_PARAMS)), np.empty((n, N_BOX), dtype=np.int64), np.empty(n, dtype=np.int64))
    else:
        tables = (workspace.empty("params", (n, N_PARAMS), np.float64),
                  workspace.empty("boxes", (n, N_BOX), np.int64),
                  workspace.empty("kernel_index", (n,), np.int64))
    if n <= CHUNK:
        kept, checks, any_rotated = plan_chunk(inputs, setup, tables, 0, n)
        params, boxes, kernel_index = tables[0][:kept], tables[1][:kept], tables[2][:kept]
    else:
        (params, boxes, kernel_index), checks, any_rotated = plan_chunks(inputs, setup, tables)
    return _Tables(params, boxes, kernel_index, not any_rotated, *checks)


_NO_TRIG = np.empty(0)
_NO_TRUNCATES = np.empty(0)


@jit(entry=True)
def plan_chunk(inputs, setup, tables, lo, hi):
    """Plan rows of kernels ``lo..hi-1``, packed into ``tables`` from row ``lo``: called from Python
    for a plan of at most ``CHUNK`` kernels, and by :func:`plan_task` for each chunk of a larger one.

    Returns the number of rows written, the first kernel each check caught (bad image index,
    rotated, outside por's range; -1: none) and whether a kept kernel is rotated.
    """
    (x, y, sigma_x, sigma_y, amplitude), image, theta, (cos_given, sin_given), source = inputs
    geometry, (n_images, height, width), (truncate, truncates), normalize_code = setup
    params, boxes, kernel_index = tables
    pdf = normalize_code == PDF
    first_bad_image = first_rotated = first_bad_por = -1
    row = lo
    any_rotated = False
    for k in range(lo, hi):
        if source == NO_ROTATION:
            cos, sin = 1.0, 0.0
        elif source == LIBM_TRIG:
            cos, sin = math.cos(theta[k]), math.sin(theta[k])
        else:
            cos, sin = cos_given[k], sin_given[k]
        cx, cy, a_coef, b_coef, c_coef, sigma_col, sigma_row, scale = _kernel_coefficients(
            x[k], y[k], sigma_x[k], sigma_y[k], cos, sin, amplitude[k], geometry, pdf)
        if first_bad_image < 0 and (image[k] < 0 or image[k] >= n_images):
            first_bad_image = k
        if first_rotated < 0 and b_coef != 0.0:
            first_rotated = k
        if first_bad_por < 0 and _por_peak_is_bad(scale, amplitude[k], normalize_code):
            first_bad_por = k
        t = truncates[k] if truncates.size else truncate
        col0, col1 = _support_range(cx, t * sigma_col, width)
        row0, row1 = _support_range(cy, t * sigma_row, height)
        if col0 > col1 or row0 > row1:
            continue
        # Element writes, not row views: a view costs two atomic reference-count updates on a
        # cache line every thread shares.
        params[row, P_CX] = cx
        params[row, P_CY] = cy
        params[row, P_A] = a_coef
        params[row, P_B] = b_coef
        params[row, P_C] = c_coef
        params[row, P_SIGMA_COL] = sigma_col
        params[row, P_SIGMA_ROW] = sigma_row
        params[row, P_SCALE] = scale
        params[row, P_SHIFT_COL] = 0.0
        params[row, P_SHIFT_ROW] = 0.0
        boxes[row, B_COL0] = np.int64(col0)
        boxes[row, B_COL1] = np.int64(col1)
        boxes[row, B_ROW0] = np.int64(row0)
        boxes[row, B_ROW1] = np.int64(row1)
        boxes[row, B_IMAGE] = image[k]
        kernel_index[row] = k
        any_rotated = any_rotated or b_coef != 0.0
        row += 1
    return row - lo, (first_bad_image, first_rotated, first_bad_por), any_rotated


@jit(by_address=True)
def plan_task(chunk, inputs, setup, tables, kept, firsts, rotated):
    """:func:`plan_chunk` of the ``chunk``-th ``CHUNK`` kernels, its results stored at ``[chunk]`` of
    ``kept``, ``firsts`` and ``rotated``: what :func:`plan_chunks` calls by address. Returns 0."""
    lo = chunk * CHUNK
    count, checks, any_rotated = plan_chunk(inputs, setup, tables, lo, smaller(inputs[2].size, lo + CHUNK))
    kept[chunk] = count
    firsts[chunk, 0], firsts[chunk, 1], firsts[chunk, 2] = checks
    rotated[chunk] = any_rotated
    return 0


def plan_chunks(inputs, setup, tables):
    """:func:`plan_task` over chunks of ``CHUNK`` kernels on Numba's threads (:func:`.calls.run`),
    then the kept rows packed.

    The planner's code is compiled once, in :func:`plan_task`; what follows the tasks is a few NumPy
    calls per chunk (a chunk is ``CHUNK`` kernels), not one more function to compile.
    """
    n = inputs[2].size
    n_chunks = (n + CHUNK - 1) // CHUNK
    kept = np.empty(n_chunks, dtype=np.int64)
    firsts = np.empty((n_chunks, 3), dtype=np.int64)
    rotated = np.empty(n_chunks, dtype=np.bool_)
    shared = (inputs, setup, tables, kept, firsts, rotated)
    calls.run(plan_task, n_chunks, shared)
    total = 0
    for chunk, count in enumerate(kept.tolist()):
        lo = chunk * CHUNK
        if total != lo:  # rows only move to lower indices; NumPy copies overlapping slices correctly
            for table in tables:
                table[total:total + count] = table[lo:lo + count]
        total += count
    # Each check's first kernel: that of the earliest chunk that caught one.
    caught = firsts >= 0
    checks = tuple(int(firsts[caught[:, j].argmax(), j]) if caught[:, j].any() else -1 for j in range(3))
    return tuple(table[:total] for table in tables), checks, bool(rotated.any())


@functools.cache
def libm_trig_matches_numpy() -> bool:
    """Whether the compiled loop's cos/sin give NumPy's bits on a probe of 20,000 angles.

    Both are the C library's on the machines measured so far (bit for bit on 3 million angles); a
    NumPy built with its own vectorised float64 cos/sin differs by an ulp on a good share of angles,
    which this probe catches, and the loop then reads NumPy's values instead.
    """
    rng = np.random.default_rng(0)
    angles = np.concatenate([np.linspace(-8.0, 8.0, 10_001), rng.uniform(-math.pi, math.pi, 9_000),
                             rng.uniform(-1e4, 1e4, 990), [0.0, -0.0, 1e-300, math.pi, -math.pi / 2, 1e10]])
    return bool(np.array_equal(_libm_cos_sin(angles), np.stack([np.cos(angles), np.sin(angles)])))


@jit(entry=True)
def _libm_cos_sin(angles):
    result = np.empty((2, angles.size))
    for i in range(angles.size):
        result[0, i] = math.cos(angles[i])
        result[1, i] = math.sin(angles[i])
    return result
