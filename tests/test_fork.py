"""Rendering in worker processes: fork-started pools after the parent rendered, a DataLoader-style
worker loop, spawn workers receiving pickled kernels, and threads rendering at once."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gaussheat_gpu as gh

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")


def _kernels(seed):
    rng = np.random.default_rng(seed)
    n = 600  # enough to run the parallel planner's and renderer's thread pools
    return gh.Kernels(rng.uniform(0, 96, n), rng.uniform(0, 64, n), rng.uniform(0.5, 4, n), rng.uniform(0.5, 4, n),
                      theta=rng.uniform(0, np.pi, n), amplitude=rng.uniform(0, 1, n), image=rng.integers(0, 2, n))


def _render(seed):
    return gh.render(_kernels(seed), (2, 64, 96), backend="auto", dtype="float64")


def _run(script, env=None):
    """Run ``script`` in a fresh interpreter (so the threading layer is chosen afresh); return stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=600, cwd=os.path.dirname(__file__), env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_fork_started_pool_renders_after_the_parent_rendered():
    out = _run("""
        import multiprocessing, numpy as np, gaussheat_gpu as gh
        from test_fork import _render
        parent = [_render(seed) for seed in range(3)]          # the parent runs Numba's threads first
        with multiprocessing.get_context("fork").Pool(2) as pool:
            result = pool.map_async(_render, range(3)).get(timeout=300)
        for seed, (mine, theirs) in enumerate(zip(parent, result)):
            assert np.array_equal(mine, theirs), seed         # the workers ran Numba too: the same bits
        from gaussheat_gpu import _threading
        print("ok", _threading.current_layer())
    """)
    assert out.startswith("ok")
    if _tbb_installed():
        assert out.split()[1] == "tbb"


def _tbb_installed():
    from importlib import metadata

    try:
        metadata.version("tbb")
    except metadata.PackageNotFoundError:
        return False
    return True


def test_children_forked_after_gnu_openmp_fall_back_instead_of_aborting():
    # A caller who forces GNU OpenMP: forked children report the numba backend unavailable, with
    # the reason, and "auto" renders with NumPy (within tolerance of the parent's Numba image).
    out = _run("""
        import multiprocessing, numpy as np, gaussheat_gpu as gh
        from gaussheat_gpu import _threading
        from test_fork import _render

        def child(seed):
            reason = gh.backends.unavailable_reason("numba")
            return _render(seed), reason, gh.available_backends()

        parent = _render(1)
        if _threading.current_layer() != "omp":
            print("skip: no OpenMP layer here:", _threading.current_layer())
            raise SystemExit
        from numba.np.ufunc import omppool
        if omppool.openmp_vendor != "GNU":
            print("skip: OpenMP is", omppool.openmp_vendor)
            raise SystemExit
        with multiprocessing.get_context("fork").Pool(1) as pool:
            image, reason, available = pool.apply_async(child, (1,)).get(timeout=60)  # an aborted child hangs the pool
        assert "forked from one that had already run Numba's GNU OpenMP threads" in reason, reason
        assert "numba" not in available
        assert np.abs(image - parent).max() <= 1e-12 * np.abs(parent).max()
        print("ok")
    """, env={"NUMBA_THREADING_LAYER": "omp"})
    if out.startswith("skip"):
        pytest.skip(out)
    assert out.startswith("ok")


def test_children_forked_before_gnu_openmp_ran_keep_numba():
    # The usual DataLoader set-up: workers forked before the parent rendered start GNU OpenMP
    # themselves, which is safe; every render of theirs stays on Numba (not only the first).
    out = _run("""
        import multiprocessing, gaussheat_gpu as gh
        from gaussheat_gpu import _threading
        from test_fork import _kernels

        def child(_):
            first = gh.backends.unavailable_reason("numba")
            gh.render(_kernels(1), (2, 64, 96), backend="numba")
            layer = _threading.current_layer()
            gh.render(_kernels(2), (2, 64, 96), backend="numba")
            return first, layer, gh.backends.unavailable_reason("numba")

        with multiprocessing.get_context("fork").Pool(1) as pool:
            first, layer, after = pool.apply_async(child, (0,)).get(timeout=120)
        if layer != "omp":
            print("skip: no OpenMP layer here:", layer)
            raise SystemExit
        assert first is None and after is None, (first, after)
        print("ok")
    """, env={"NUMBA_THREADING_LAYER": "omp"})
    if out.startswith("skip"):
        pytest.skip(out)
    assert out.startswith("ok")


def test_dataloader_style_worker_loop_renders_targets():
    # What torch.utils.data.DataLoader does with num_workers > 0 on Linux: fork workers that each
    # render batches from an index queue and send them back, after the parent rendered.
    out = _run("""
        import multiprocessing as mp, numpy as np
        from test_fork import _render

        def worker(indices, results):
            for i in iter(indices.get, None):
                results.put((i, _render(i)))

        expected = {i: _render(i) for i in range(4)}
        ctx = mp.get_context("fork")
        indices, results = ctx.Queue(), ctx.Queue()
        workers = [ctx.Process(target=worker, args=(indices, results)) for _ in range(2)]
        for w in workers:
            w.start()
        for i in range(4):
            indices.put(i)
        got = dict(results.get(timeout=300) for _ in range(4))
        for w in workers:
            indices.put(None)
        for w in workers:
            w.join(timeout=60)
            assert w.exitcode == 0, w.exitcode
        assert all(np.array_equal(got[i], expected[i]) for i in range(4))
        print("ok")
    """)
    assert out.startswith("ok")


def test_torch_dataloader_workers_render():
    pytest.importorskip("torch")
    out = _run("""
        import numpy as np, torch
        from test_fork import _render

        class Targets(torch.utils.data.Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                return _render(i)

        expected = np.stack([_render(i) for i in range(4)])
        loader = torch.utils.data.DataLoader(Targets(), batch_size=2, num_workers=2,
                                             multiprocessing_context="fork")
        got = np.concatenate([batch.numpy() for batch in loader])
        assert np.array_equal(got, expected)
        print("ok")
    """)
    assert out.startswith("ok")


def test_spawn_workers_take_pickled_kernels():
    kernels = _kernels(5)
    expected = gh.render(kernels, (2, 64, 96), backend="numpy", dtype="float64")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(gh.render, (kernels, (2, 64, 96)), dict(backend="numpy", dtype="float64"))
    assert np.array_equal(result, expected)


def test_threads_rendering_at_once_match_serial_bits(fast_backend):
    if fast_backend != "numba":
        pytest.skip("host threads")
    serial = [gh.render(_kernels(seed), (2, 64, 96), backend="numba") for seed in range(8)]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda seed: gh.render(_kernels(seed), (2, 64, 96), backend="numba"), range(8)))
    for a, b in zip(serial, threaded):
        assert np.array_equal(a, b)
