"""gaussheat_gpu.dask: chunked renders equal in-memory ones at every seam; Zarr output and resume.

Every chunk must equal the same slice of ``gaussheat_gpu.render`` (float64 within 1e-12, float32
within 1e-5 of max), for every combine and normalize, with batches, rotated kernels and reversed
extents; with the threaded scheduler, and on a ``distributed.LocalCluster`` of two processes.
"""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussheat_gpu as gh
from gaussheat_gpu import cli, planning
from gaussheat_gpu.backends import numpy_backend
from naive import naive_support_mask
from strategies import allowed_error, kernel_dicts, render_cases

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
ghd = pytest.importorskip("gaussheat_gpu.dask")
zarr = pytest.importorskip("zarr")

COMBINES = ["sum", "max", "por"]
NORMALIZES = ["pdf", "peak", "integral", "count"]


def seam_kernels(n=300, shape=(60, 70), rotated=True, seed=0):
    """Kernels scattered over and around a ``shape`` grid, many crossing any seam."""
    rng = np.random.default_rng(seed)
    height, width = shape
    theta = rng.uniform(-np.pi, np.pi, n) if rotated else 0.0
    return gh.Kernels(rng.uniform(-4, width + 4, n), rng.uniform(-4, height + 4, n), rng.uniform(0.4, 5, n),
                      rng.uniform(0.4, 5, n), theta, rng.uniform(0.05, 0.6, n))


def assert_chunks_match(chunked, expected, dtype, kernels=None, shape=None, options=None):
    """``chunked`` (computed) equals ``expected`` within DESIGN.md's bound, nothing outside supports."""
    assert chunked.shape == expected.shape and chunked.dtype == np.dtype(dtype)
    err = np.abs(chunked.astype(np.float64) - expected).max() if expected.size else 0.0
    assert err <= allowed_error(expected, dtype), (err, np.abs(expected).max())
    if kernels is not None:
        inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options.get("truncate", 4.0),
                                             options.get("extent"))).reshape(shape)
        assert not chunked[~inside].any(), "nonzero pixel outside every support"


# -- seams: every combine and normalize, against the in-memory render ---------------------------

