"""Chunked rendering on Dask: maps larger than memory, kernel sets larger than one host, Zarr output.

``render`` returns a lazy ``dask.array.Array`` equal to :func:`gaussheat_gpu.render` of the same
arguments. The kernels are planned on the whole grid (validation, coefficients, support boxes,
exactly as an in-memory call) and binned by their boxes into the output's chunks, so each chunk's
task carries only the kernels whose support meets that chunk (their columns). A task plans its
kernels again on the whole grid, which gives the same rows bit for bit, and renders its chunk as a
window of that plan (:func:`gaussheat_gpu.planning.window_plan`): the boxes stay the ones decided
on the whole grid, so seams select exactly the pixels an in-memory render selects.
``normalize="count"`` divides each kernel by its sum over its whole box, found once when the
kernel is first planned and sent with it (never the sum over the part a chunk sees).

Kernels may be a :class:`~gaussheat_gpu.Kernels` (or anything ``render`` takes), or a Dask
collection: a mapping of column names to 1-D Dask arrays (scalars broadcast), or a Dask DataFrame.
Those are planned partition by partition on the workers and stay there; only which chunks each
partition meets (a few integers per partition) comes back to the caller.

``to_zarr`` writes such a render to a Zarr store chunk by chunk, with a progress bar; a chunk is
marked done only after it is written, so an interrupted run leaves every completed chunk valid
and a second call with the same arguments renders only the rest.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import sys
import threading
from collections.abc import Mapping

import dask
import dask.array as da
import numpy as np
from dask.base import is_dask_collection, tokenize
from dask.highlevelgraph import HighLevelGraph

from . import backends
from ._progress import ProgressBar
from ._workspace import SCRATCH
from ._xp import to_host
from .api import _resolve_dtype, check_call_memory, check_plan_memory
from .backends.numpy_backend import box_sums
from .kernel_set import Kernels
from .planning import (B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, fix_count_normaliser, make_grid, make_plan,
                       tile_lists, window_plan)

__all__ = ["render", "to_zarr"]

# Numba's parallel kernels already use every core of a process; chunks of one process take turns
# (and Numba's "workqueue" threading layer must not be entered from two threads at once). The
# compiled planner (make_plan(compiled=True), for every backend) is parallel code too.
_NUMBA_LOCK = threading.Lock()
# A task's plan and its window live only until its chunk is rendered: their tables reuse the
# thread's scratch buffers (_workspace.SCRATCH) instead of fresh memory in every task. Dask's workers
# return freed memory to the system at once (distributed sets MALLOC_TRIM_THRESHOLD_=65536), so every
# fresh array past 128 KiB would be page-faulted again.


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What every chunk task needs besides its kernels."""

    grid: object  # planning.Grid of the whole output
    combine: str
    normalize: str
    truncate: object  # one for every kernel (a number or None); a per-kernel truncate travels with the kernels
    dtype: np.dtype
    backend: str
    bounds: tuple  # per axis, the chunk edges (0, ..., size)

    @property
    def numblocks(self):
        return tuple(len(edges) - 1 for edges in self.bounds)

    def window(self, block):
        """Half-open index ranges of chunk ``block`` (flat index), one per axis."""
        index = np.unravel_index(block, self.numblocks)
        return tuple((int(edges[i]), int(edges[i + 1])) for edges, i in zip(self.bounds, index))


@dataclasses.dataclass(frozen=True)
class _Piece:
    """Some kernels as a chunk task receives them: their validated columns (a value every kernel
    shares travels as one scalar), and what planning them needs besides the grid.

    A task plans its kernels again on the whole grid (the same boxes and coefficients, bit for bit:
    planning is per kernel), which costs less than carrying plan rows: 10 float64 parameters and 5
    int64 box fields per kernel, against 3 float64 columns for isotropic kernels.
    """

    n: int
    columns: dict  # Kernels field -> 1-D array of n, or a scalar; no "sigma_y" where it equals "sigma_x"
    truncate: object = None  # (n,) float64 where each kernel has its own
    box_sums: object = None  # (n,) float64: each kernel's count normaliser over its whole box


