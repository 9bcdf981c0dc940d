"""The pass over row bands: kernels binned per band, prepared once, each band rendered.

1. :func:`bin_kernels` (serial) lists the kernels of each row band, 64 to 256 rows of one image,
   as a CSR list (a counting sort: cheaper than NumPy's argsort for 100k kernels), and lays out
   one slot per column of every axis-aligned kernel. A small plan of one image instead lists
   every kernel in every band, with a slot of the image's width each (:func:`every_band`, made in
   Python from the sizes; the renderer skips the bands a kernel misses): the seed's first call
   then compiles no binning at all.
2. :func:`render_task` prepares a chunk of kernels, or renders one (image, band) tile: zeroed
   unless accumulating (or written whole by its first axis-aligned kernels, :mod:`.bands`), then
   every kernel of the band's list combined in. It holds all the code of a band render.
3. :func:`render_bands` runs its tasks on Numba's threads: every chunk of kernels prepared, then
   every tile rendered, calling :func:`render_task` by address (:mod:`.calls`), so that the
   renderer compiles once and the function that spreads it over the threads in a fraction of a
   second.

Which kinds of kernel a plan holds is decided before the call: ``axis`` and ``rotated`` are each
``True`` or ``None``, and Numba drops the code under ``if axis is not None`` (or ``rotated``) before
compiling when that argument is ``None``. A plan of axis-aligned kernels therefore never compiles
the rotated visits (:mod:`.rotated`), nor a plan of rotated ones the separable rows: each of the
three specialisations compiles only what it runs.
Modes (combine, normalize, accumulate) stay run-time switches; the output dtype is a type.
"""

from __future__ import annotations

import functools

import numpy as np

from ...planning import B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, P_B
from .bands import prepare_separable, separable_kernel, set_pair_rows, spans_band, zero_row
from .cache import jit
from .calls import parallel_calls
from .factors import kernel_params, larger, smaller
from .rotated import combine_exact_row, prepare_rotated, rotated_block

INFO_COLUMNS = 5  # what the preparation keeps per kernel (prepare_separable, prepare_rotated)
# Most entries a small plan's lists and column slots may hold (kernels times bands, plus kernels
# times columns) for :func:`every_band` to make them.
EVERY_BAND_ENTRIES = 1 << 16


@functools.lru_cache(maxsize=8)  # at most 8 x 1 MiB kept
def every_band(n_kernels, n_bands, width):
    """:func:`bin_kernels`' results for a plan of one image, made from its sizes alone.

    Every kernel is listed in every band (:func:`render_task` skips a listed kernel in the bands
    its box misses, and combines the others in the same order), and every kernel owns a slot of
    ``width`` column factors. Made with NumPy and kept for the next call of the same sizes, so
    that a small plan's first call does not compile :func:`bin_kernels`, and its later calls do
    not run it.

    Parameters
    ----------
    n_kernels, n_bands, width : int
        The plan's kernels, the image's row bands and its columns.

    Returns
    -------
    offsets, kernel_ids, col_offsets : numpy.ndarray
        As :func:`bin_kernels` returns them, shared between calls: read them only.

    Examples
    --------
    >>> offsets, kernel_ids, col_offsets = every_band(2, 3, 10)
    >>> offsets.tolist(), kernel_ids.tolist(), col_offsets.tolist()
    ([0, 2, 4, 6], [0, 1, 0, 1, 0, 1], [0, 10, 20])
    """
    return (np.arange(n_bands + 1, dtype=np.int64) * n_kernels, np.tile(np.arange(n_kernels, dtype=np.int64), n_bands),
            np.arange(n_kernels + 1, dtype=np.int64) * width)


@jit(entry=True)
def bin_kernels(boxes, params, n_images, height, band_height):
    """CSR list of kernels per (image, band), plan order kept, and column-factor slots.

    Returns
    -------
    offsets : (n_images * n_bands + 1,) int64
    kernel_ids : int64, kernels of band ``t`` at ``offsets[t]:offsets[t + 1]``
    col_offsets : (M + 1,) int64, axis-aligned kernel ``k`` owns ``col_offsets[k]:col_offsets[k + 1]``
        (``col_offsets[-1] > 0``: the plan holds an axis-aligned kernel)
    """
    n_kernels = boxes.shape[0]
    n_bands = (height + band_height - 1) // band_height
    n_tiles = n_images * n_bands
    counts = np.empty(n_tiles + 1, dtype=np.int64)  # np.zeros would be one more function to compile
    for t in range(n_tiles + 1):
        counts[t] = 0
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