@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("normalize", NORMALIZES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_mode_matches_in_memory_render_across_seams(combine, normalize, dtype):
    shape = (60, 70)
    kernels = seam_kernels(shape=shape, rotated=normalize != "integral")
    options = dict(combine=combine, normalize=normalize, truncate=3.0, extent=(2.5, -4.0, 10.0, 31.5))
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    heat = ghd.render(kernels, shape, chunks=(13, 17), backend="numpy", dtype=dtype, **options)
    assert heat.numblocks == (5, 5)
    assert_chunks_match(heat.compute(scheduler="threads"), expected, dtype, kernels, shape, options)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@settings(max_examples=40)
@given(case=render_cases(max_kernels=16, max_side=30), dtype=st.sampled_from(["float32", "float64"]),
       data=st.data())
def test_random_cases_match_in_memory_render(backend, case, dtype, data):
    kernels, shape, options = case
    chunks = tuple(data.draw(st.integers(1, n), label=f"chunk along axis {axis}") for axis, n in enumerate(shape))
    expected = gh.render(kernels, shape, backend=backend, dtype=dtype, **options)
    heat = ghd.render(kernels, shape, chunks=chunks, backend=backend, dtype=dtype, **options)
    assert heat.chunks == da.core.normalize_chunks(chunks, shape)
    chunked = np.asarray(heat.compute(scheduler="threads"))
    reference = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    assert_chunks_match(chunked, expected.astype(np.float64), dtype)
    assert_chunks_match(chunked, reference, dtype, kernels, shape, options)


def test_batches_chunked_over_images_and_pixels():
    shape = (3, 2, 40, 50)
    rng = np.random.default_rng(3)
    n = 200
    kernels = gh.Kernels(rng.uniform(-3, 53, n), rng.uniform(-3, 43, n), rng.uniform(0.5, 4, n), 2.0,
                         rng.uniform(-1, 1, n), rng.uniform(0.1, 1, n), rng.integers(0, 6, n))
    options = dict(combine="max", normalize="peak", truncate=3.0)
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    heat = ghd.render(kernels, shape, chunks=(2, 1, 15, 21), backend="numba", dtype="float64", **options)
    assert heat.numblocks == (2, 2, 3, 3)
    assert_chunks_match(heat.compute(scheduler="threads"), expected, "float64", kernels, shape, options)


def test_irregular_chunks():
    kernels = seam_kernels()
    options = dict(combine="sum", normalize="count", truncate=2.5, dtype="float64")
    expected = gh.render(kernels, (60, 70), backend="numpy", **options)
    heat = ghd.render(kernels, (60, 70), chunks=((5, 20, 35), (30, 3, 1, 36)), backend="numpy", **options)
    assert_chunks_match(heat.compute(scheduler="threads"), expected, "float64")


def test_one_truncate_per_kernel():
    kernels = seam_kernels(n=100)
    truncate = np.random.default_rng(5).choice([1.0, 2.5, 4.0], len(kernels))
    options = dict(combine="max", normalize="count", truncate=truncate, dtype="float64")
    expected = gh.render(kernels, (60, 70), backend="numpy", **options)
    heat = ghd.render(kernels, (60, 70), chunks=(16, 20), backend="numba", **options)
    assert_chunks_match(heat.compute(scheduler="threads"), expected, "float64")
    with pytest.raises(TypeError, match="one value per kernel"):
        ghd.render(column_arrays(kernels, 50), (60, 70), chunks=20, truncate=truncate)


def test_whole_map_in_one_chunk_is_the_in_memory_render():
    kernels = seam_kernels()
    expected = gh.render(kernels, (60, 70), backend="numpy", combine="por")
    chunked = ghd.render(kernels, (60, 70), chunks=-1, backend="numpy", combine="por").compute(scheduler="sync")
    np.testing.assert_array_equal(chunked, expected)


def test_box_edges_are_the_whole_grid_ones_where_replanning_a_chunk_would_move_them():
    # Box edges exactly on pixel centres of a reversed, non-integer extent: planning each chunk on its
    # own extent (coordinates rounded differently) moves some edges by a pixel; windows of the
    # whole-grid plan must not.
    shape, chunk, truncate = (2, 61), 7, 2.0
    extent = (0.1, -4.7, -1.0, 1.0)
    x0, x1, y0, y1 = extent
    dx = (x1 - x0) / (shape[1] - 1)
    kernels = gh.Kernels(x0 + np.arange(2.0, 61.0, 4.0) * dx, 0.0, abs(dx) / truncate, 1.0)  # boxes: 3 columns
    options = dict(combine="sum", normalize="peak", truncate=truncate, extent=extent)
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    chunked = ghd.render(kernels, shape, chunks=chunk, backend="numpy", dtype="float64", **options)
    assert_chunks_match(chunked.compute(scheduler="threads"), expected, "float64", kernels, shape, options)

    replanned = np.zeros(shape)
    for c in range(0, shape[1] - 1, chunk):  # the last column alone has no spacing to give
        w = min(chunk, shape[1] - c)
        sub = (x0 + c * dx, x0 + (c + w - 1) * dx, y0, y1)
        replanned[:, c:c + w] = gh.render(kernels, (2, w), backend="numpy", dtype="float64",
                                          **{**options, "extent": sub})
    moved = (replanned != 0) != (expected != 0)
    assert moved[:, :-1].any(), "this case no longer exercises a moved box edge"


# -- count: each kernel keeps its whole-grid normaliser ------------------------------------------

def test_count_keeps_every_kernels_mass_across_seams():
    shape = (48, 64)
    rng = np.random.default_rng(7)
    n = 40
    amplitude = rng.uniform(0.5, 2.0, n)
    kernels = gh.Kernels(rng.uniform(0, 63, n), rng.uniform(0, 47, n), rng.uniform(1, 6, n), rng.uniform(1, 6, n),
                         rng.uniform(-1, 1, n), amplitude)
    heat = ghd.render(kernels, shape, chunks=(10, 12), normalize="count", truncate=3.0, backend="numpy",
                      dtype="float64").compute(scheduler="threads")
    # every centre is inside the image, so every kernel is visible: the map holds their total mass
    assert heat.sum() == pytest.approx(amplitude.sum(), rel=1e-12)


def test_count_does_not_use_a_per_chunk_normaliser():
    shape, chunk = (30, 30), 10
    kernels = gh.Kernels(x=[9.5, 20.0, 4.0], y=[9.5, 14.0, 25.0], sigma_x=[3.0, 2.0, 2.5], sigma_y=[2.0, 4.0, 2.5])
    options = dict(normalize="count", truncate=3.0, dtype="float64")
    expected = gh.render(kernels, shape, backend="numpy", **options)
    chunked = ghd.render(kernels, shape, chunks=chunk, backend="numpy", **options).compute(scheduler="threads")
    assert_chunks_match(chunked, expected, "float64")
    per_chunk = np.zeros(shape)  # what normalising each chunk's part of a kernel on its own gives
    for r in range(0, 30, chunk):
        for c in range(0, 30, chunk):
            per_chunk[r:r + chunk, c:c + chunk] = gh.render(
                kernels, (chunk, chunk), backend="numpy", extent=(c, c + chunk - 1, r, r + chunk - 1), **options)
    assert np.abs(per_chunk - expected).max() > 100 * allowed_error(expected, "float64")
    # each kernel's parts sum to its amplitude in every chunk: 3 kernels, but 9 units of mass here
    assert per_chunk.sum() > 4.0 and chunked.sum() == pytest.approx(3.0, rel=1e-12)


def test_window_of_a_count_plan_is_refused():
    grid = planning.make_grid((8, 8))
    plan = planning.make_plan(gh.Kernels(3.0, 3.0, 1.0), grid, normalize="count")
    with pytest.raises(ValueError, match="normalize='count'"):
        planning.window_plan(plan, ((0, 4), (0, 4)))
    fixed = planning.fix_count_normaliser(plan, numpy_backend.box_sums(plan))
    assert fixed.normalize == "peak" and plan.normalize == "count"
    with pytest.raises(ValueError, match="does not fit"):
        planning.window_plan(fixed, ((0, 4), (4, 9)))


def test_window_plan_in_a_workspace_equals_fresh_tables():
    from gaussheat_gpu._workspace import Workspace

    # tables past the workspace's small-array cut-off (64 KiB): 2,000 kernels
    plan = planning.make_plan(seam_kernels(n=2000), planning.make_grid((60, 70)), truncate=3.0)
    workspace = Workspace()
    for window in (((0, 16), (20, 40)), ((44, 60), (60, 70)), ((0, 60), (0, 70))):
        fresh = planning.window_plan(plan, window)
        reused = planning.window_plan(plan, window, workspace)
        assert reused.grid == fresh.grid and reused.axis_aligned == fresh.axis_aligned and 0 < reused.n_kernels
        for table in ("params", "boxes", "kernel_index"):
            np.testing.assert_array_equal(getattr(reused, table), getattr(fresh, table))
    again = planning.window_plan(plan, window, workspace)
    assert np.shares_memory(again.params, reused.params) and np.shares_memory(again.boxes, reused.boxes)


def test_box_sums_match_a_direct_sum_with_kernels_spanning_steps(monkeypatch):
    kernels = seam_kernels(n=60, seed=4)
    plan = planning.make_plan(kernels, planning.make_grid((60, 70)), normalize="count", truncate=None)
    direct = []
    for p, box in zip(plan.params, plan.boxes):
        u = np.arange(box[0], box[1] + 1) - p[planning.P_CX]
        w = np.arange(box[2], box[3] + 1) - p[planning.P_CY]
        q = p[2] * u[None] ** 2 + 2 * p[3] * u[None] * w[:, None] + p[4] * w[:, None] ** 2
        direct.append(np.exp(-0.5 * (q - p[8] - p[9])).sum())
    monkeypatch.setattr(numpy_backend, "CHUNK_ELEMENTS", 4 * 1000)  # steps of 1000 elements, < one box
    np.testing.assert_allclose(numpy_backend.box_sums(plan), direct, rtol=1e-13)


# -- what each task carries ----------------------------------------------------------------------

def test_each_chunk_task_carries_only_the_kernels_that_meet_it():
    shape, chunk = (60, 70), (16, 20)
    kernels = seam_kernels(shape=shape)
    heat = ghd.render(kernels, shape, chunks=chunk, truncate=2.0, backend="numpy")
    plan = planning.make_plan(kernels, planning.make_grid(shape), truncate=2.0)
    boxes = plan.boxes
    assert len(boxes) < len(kernels), "some kernels should have no pixel in the image"
    graph = dict(heat.__dask_graph__())
    carried = 0
    for (r, c) in np.ndindex(*heat.numblocks):
        pieces = graph[(heat.name, r, c)][1]
        rows = (r * chunk[0], min(shape[0], (r + 1) * chunk[0]) - 1)
        cols = (c * chunk[1], min(shape[1], (c + 1) * chunk[1]) - 1)
        meets = ((boxes[:, 0] <= cols[1]) & (boxes[:, 1] >= cols[0]) & (boxes[:, 2] <= rows[1])
                 & (boxes[:, 3] >= rows[0]))
        held = {name: np.concatenate([np.broadcast_to(p.columns[name], p.n) for p in pieces]) if pieces else []
                for name in ("x", "y", "sigma_x", "sigma_y", "theta", "amplitude", "image")}
        for name, values in held.items():  # every column of exactly the kernels that meet the chunk, in order
            np.testing.assert_array_equal(values, getattr(kernels, name)[plan.kernel_index[meets]])
        carried += len(held["x"])
    assert len(boxes) < carried < len(boxes) * heat.npartitions / 4


def test_a_chunk_task_plans_its_kernels_to_the_whole_grid_rows_bit_for_bit():
    shape, chunk = (60, 70), (16, 20)
    kernels = seam_kernels(n=400, shape=shape, seed=3)
    truncate = np.random.default_rng(3).uniform(1.0, 4.0, len(kernels))
    heat = ghd.render(kernels, shape, chunks=chunk, normalize="count", truncate=truncate, backend="numpy")
    whole = planning.make_plan(kernels, planning.make_grid(shape), normalize="count", truncate=truncate)
    fixed = planning.fix_count_normaliser(whole, numpy_backend.box_sums(whole))
    spec = None
    for key, task in dict(heat.__dask_graph__()).items():
        pieces, block, spec = task[1:]
        window = spec.window(block)
        (r0, r1), (c0, c1) = window
        meets = ((whole.boxes[:, 0] < c1) & (whole.boxes[:, 1] >= c0) & (whole.boxes[:, 2] < r1)
                 & (whole.boxes[:, 3] >= r0))
        plan = ghd._task_plan(pieces, spec)  # what the task renders its window of
        assert plan.kernel_index.tolist() == list(range(int(meets.sum())))
        np.testing.assert_array_equal(plan.params, fixed.params[meets])  # bitwise, NaN-free
        np.testing.assert_array_equal(plan.boxes, whole.boxes[meets])
    assert spec is not None and len(spec.bounds) == 2


def test_chunk_tasks_carry_shared_values_once():
    kernels = gh.Kernels(x=[3.0, 40.0, 41.0], y=[5.0, 6.0, 30.0], sigma_x=[1.0, 2.0, 1.5])  # sigma_y = sigma_x
    zeros = gh.Kernels(x=[3.0, 40.0], y=5.0, sigma_x=1.0, theta=[0.0, -0.0])
    for k, shared, carried in ((kernels, {"theta": 0.0, "amplitude": 1.0, "image": 0}, {"x", "y", "sigma_x"}),
                               (zeros, {"y": 5.0, "sigma_x": 1.0, "sigma_y": 1.0, "amplitude": 1.0, "image": 0},
                                {"x", "theta"})):
        heat = ghd.render(k, (48, 48), chunks=24, backend="numpy")
        pieces = [p for task in dict(heat.__dask_graph__()).values() for p in task[1]]
        assert pieces and all(p.columns.keys() == shared.keys() | carried for p in pieces)
        assert all({name: p.columns[name] for name in shared} == shared for p in pieces)
        assert all(np.ndim(p.columns[name]) == 1 for p in pieces for name in carried)
        expected = gh.render(k, (48, 48), backend="numpy", dtype="float64")
        assert_chunks_match(heat.compute(scheduler="sync"), expected, "float32")
    # theta 0.0 and -0.0 both travel: the signs of zero reach the chunks as given
    assert np.signbit(np.concatenate([p.columns["theta"] for p in pieces])).tolist() == [False, True]


@pytest.mark.gpu
def test_cupy_chunks_are_cupy_arrays_with_exact_seams():
    import cupy

    kernels = seam_kernels(n=20)
    for normalize in ("pdf", "count"):
        heat = ghd.render(kernels, (30, 30), chunks=16, backend="cupy", normalize=normalize)
        assert isinstance(heat._meta, cupy.ndarray)
        expected = gh.render(kernels, (30, 30), backend="numpy", dtype="float64", normalize=normalize)
        assert float(abs(heat.compute().get() - expected).max()) <= 1e-5 * expected.max()


def test_options_are_checked_when_the_array_is_built():
    kernels = seam_kernels(n=3)
    with pytest.raises(ValueError, match="combine"):
        ghd.render(kernels, (10, 10), chunks=5, combine="mean")
    with pytest.raises(ValueError, match="truncate"):
        ghd.render(kernels, (10, 10), chunks=5, truncate=-1.0)
    with pytest.raises(ValueError, match=r"sigma_x\[1\]"):
        ghd.render({"x": [1.0, 2.0], "y": [1.0, 2.0], "sigma": [1.0, 0.0]}, (10, 10), chunks=5)
    with pytest.raises(ValueError, match="combine='por'"):
        ghd.render(gh.Kernels(1.0, 1.0, 1.0, amplitude=2.0), (10, 10), chunks=5, combine="por", normalize="peak")


# -- kernels as Dask collections, planned where they live ----------------------------------------

def column_arrays(kernels, chunk):
    return {name: da.from_array(values, chunks=chunk) for name, values in kernels.as_dict().items()}


def test_dask_array_columns_give_the_same_map():
    shape = (60, 70)
    kernels = seam_kernels(shape=shape)
    options = dict(combine="sum", normalize="count", truncate=3.0, dtype="float64", backend="numpy")
    columns = column_arrays(kernels, 70)
    columns["sigma_y"] = columns["sigma_y"].rechunk(45)  # other chunks are aligned to x's
    columns["amplitude"] = 0.5  # scalars broadcast
    heat = ghd.render(columns, shape, chunks=(25, 30), **options)
    kernels = gh.Kernels(**{**kernels.as_dict(), "amplitude": 0.5})
    assert_chunks_match(heat.compute(scheduler="threads"), gh.render(kernels, shape, **options), "float64")


@settings(max_examples=15)
@given(case=render_cases(max_kernels=16, max_side=24, per_kernel_truncate=False), data=st.data())
def test_random_cases_from_dask_array_columns(case, data):
    kernels, shape, options = case
    if len(kernels) == 0:
        return
    partition = data.draw(st.integers(1, len(kernels)), label="kernels per partition")
    chunks = tuple(data.draw(st.integers(1, n), label=f"chunk along axis {axis}") for axis, n in enumerate(shape))
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    heat = ghd.render(column_arrays(kernels, partition), shape, chunks=chunks, backend="numpy", dtype="float64",
                      **options)
    assert_chunks_match(heat.compute(scheduler="threads"), expected, "float64")


def test_dask_dataframe_gives_the_same_map():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    shape = (60, 70)
    kernels = seam_kernels(shape=shape)
    frame = dd.from_pandas(pd.DataFrame(kernels.as_dict()), npartitions=4)
    options = dict(combine="max", normalize="peak", truncate=3.0, dtype="float64", backend="numpy")
    heat = ghd.render(frame, shape, chunks=(25, 30), **options)
    assert_chunks_match(heat.compute(scheduler="threads"), gh.render(kernels, shape, **options), "float64")


def test_bad_kernels_in_a_collection_name_their_partition_and_index():
    kernels = {name: values.copy() for name, values in seam_kernels(n=30).as_dict().items()}  # read-only
    kernels["sigma_x"][17] = -1.0
    columns = {name: da.from_array(values, chunks=10) for name, values in kernels.items()}
    with pytest.raises(ValueError, match=r"kernels 10 to 19 \(partition 1\): sigma_x\[7\] = -1.0"):
        ghd.render(columns, (20, 20), chunks=10)
    with pytest.raises(ValueError, match="mismatched lengths"):
        ghd.render({"x": da.zeros(4, chunks=2), "y": da.zeros(5, chunks=2), "sigma": 1.0}, (20, 20), chunks=10)


# -- Zarr ----------------------------------------------------------------------------------------

def test_to_zarr_writes_the_map_chunk_by_chunk(tmp_path):
    shape = (60, 70)
    kernels = seam_kernels(shape=shape)
    bar = io.StringIO()
    z = ghd.to_zarr(kernels, shape, tmp_path / "map.zarr", chunks=(16, 32), progress=bar, normalize="count",
                    backend="numpy")
    assert z.chunks == (16, 32) and z.dtype == np.float32
    expected = gh.render(kernels, shape, normalize="count", backend="numpy", dtype="float64")
    assert_chunks_match(zarr.open_group(tmp_path / "map.zarr")["heatmap"][...], expected, "float32")
    assert "12/12 chunks" in bar.getvalue()


def test_interrupted_zarr_write_keeps_completed_chunks_and_resumes(tmp_path, monkeypatch):
    shape, chunks = (60, 70), (16, 32)
    kernels = seam_kernels(shape=shape)
    options = dict(combine="por", normalize="pdf", backend="numpy", dtype="float64")
    expected = gh.render(kernels, shape, **options)
    path = tmp_path / "map.zarr"
    real = ghd._render_block
    rendered = []

    def failing(pieces, block, spec):
        if block == 7:
            raise KeyboardInterrupt("interrupted")
        rendered.append(block)
        return real(pieces, block, spec)

    monkeypatch.setattr(ghd, "_render_block", failing)
    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="sync"):  # no chunk still in flight after
        ghd.to_zarr(kernels, shape, path, chunks=chunks, progress=False, **options)
    root = zarr.open_group(path, mode="r")
    done = root["chunks_done"][...]
    assert 0 < done.sum() < done.size and not done.flat[7]
    stored = root["heatmap"][...]
    for r, c in zip(*np.nonzero(done)):
        window = np.s_[r * 16:(r + 1) * 16, c * 32:(c + 1) * 32]
        assert_chunks_match(stored[window], expected[window], "float64")

    monkeypatch.setattr(ghd, "_render_block", lambda *args: rendered.append(args[1]) or real(*args))
    rendered.clear()
    ghd.to_zarr(kernels, shape, path, chunks=chunks, progress=False, **options)
    assert sorted(rendered) == sorted(np.flatnonzero(~done))  # only what was left
    root = zarr.open_group(path, mode="r")
    assert root["chunks_done"][...].all()
    assert_chunks_match(root["heatmap"][...], expected, "float64")
    bar = io.StringIO()
    ghd.to_zarr(kernels, shape, path, chunks=chunks, progress=bar, **options)
    assert "already written" in bar.getvalue()