def render(kernels, shape, *, chunks, combine="sum", normalize="pdf", truncate=4.0, extent=None,
           dtype=None, backend="auto"):
    """Render a heatmap as a lazy Dask array, chunk by chunk.

    Parameters
    ----------
    kernels : Kernels, mapping / DataFrame of columns, or a Dask collection
        As :func:`gaussheat_gpu.render` takes them, or a mapping of column names to 1-D Dask arrays
        (and scalars), or a Dask DataFrame: these are planned on the workers, partition by
        partition, and never gathered onto one machine.
    shape : tuple of int
        ``(H, W)`` or ``(..., H, W)``.
    chunks : int, tuple or str
        Chunks of the output, as ``dask.array`` takes them (e.g. ``4096`` or ``(1, 2048, 2048)``).
    combine, normalize, truncate, extent, dtype
        As in :func:`gaussheat_gpu.render`.
    backend : {"auto", "cupy", "numba", "numpy"}
        Backend of every chunk, resolved here (``"auto"``: ``GAUSSHEAT_BACKEND``, else the best one
        that runs on this machine). CuPy chunks are CuPy arrays, rendered from their window of the
        whole-grid plan (``plan_from_rows``: float64 evaluation).

    Returns
    -------
    dask.array.Array
        Of ``shape`` and ``dtype``; every chunk equals the same slice of an in-memory render.

    Raises
    ------
    ValueError, TypeError
        Bad arguments or (host kernels) bad kernels, as :func:`gaussheat_gpu.render` raises them.
        Bad kernels in a Dask collection raise when ``render`` is called, naming the partition and index.
    gaussheat_gpu.BackendUnavailable
        The backend cannot run here.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> import gaussheat_gpu.dask as ghd
    >>> k = gh.Kernels(x=[256, 260], y=[256, 250], sigma_x=[20, 40], sigma_y=[20, 80])
    >>> heat = ghd.render(k, (512, 512), chunks=256, combine="por", backend="numpy")
    >>> heat.chunks
    ((256, 256), (256, 256))
    >>> float(abs(heat.compute() - gh.render(k, (512, 512), combine="por", backend="numpy")).max())
    0.0
    """
    per_kernel_truncate = truncate is not None and np.ndim(truncate) > 0
    spec, meta = _make_spec(shape, chunks, combine, normalize, None if per_kernel_truncate else truncate, extent,
                            dtype, backend)
    options = dict(combine=combine, normalize=normalize, truncate=truncate)
    # bad modes or truncate raise here, not in a task
    make_plan(Kernels([], [], 1.0), spec.grid, combine=combine, normalize=normalize, truncate=spec.truncate)
    name = "gaussheat-render-" + tokenize(_token_of(kernels, spec.grid), spec, options)
    if _is_collection(kernels):
        if per_kernel_truncate:
            raise TypeError("truncate: one value per kernel needs host kernels (a Kernels), not a Dask collection")
        pieces, graph, dependencies = _collection_pieces(kernels, spec, options, name)
    else:
        pieces, graph, dependencies = _host_pieces(kernels, spec, options), {}, []
    graph |= {(name, *np.unravel_index(block, spec.numblocks)): (_render_block, pieces.get(block, []), block, spec)
             for block in range(math.prod(spec.numblocks))}
    chunk_sizes = tuple(tuple(int(n) for n in np.diff(edges)) for edges in spec.bounds)
    return da.Array(HighLevelGraph.from_collections(name, graph, dependencies=dependencies), name, chunk_sizes,
                    meta=meta)


def _make_spec(shape, chunks, combine, normalize, truncate, extent, dtype, backend):
    grid = make_grid(shape, extent)
    dtype = _resolve_dtype(dtype, None)
    module = backends.get(backend)
    name = backends.name_of(module)
    _check_chunks(chunks)
    block_chunks = da.core.normalize_chunks(chunks, grid.shape, dtype=dtype)
    bounds = tuple(np.concatenate(([0], np.cumsum(c))).astype(np.int64) for c in block_chunks)
    spec = _Spec(grid, combine, normalize, truncate, dtype, name, bounds)
    return spec, module.xp.empty((0,) * len(grid.shape), dtype=dtype)