@jit(by_address=True)
def render_task(task, kernel_chunk, params, boxes, offsets, kernel_ids, col_offsets, column_factors, info, images,
                band_height, combine, normalize, accumulate, axis, rotated):
    """Task ``task`` of a band render: with ``kernel_chunk > 0``, prepare the ``task``-th chunk of
    ``kernel_chunk`` kernels; else render (image, band) tile ``task``; see the module docstring.
    Returns 0.

    The one function of a band render that holds its code: :func:`render_bands` calls it by address
    from Numba's threads (:mod:`.calls`). Called so, its arrays carry no reference count: views
    of them cost no atomic update (called from Python, W2's two bands took 1.3 us more, 6%).
    Numba drops the code under ``if x is not None`` where x is None, but compiles both sides of a
    test on an argument that is not None: so each kind's code sits under its own argument.
    """
    if kernel_chunk > 0:
        first_kernel, first_tile, last_tile = task * kernel_chunk, np.int64(0), np.int64(0)
        last_kernel = smaller(params.shape[0], first_kernel + kernel_chunk)
    else:
        first_kernel, last_kernel, first_tile, last_tile = np.int64(0), np.int64(0), task, task + 1
    n_images, height, width = images.shape
    n_bands = (height + band_height - 1) // band_height
    tiny = 2.0 ** -126 if images.itemsize == 4 else 2.0 ** -1022  # the output dtype's smallest normal number
    for k in range(first_kernel, last_kernel):
        if axis is not None:
            if rotated is None or params[k, P_B] == 0.0:
                prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info)
        if rotated is not None:
            if axis is None or params[k, P_B] != 0.0:
                prepare_rotated(params, boxes, k, normalize, info, tiny)
    for tile in range(first_tile, last_tile):
        # Rows band_first..band_last of one image: zeroed unless accumulating, then every kernel of
        # the band's list combined in.
        image = images[tile // n_bands]
        band_first = (tile % n_bands) * band_height
        band_last = smaller(height, band_first + band_height) - 1
        band_kernels = kernel_ids[offsets[tile]:offsets[tile + 1]]
        # Unless accumulating, a band whose first kernel is axis-aligned and spans all its rows is
        # written by that kernel (combine(0, v), zeros around it) in one pass, not zeroed and then
        # combined: one pass over the rows less (W1: every band). When the second kernel qualifies
        # too, both are written in one pass (W1: a third less work).
        overwrite = paired = False
        if axis is not None:
            if not accumulate and band_kernels.size > 0:
                overwrite = spans_band(params, boxes, info, band_kernels[0], band_first, band_last)
                paired = overwrite and band_kernels.size > 1 and spans_band(params, boxes, info, band_kernels[1],
                                                                          band_first, band_last)
            if overwrite:
                set_pair_rows(image, params, boxes, band_kernels[0], band_kernels[1] if paired else np.int64(-1),
                              col_offsets, column_factors, info, band_first, band_last, combine, normalize, tiny)
        if not accumulate and not overwrite:
            for r in range(band_first, band_last + 1):
                zero_row(image[r])
        if rotated is not None:
            column = np.empty(width)  # scratch of rotated_block
            down = np.empty(width)
            spare = np.empty(width, dtype=image.dtype)  # the odd last row of a rotated visit
            zero_row(spare)
        for j in range(2 if paired else 1 if overwrite else 0, band_kernels.size):
            k = band_kernels[j]
            r_first = larger(boxes[k, B_ROW0], band_first)
            r_last = smaller(boxes[k, B_ROW1], band_last)
            if r_first > r_last:  # listed in every band (a small plan's lists), but not in this one
                continue
            if rotated is None:
                separable = True
            elif axis is None:
                separable = False
            else:
                separable = params[k, P_B] == 0.0
            # Each kind's code once, and only in the specialisations that have it.
            if separable:
                if axis is not None:
                    separable_kernel(image, params, boxes, k, col_offsets, column_factors, info, r_first, r_last,
                                     combine, normalize, tiny)
            elif rotated is not None:
                # Written here, not in a function of its own: passing the arrays to a call cost W6 ~25%
                # (their reference counts are updated on every call).
                p = kernel_params(params, k)
                c0, c1 = boxes[k, B_COL0], boxes[k, B_COL1]
                if info[k, 1] > 0.0:  # the recurrences are safe
                    rotated_block(image, p, r_first, r_last, c0, c1, info[k, 0], (info[k, 2], info[k, 3], info[k, 4]),
                                  combine, info[k, 1], column, down, spare)
                else:
                    for r in range(r_first, r_last + 1):
                        combine_exact_row(image[r], p, r, c0, c1, info[k, 0], combine, -info[k, 1])
    return 0


@jit(entry=True)
def render_bands(address, kernel_chunk, params, boxes, offsets, kernel_ids, col_offsets, column_factors, info, images,
                 band_height, combine, normalize, accumulate, axis, rotated):
    """:func:`render_task` at ``address`` (:func:`.calls.address`) on Numba's threads: every kernel
    prepared (chunks of ``kernel_chunk`` kernels a task), then every (image, band) tile rendered
    (one a task).

    No parallel loop of Numba's own (:func:`.calls.parallel_calls` schedules the tasks as one
    would): it compiles in a fraction of a second whatever the renderer holds. One entry point for
    both passes, not :func:`.calls.run_tasks` called twice, which would unbox these arguments twice
    on every render (all of W1's takes ~45 us). ``column_factors`` and ``info`` come sized for the
    plan (allocating them here would compile NumPy's allocation for this function too).
    """
    shared = (params, boxes, offsets, kernel_ids, col_offsets, column_factors, info, images, band_height, combine,
              normalize, accumulate, axis, rotated)
    parallel_calls(address, (params.shape[0] + kernel_chunk - 1) // kernel_chunk, (kernel_chunk, *shared))
    parallel_calls(address, offsets.size - 1, (np.int64(0), *shared))