def test_to_zarr_refuses_another_render_unless_overwritten(tmp_path):
    kernels = seam_kernels(n=20)
    path = tmp_path / "map.zarr"
    ghd.to_zarr(kernels, (30, 30), path, chunks=16, progress=False, backend="numpy")
    with pytest.raises(ValueError, match="different render"):
        ghd.to_zarr(kernels, (30, 30), path, chunks=16, progress=False, backend="numpy", combine="max")
    z = ghd.to_zarr(kernels, (30, 30), path, chunks=16, progress=False, backend="numpy", combine="max",
                    overwrite=True)
    np.testing.assert_array_equal(z[...], gh.render(kernels, (30, 30), backend="numpy", combine="max"))
    with pytest.raises(ValueError, match="regular"):
        ghd.to_zarr(kernels, (30, 30), tmp_path / "other.zarr", chunks=((10, 20), 30), progress=False)


# -- distributed: two worker processes -----------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_local_cluster_renders_host_and_collection_kernels(client, tmp_path):
    shape = (60, 70)
    kernels = seam_kernels(shape=shape)
    options = dict(combine="por", normalize="count", truncate=3.0, dtype="float64", backend="numpy")
    expected = gh.render(kernels, shape, **options)
    heat = ghd.render(kernels, shape, chunks=(16, 20), **options)
    assert_chunks_match(heat.compute(), expected, "float64")
    columns = column_arrays(kernels, 100)
    assert_chunks_match(ghd.render(columns, shape, chunks=(16, 20), **options).compute(), expected, "float64")
    workers = client.run(lambda dask_worker: sorted(dask_worker.data.keys(), key=str))
    assert all(keys for keys in workers.values()), "the planned partitions live on the workers"
    bar = io.StringIO()
    z = ghd.to_zarr(columns, shape, tmp_path / "map.zarr", chunks=(16, 35), progress=bar, **options)
    assert_chunks_match(z[...], expected, "float64")
    assert "8/8 chunks" in bar.getvalue()