def _check_chunks(chunks):
    """Refuse chunk sizes Dask cannot split by (0, or negative other than Dask's -1 for "whole axis")."""
    sizes = []
    for item in chunks if isinstance(chunks, (tuple, list)) else (chunks,):
        sizes.extend(item if isinstance(item, (tuple, list)) else (item,))
    for size in sizes:
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and (size == 0 or size < -1):
            raise ValueError(f"chunks = {chunks!r}: chunk sizes must be positive (or -1 for a whole axis)")


def _is_collection(kernels):
    if is_dask_collection(kernels):
        return True
    return isinstance(kernels, Mapping) and any(is_dask_collection(v) for v in kernels.values())


def _token_of(kernels, grid):
    """What names ``kernels`` in the render's token: the columns of a ``Kernels`` as tasks get them
    (a shared value as one scalar: less to hash), anything else as given."""
    if isinstance(kernels, Kernels):
        return _columns(kernels.to(np), grid)
    return kernels


# -- planning and binning -----------------------------------------------------------------------

def _partition(kernels, spec, options, where=""):
    """``{chunk (flat index): _Piece}`` of the chunks that ``kernels`` meet, kernels in order.

    The kernels are planned once on the whole grid (validation, boxes, ``count`` normalisers) and
    binned by their boxes; each chunk's piece holds the columns of the kernels whose box meets it.
    """
    try:
        if not isinstance(kernels, Kernels):
            kernels = Kernels.from_columns(kernels)
        kernels = kernels.to(np)
        with _NUMBA_LOCK:
            plan = make_plan(kernels, spec.grid, dtype=spec.dtype, compiled=True, **options)
    except (ValueError, TypeError) as exc:
        if not where:
            raise
        raise type(exc)(f"{where}: {exc}") from None
    offsets, ids = _chunk_lists(plan.boxes, spec)
    # kernel indices, chunk by chunk (plan rows are kernel indices where every kernel has a pixel)
    rows = ids if plan.n_kernels == len(kernels) else np.take(plan.kernel_index, ids)
    columns = {name: values if np.ndim(values) == 0 else np.take(values, rows)
               for name, values in _columns(kernels, spec.grid).items()}
    truncate = options["truncate"]
    truncate = np.take(np.asarray(truncate, dtype=np.float64), rows) if np.ndim(truncate) else None
    sums = np.take(box_sums(plan), ids) if plan.normalize == "count" else None

    def part(values, lo, hi):
        return values if values is None or np.ndim(values) == 0 else values[lo:hi]  # views of one gather

    return {int(block): _Piece(int(offsets[block + 1] - offsets[block]),
                               {name: part(v, offsets[block], offsets[block + 1]) for name, v in columns.items()},
                               part(truncate, offsets[block], offsets[block + 1]),
                               part(sums, offsets[block], offsets[block + 1]))
            for block in np.flatnonzero(np.diff(offsets))}


def _columns(kernels, grid):
    """The columns of ``kernels`` as a task needs them: a scalar where every kernel holds the same
    value (bitwise: a column of zeros of both signs stays an array), no ``sigma_y`` where it is
    ``sigma_x``."""
    columns = {}
    for name, values in kernels.as_dict().items():
        if name == "sigma_y" and np.array_equal(values, columns["sigma_x"]):
            continue
        columns[name] = values[0].item() if _constant(name, values, kernels, grid) else values
    return columns


def _constant(name, values, kernels, grid):
    if not len(values):
        return False
    if name == "image":
        return grid.n_images == 1 or values.min() == values.max()  # one image: every index is 0
    lo, hi = kernels.bounds(name)
    return lo == hi and (lo != 0.0 or np.signbit(values).all() or not np.signbit(values).any())


