"""The per-thread scratch memory that the Numba backend reuses from call to call."""

import threading

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu import _workspace
from gaussheat_gpu._workspace import Workspace


def test_a_name_reuses_its_buffer_and_grows_it_when_asked_for_more():
    workspace = Workspace()
    first = workspace.empty("a", (100_000, 5), np.float64)
    smaller = workspace.empty("a", (90_000, 3), np.int64)
    assert np.shares_memory(first, smaller) and smaller.shape == (90_000, 3) and smaller.dtype == np.int64
    assert smaller.flags.c_contiguous and smaller.flags.aligned and smaller.flags.writeable
    other = workspace.empty("b", (100_000,), np.float64)
    assert not np.shares_memory(first, other)
    bigger = workspace.empty("a", (200_000, 5), np.float64)  # more than the buffer holds: a new one
    assert bigger.shape == (200_000, 5) and not np.shares_memory(first, bigger)
    assert np.shares_memory(bigger, workspace.empty("a", (200_000, 5), np.float64))


def test_small_arrays_and_arrays_past_the_limit_are_fresh(monkeypatch):
    workspace = Workspace()
    small = workspace.empty("a", (10,), np.float64)
    assert not np.shares_memory(small, workspace.empty("a", (10,), np.float64))
    monkeypatch.setattr(_workspace, "KEEP_AT_MOST", 3 * 2**20)
    kept = workspace.empty("a", (2**18,), np.float64)  # 2 MiB (+ a quarter of room): kept
    assert np.shares_memory(kept, workspace.empty("a", (2**18,), np.float64))
    past = workspace.empty("b", (2**18,), np.float64)  # would make 4.5 MiB in all: not kept
    assert not np.shares_memory(past, workspace.empty("b", (2**18,), np.float64))


def test_each_thread_has_its_own_buffers():
    workspace = Workspace()
    mine = workspace.empty("a", (100_000,), np.float64)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(workspace.empty("a", (100_000,), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])


CALLS = [  # (kernels, rotated, options): sizes that grow, shrink and grow past the buffers
    (30_000, True, dict(normalize="pdf")),
    (5_000, False, dict(normalize="count", dtype="float64")),
    (40_000, True, dict(combine="max", normalize="peak")),
    (2_000, False, dict(combine="por", normalize="peak", amplitude=0.3)),
    (30_000, False, dict(normalize="integral", accumulate=True)),
]


def test_numba_renders_stay_exact_while_reusing_memory():
    """Calls of changing sizes and modes on one thread, each checked against the reference: a call
    never reads what the one before left in the reused buffers, and outputs never alias them."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(8)
    shape = (150, 200)
    outputs = []
    for n, rotated, options in CALLS:
        options = dict(options, truncate=3.0)
        amplitude = options.pop("amplitude", None)
        kernels = gh.Kernels(rng.uniform(-5, 200, n), rng.uniform(-5, 150, n), rng.uniform(0.5, 4, n),
                             rng.uniform(0.5, 4, n), rng.uniform(0, np.pi, n) if rotated else 0.0,
                             amplitude if amplitude is not None else rng.uniform(0.1, 1, n))
        dtype = options.pop("dtype", "float32")
        start = None
        if options.pop("accumulate", False):
            start = rng.uniform(0, 1, shape).astype(dtype)
            got = gh.render(kernels, shape, backend="numba", out=start.copy(), accumulate=True, **options)
        else:
            got = gh.render(kernels, shape, backend="numba", dtype=dtype, **options)
        expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
        if start is not None:
            expected = expected + start
        tolerance = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance * np.abs(expected).max())
        outputs.append((got, got.copy()))
    for got, copy in outputs:
        np.testing.assert_array_equal(got, copy)  # later calls did not write into earlier outputs