# -- command line and docstrings -----------------------------------------------------------------

def write_table(path, kernels):
    columns = {name: kernels.as_dict()[name] for name in ("x", "y", "sigma_x", "sigma_y", "amplitude")}
    np.savetxt(path, np.column_stack(list(columns.values())), delimiter=",", header=",".join(columns), comments="")


def test_command_line_renders_on_a_scheduler_given_by_address(client, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    kernels = seam_kernels(n=50, rotated=False)
    write_table(tmp_path / "kernels.csv", kernels)
    connected = []

    class Client(distributed.Client):
        def __init__(self, address, **kwargs):
            connected.append(address)
            super().__init__(address, **kwargs)

        def close(self, *args, **kwargs):
            connected.append("closed")
            return super().close(*args, **kwargs)

    monkeypatch.setattr(distributed, "Client", Client)
    with distributed.get_task_stream(client=client) as tasks:
        assert cli.main(["render", str(tmp_path / "kernels.csv"), "-o", str(tmp_path / "map.zarr"), "--shape", "60x70",
                         "--chunks", "32", "--scheduler", client.scheduler.address, "--backend", "numpy",
                         "--progress", "never"]) == 0
    assert connected == [client.scheduler.address, "closed"]
    ran = [str(task["key"]) for task in tasks.data]
    assert sum("gaussheat-write" in key for key in ran) == 6  # every chunk written by the cluster's workers
    z = zarr.open_group(tmp_path / "map.zarr", mode="r")["heatmap"]
    assert_chunks_match(z[...], gh.render(kernels, (60, 70), backend="numpy", dtype="float64"), "float32")


def test_module_command_is_gaussheat_render(tmp_path, capsys):
    kernels = seam_kernels(n=50, rotated=False)
    write_table(tmp_path / "kernels.csv", kernels)
    args = [str(tmp_path / "kernels.csv"), "--shape", "60x70", "--chunks", "32", "-o", str(tmp_path / "map.zarr"),
            "--normalize", "count", "--truncate", "3", "--backend", "numpy", "--progress", "always"]
    assert ghd.main(args) == 0
    z = zarr.open_group(tmp_path / "map.zarr", mode="r")["heatmap"]
    expected = gh.render(kernels, (60, 70), normalize="count", truncate=3.0, backend="numpy", dtype="float64")
    assert_chunks_match(z[...], expected, "float32")
    assert "6/6 chunks" in capsys.readouterr().err
    assert ghd.main(args) == 0
    assert "every chunk was already written" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("x,y,sigma\n1,2,oops\n")
    assert ghd.main([str(tmp_path / "bad.csv"), *args[1:]]) == 2  # one line, no traceback
    assert capsys.readouterr().err == (f"gaussheat render: error: {tmp_path / 'bad.csv'}:2:5: cannot read 'oops' "
                                       f"as a number (column 'sigma')\n")


def test_docstring_examples_run():
    import doctest

    failures, tried = doctest.testmod(ghd)
    assert tried >= 4 and failures == 0


def test_d1_benchmark_cases_run_at_tiny_size():
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench import dask_bench

    results = [dask_bench.run_case(case, tiny=True) for case in ("in-memory", "zarr")]
    assert results[0]["shape"] == [1024, 1024] and results[0]["checksum"] > 0
    again = dask_bench.run_case("in-memory", tiny=True)
    merged = dask_bench.merge_runs([results[0], again])
    assert merged["seconds"] == min(results[0]["seconds"], again["seconds"]) and merged["processes"] == 2
    assert len(merged["all_seconds"]) == 2 * dask_bench.REPEATS and merged["peak_rss"] >= again["peak_rss"]
    assert results[1]["output_bytes"] == 2048 * 2048 * 4 and results[1]["corner_max"] > 0
    text = dask_bench.table(results, "test machine", tiny=True)
    assert "| in-memory |" in text and "Mpixel/s" in text


@pytest.mark.parametrize("chunks", [0, (0, 8), -2, ((4, 0), 8)])
def test_chunk_sizes_that_cannot_split_an_axis_are_refused(chunks):
    with pytest.raises(ValueError, match="chunk sizes must be positive"):
        ghd.render(seam_kernels(n=3), (10, 10), chunks=chunks)


def test_to_zarr_takes_per_kernel_truncate_and_dtype_objects(tmp_path):
    zarr = pytest.importorskip("zarr")
    kernels = seam_kernels(n=20)
    truncate = np.linspace(1.5, 4.0, len(kernels))
    ghd.to_zarr(kernels, (30, 30), tmp_path / "map.zarr", chunks=16, progress=False, truncate=truncate,
                dtype=np.float64, backend="numpy")
    heat = zarr.open_group(tmp_path / "map.zarr", mode="r")["heatmap"][...]
    expected = gh.render(kernels, (30, 30), truncate=truncate, dtype="float64", backend="numpy")
    assert np.abs(heat - expected).max() <= 1e-12 * np.abs(expected).max()