def _chunk_lists(boxes, spec):
    """CSR list of the plan rows whose box meets each chunk (``planning.tile_lists``), chunks in flat order."""
    *leading, rows, cols = spec.bounds

    def first_chunk(edges, index):  # the chunk holding each index
        step = int(edges[1])
        if np.all(np.diff(edges[:-1]) == step):  # regular chunks (a shorter last one): 15x faster
            return np.minimum(index // step, len(edges) - 2)
        return np.searchsorted(edges, index, side="right") - 1

    image_chunk = np.zeros(boxes.shape[0], dtype=np.int64)
    if leading:
        for index, edges in zip(np.unravel_index(boxes[:, B_IMAGE], spec.grid.shape[:-2]), leading):
            image_chunk = image_chunk * (len(edges) - 1) + first_chunk(edges, index)
    return tile_lists(first_chunk(cols, boxes[:, B_COL0]), first_chunk(cols, boxes[:, B_COL1]),
                      first_chunk(rows, boxes[:, B_ROW0]), first_chunk(rows, boxes[:, B_ROW1]),
                      image_chunk, (math.prod(spec.numblocks[:-2]), len(rows) - 1, len(cols) - 1))


def _host_pieces(kernels, spec, options):
    if not isinstance(kernels, Kernels):
        if not (isinstance(kernels, Mapping) or hasattr(kernels, "columns")):
            raise TypeError(f"kernels must be a gaussheat_gpu.Kernels, a mapping of columns or a Dask collection, "
                            f"got {type(kernels).__name__}")
        kernels = Kernels.from_columns(kernels)
    pieces = _partition(kernels, spec, options)
    client = _distributed_client()
    if client is not None:  # straight to the workers: not through the scheduler inside the graph
        return dict(zip(pieces, ([future] for future in client.scatter(list(pieces.values()), hash=False))))
    return {block: [piece] for block, piece in pieces.items()}


def _distributed_client():
    """The ``distributed.Client`` that computes Dask collections here, or None (a local scheduler)."""
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if hasattr(client, "scatter") and hasattr(client, "gather") else None


def _collection_partitions(kernels):
    """``(columns, description)`` per partition: delayed column mappings (or DataFrames)."""
    if not isinstance(kernels, Mapping):  # a Dask DataFrame (or another collection of rows)
        if not hasattr(kernels, "columns") or not hasattr(kernels, "to_delayed"):
            raise TypeError(f"kernels: a Dask collection must be a DataFrame or a mapping of 1-D Dask arrays, "
                            f"got {type(kernels).__name__}")
        return [(part, f"kernel partition {i}") for i, part in enumerate(kernels.to_delayed())]
    arrays = {name: v for name, v in kernels.items() if is_dask_collection(v)}
    first_name, first = next(iter(arrays.items()))
    for name, values in arrays.items():
        if not isinstance(values, da.Array) or values.ndim != 1:
            raise TypeError(f"kernels column {name!r} must be a 1-D dask.array.Array, got {values!r}")
        if values.shape != first.shape:
            raise ValueError(f"kernels columns have mismatched lengths ({first_name}: {first.shape[0]}, "
                             f"{name}: {values.shape[0]})")
    split = {name: v.rechunk(first.chunks).to_delayed().ravel() for name, v in arrays.items()}
    starts = np.concatenate(([0], np.cumsum(first.chunks[0])))
    return [({name: split[name][i] if name in split else v for name, v in kernels.items()},
             f"kernels {starts[i]} to {starts[i + 1] - 1} (partition {i})") for i in range(len(starts) - 1)]


def _collection_pieces(kernels, spec, options, name):
    """Plan and bin every partition on the workers (kept there); only the chunks each meets come back."""
    splits = [dask.delayed(_partition)(columns, spec, options, where)
              for columns, where in _collection_partitions(kernels)]
    splits = dask.persist(*splits)
    met = dask.compute(*[dask.delayed(sorted)(s) for s in splits])  # dict keys: the chunks met
    pieces, getters = {}, {}
    for p, (split, blocks) in enumerate(zip(splits, met)):
        for block in blocks:
            key = (name.replace("render", "piece", 1), p, block)
            getters[key] = (operator.getitem, split.key, block)
            pieces.setdefault(block, []).append(key)
    return pieces, getters, list(splits)


# -- chunk tasks ---------------------------------------------------------------------------------

def _render_block(pieces, block, spec):
    """Render chunk ``block`` from the kernels that meet it, planned on the whole grid."""
    module = backends.get(spec.backend)
    plan = window_plan(_task_plan(pieces, spec), spec.window(block), SCRATCH)
    grid = plan.grid
    output_bytes = math.prod(grid.shape) * spec.dtype.itemsize
    to_device = getattr(module, "plan_from_rows", None)
    if to_device is not None:  # the window's rows go to the backend's device, binned there
        check_plan_memory(module, grid, spec.dtype, output_bytes, plan.n_kernels)
        plan = to_device(plan)
    check_call_memory(module, plan, grid, spec.dtype, output_bytes)
    out = module.xp.empty(grid.shape, dtype=spec.dtype)
    if spec.backend == "numba":
        with _NUMBA_LOCK:
            module.render(plan, out)
    else:
        module.render(plan, out)
    return out


def _task_plan(pieces, spec):
    """The plan of the kernels of ``pieces`` on the whole grid (the rows the whole map's plan has for
    them, bit for bit), ``count`` normalisers folded in."""
    kernels, truncate, sums = _join(pieces, spec)
    with _NUMBA_LOCK:
        plan = make_plan(kernels, spec.grid, combine=spec.combine, normalize=spec.normalize, truncate=truncate,
                         dtype=spec.dtype, compiled=True, workspace=SCRATCH)
    return plan if sums is None else fix_count_normaliser(plan, sums[plan.kernel_index])


def _join(pieces, spec):
    """``(Kernels, truncate, count normalisers or None)`` of the kernels of ``pieces`` (one per
    kernel partition that meets the chunk), in order."""
    if not pieces:
        return Kernels([], [], 1.0), spec.truncate, np.empty(0) if spec.normalize == "count" else None
    names = set().union(*(p.columns for p in pieces))
    each = [{"sigma_y": p.columns["sigma_x"], **p.columns} if "sigma_y" in names else p.columns for p in pieces]
    columns = {name: _concatenate([c[name] for c in each], pieces) for name in names}
    truncate = _concatenate([p.truncate for p in pieces], pieces)
    return (Kernels(**columns), spec.truncate if truncate is None else truncate,
            _concatenate([p.box_sums for p in pieces], pieces))


def _concatenate(values, pieces):
    """One column from the pieces' parts: None if they hold none, a scalar if they share it (bitwise)."""
    if len(values) == 1 or values[0] is None:
        return values[0]
    if all(np.ndim(v) == 0 for v in values) and len({np.asarray(v).tobytes() for v in values}) == 1:
        return values[0]
    return np.concatenate([np.broadcast_to(v, (p.n,)) for v, p in zip(values, pieces)])


# -- Zarr output -----------------------------------------------------------------------------------

ZARR_ARRAY = "heatmap"  # the map, in the store's root group
ZARR_DONE = "chunks_done"  # one bool per chunk, set once the chunk is written
ZARR_RENDER_ATTR = "gaussheat_render"  # identifies the render a store holds (for resuming)


def to_zarr(kernels, shape, store, *, chunks, progress=True, overwrite=False, compressors="default", **options):
    """Render into a Zarr store chunk by chunk, never holding the whole map; resumable.

    Each chunk is rendered, written, then marked done in the store (Zarr's local store writes each
    chunk file whole, under a temporary name first). An interrupted run leaves every chunk marked
    done valid; calling ``to_zarr`` again with the same arguments renders only the chunks not yet
    done. Tasks run on the current Dask scheduler (a ``distributed.Client`` when one is active: its
    workers must reach ``store``).

    Parameters
    ----------
    kernels, shape, chunks
        As in :func:`render`; the chunks must be regular (all equal but the last along each axis),
        and become the Zarr chunks.
    store : str, pathlib.Path or zarr store
        Where to write: a Zarr (v3) group holding the array ``heatmap`` and the per-chunk flags
        ``chunks_done``.
    progress : bool or file, default True
        Print a progress bar to stderr (or to the given file); False for none.
    overwrite : bool, default False
        Replace a store that holds a different render instead of refusing it.
    compressors : zarr codec(s) or None, optional
        Compression of the map's chunks; default Blosc LZ4 with byte shuffle (a fast codec: D1's
        4 GiB map was stored in 3.29 GiB).
    **options
        ``combine``, ``normalize``, ``truncate``, ``extent``, ``dtype``, ``backend`` as in :func:`render`.

    Returns
    -------
    zarr.Array
        The ``heatmap`` array of the store.

    Raises
    ------
    ValueError
        Irregular chunks, or a store holding a different render (without ``overwrite``).

    Examples
    --------
    >>> import tempfile, zarr, gaussheat_gpu as gh, gaussheat_gpu.dask as ghd
    >>> k = gh.Kernels(x=[100, 300], y=[200, 250], sigma_x=[20, 40])
    >>> path = tempfile.mkdtemp() + "/map.zarr"
    >>> z = ghd.to_zarr(k, (512, 512), path, chunks=256, progress=False, backend="numpy")
    >>> z.shape, z.chunks
    ((512, 512), (256, 256))
    """
    import zarr

    heat = render(kernels, shape, chunks=chunks, **options)
    chunk_shape = tuple(c[0] for c in heat.chunks)
    for axis, sizes in enumerate(heat.chunks):
        if any(n != sizes[0] for n in sizes[:-1]) or sizes[-1] > sizes[0]:
            raise ValueError(f"chunks must be regular for Zarr (all equal but a smaller last one), "
                             f"got {sizes} along axis {axis}")
    root = zarr.open_group(store, mode="a")
    if root.attrs.get(ZARR_RENDER_ATTR) != heat.name:
        if ZARR_RENDER_ATTR in root.attrs and not overwrite:
            raise ValueError(f"store {store!s} holds a different render ({root.attrs[ZARR_RENDER_ATTR]}); "
                             f"pass overwrite=True to replace it, or write elsewhere")
        if compressors == "default":
            compressors = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
        root.create_array(ZARR_ARRAY, shape=heat.shape, chunks=chunk_shape, dtype=heat.dtype, fill_value=0,
                          compressors=compressors, overwrite=True)
        root.create_array(ZARR_DONE, shape=heat.numblocks, chunks=(1,) * heat.ndim, dtype=bool, fill_value=False,
                          overwrite=True)
        # The render's token names everything that decides its pixels (kernels, shape, chunks, options):
        # JSON attributes could not hold per-kernel truncates or dtype objects anyway.
        root.attrs.update({ZARR_RENDER_ATTR: heat.name})
    target, done = root[ZARR_ARRAY], root[ZARR_DONE]
    todo = [tuple(map(int, block)) for block in np.argwhere(~done[...])]
    name = heat.name.replace("render", "write", 1)
    keys = [(name, *block) for block in todo]
    graph = {(name, *block): (_write_block, (heat.name, *block), target, done, block,
                              tuple(slice(i * n, i * n + sizes[i]) for i, n, sizes in zip(block, chunk_shape, heat.chunks)))
             for block in todo}
    pixels = {(name, *block): math.prod(sizes[i] for i, sizes in zip(block, heat.chunks)) for block in todo}
    _run_with_progress(HighLevelGraph.from_collections(name, graph, dependencies=[heat]), keys, pixels, progress,
                       str(store))
    return target


def _write_block(block, target, done, index, region):
    """Write one rendered chunk (copied to the host first if it lives on a GPU), then mark it done."""
    target[region] = to_host(block)
    done[index] = True
    return True


def _run_with_progress(graph, keys, pixels, progress, label):
    """Compute ``keys`` of ``graph`` on the current scheduler, ticking a progress bar per key
    (``pixels``: each key's pixel count)."""
    stream = sys.stderr if progress is True else progress or None
    if not keys:
        if stream is not None:
            stream.write(f"{label}: every chunk was already written\n")
        return
    bar = ProgressBar(pixels, label, stream)
    client = _distributed_client()
    graph = dict(graph)
    if client is not None:
        from distributed import as_completed

        futures = client.get(graph, keys, sync=False)
        for future in as_completed(futures):
            future.result()
            bar.tick(future.key)
    else:
        def posttask(key, result, dsk, state, worker_id):
            if key in pixels:
                bar.tick(key)

        with dask.callbacks.Callback(posttask=posttask):
            (dask.base.get_scheduler() or dask.threaded.get)(graph, keys)
    bar.close()


# -- command line ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m gaussheat_gpu.dask ARGS``: the same as ``gaussheat render ARGS``.

    ``gaussheat render KERNELS -o map.zarr --chunks N`` renders chunk by chunk into a Zarr store
    (``--scheduler ADDRESS`` on a ``distributed`` cluster); see ``gaussheat render --help``.

    Parameters
    ----------
    argv : list of str, optional
        The command's words after the module name; by default the process's own.

    Returns
    -------
    int
        As :func:`gaussheat_gpu.cli.main`: 0, or 2 after a one-line error on stderr.
    """
    from .cli import main as cli_main

    return cli_main(["render", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
