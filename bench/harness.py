"""What every benchmark shares: the error check, the reference cache, the rounds policy, the floors.

Used by the pytest-benchmark suites (bench/test_*.py), the GPU script (bench/gpu_bench.py) and the
smoke test (tests/test_bench_smoke.py), so all three check and time things the same way.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gaussheat_gpu import backends

# Every row of a table must agree with the float64 reference of the same work to this fraction
# of max|reference| (DESIGN.md section 3, the float32 contract) before its time is reported.
TOLERANCE = 1e-5

# Rounds policy: about ROUND_BUDGET_S of timed calls per row, at least MIN_ROUNDS when a call is
# quick enough, never more than MAX_ROUNDS; calls faster than MIN_ROUND_S are repeated inside a
# round so that the timer's own cost stays negligible.
ROUND_BUDGET_S = 1.5
MIN_ROUNDS = 3
MAX_ROUNDS = 30
MIN_ROUND_S = 2e-3
SLOW_CALL_S = 1.0  # calls slower than this are timed in fewer rounds (down to 1): budget over precision


def rel_error(out, expected) -> float:
    """max |out - expected| / max |expected|, in float64 (0 when both are all zero).

    Parameters
    ----------
    out : array_like
        What was computed (NumPy or CuPy array).
    expected : ndarray
        The float64 reference of the same work.

    Returns
    -------
    float
    """
    out = _to_host(out).astype(np.float64, copy=False)
    expected = np.asarray(expected, dtype=np.float64)
    if out.shape != expected.shape:
        raise ValueError(f"shapes differ: computed {out.shape}, reference {expected.shape}")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(out - expected).max()) if expected.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def _to_host(a):
    if hasattr(a, "__cuda_array_interface__"):
        if hasattr(a, "get"):  # CuPy
            return a.get()
        return a.cpu().numpy()  # torch
    return np.asarray(a)


class ReferenceCache:
    """Float64 NumPy renderings of workloads, computed once per run.

    Keyed by the workload's shape, options and a digest of its kernel arrays, so two subsets of
    the same size never share an entry.
    """

    def __init__(self):
        self._cache = {}

    def get(self, case) -> np.ndarray:
        """The float64 reference of ``case`` (:meth:`Workload.reference`)."""
        scalars = sorted((k, v) for k, v in case.options.items() if not isinstance(v, np.ndarray))
        digest = hashlib.sha1(repr((case.shape, scalars)).encode())
        for name, value in sorted((k, v) for k, v in case.options.items() if isinstance(v, np.ndarray)):
            digest.update(name.encode() + np.ascontiguousarray(value).tobytes())  # a per-kernel truncate
        for column in case.kernels.as_dict().values():
            digest.update(np.ascontiguousarray(_to_host(column)).tobytes())
        key = digest.hexdigest()
        if key not in self._cache:
            self._cache[key] = case.reference()
        return self._cache[key]


def rounds_for(estimate_s: float, budget_s: float = ROUND_BUDGET_S) -> tuple[int, int]:
    """How to time a call that takes about ``estimate_s`` seconds: ``(rounds, iterations)``.

    Parameters
    ----------
    estimate_s : float
        One warm call's duration.
    budget_s : float
        About how long all rounds together may take.

    Returns
    -------
    rounds, iterations : int
        ``iterations`` calls per round (each round's time is divided by it), ``rounds`` rounds.
    """
    estimate_s = max(estimate_s, 1e-7)
    iterations = max(1, math.ceil(MIN_ROUND_S / estimate_s))
    per_round = estimate_s * iterations
    rounds = int(budget_s / per_round)
    floor = MIN_ROUNDS if per_round < SLOW_CALL_S else 1
    return max(floor, min(MAX_ROUNDS, rounds)), iterations


def record_benchmark(benchmark, call, *, workload, kind, method, rel_error, estimate_s, scale=1.0, timed_part="",
                     first_call_s=None, note="", floor=""):
    """Attach what the report needs to a pytest-benchmark fixture, then time ``call`` with the rounds policy.

    Everything but the timing goes to ``benchmark.extra_info``, so the JSON file pytest-benchmark
    writes is the only record bench/run.py reads.

    Parameters
    ----------
    benchmark : pytest_benchmark.fixture.BenchmarkFixture
    call : callable
        Zero-argument; already checked and warmed up.
    workload : Workload
    kind : {"baseline", "backend"}
    method : str
    rel_error : float
        From the check made before timing.
    estimate_s : float
        One warm call's duration (sets rounds and iterations).
    scale, timed_part, first_call_s, note, floor
        As in :class:`bench.report.Row`.
    """
    benchmark.group = workload.id
    rounds, iterations = rounds_for(estimate_s)
    benchmark.extra_info.update(
        workload=workload.id, workload_title=workload.title, kind=kind, method=method, rel_error=rel_error,
        scale=scale, timed_part=timed_part, first_call_s=first_call_s, note=note, floor=floor,
        output_bytes=workload.output_bytes())
    benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=0)


def timed(call):
    """Run ``call()`` once; return ``(seconds, result)``."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


BLOCK_S = 0.05  # seconds of calls in a block of interleaved_ratio


def median_block(call, seconds=BLOCK_S) -> float:
    """The median time of ``call()`` over ~``seconds`` of calls (at least 5)."""
    times, begin = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - begin < seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_ratio(first, second, rounds) -> tuple[float, float, float, float, float]:
    """Time two calls in one process, in alternating blocks (:func:`median_block`), each going first
    in every other round after 3 untimed rounds: on a machine whose speed drifts, both see the same
    phases. Returns the medians of their blocks (seconds), then the median of the blocks' ratios
    (``first / second``) and its first and third quartiles."""
    for _ in range(3):
        median_block(first)
        median_block(second)
    times = ([], [])
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            times[i].append(median_block((first, second)[i]))
    ratios = [a / b for a, b in zip(*times)]
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return float(np.median(times[0])), float(np.median(times[1])), float(median), float(q1), float(q3)


# -- backends -----------------------------------------------------------------------------------

DEVICE_BACKENDS = ("cupy",)


def backend_names(device=False) -> list[str]:
    """Backends that can run here, best first: host backends, or (``device=True``) device ones."""
    return [name for name in backends.available() if (name in DEVICE_BACKENDS) == device]


def render_call(case, backend, dtype="float32", out=None):
    """A zero-argument callable rendering ``case`` with ``backend`` and returning the finished result.

    Device backends are synchronised before returning, so host timers measure finished work.
    """
    return _finished(lambda: case.render(backend=backend, dtype=dtype, out=out), backend)


def helper_call(case, backend, dtype="float32"):
    """Like :func:`render_call`, for a target workload's helper (:meth:`Workload.run_helper`)."""
    return _finished(lambda: case.run_helper(backend=backend, dtype=dtype), backend)


def _finished(call, backend):
    """``call``, followed on device backends by a synchronisation of the current stream."""
    if backend not in DEVICE_BACKENDS:
        return call
    import cupy

    def synchronised():
        result = call()
        cupy.cuda.get_current_stream().synchronize()
        return result
    return synchronised


# -- floors (W7): what the machine needs at least ----------------------------------------------

def floor_threads() -> int:
    """Threads the host floors use: every core this process may run on (what Numba uses too)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_PARALLEL_MIN_BYTES = 1 << 20  # below this a thread hand-off surely costs more than the write
_pools: dict = {}


def _pool(threads):
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads)
    return _pools[threads]


def threads_used(nbytes, threads=None) -> int:
    """Threads :func:`_parallel` really uses for arrays of ``nbytes`` (small ones stay on one)."""
    threads = threads or floor_threads()
    return 1 if nbytes < _PARALLEL_MIN_BYTES else threads


def floor_thread_counts() -> list[int]:
    """Thread counts each host floor is measured with; the report keeps the fastest.

    One thread wins below a few MiB (a hand-off costs more than the write) and often up to tens
    of MiB on small VMs; every core wins on large fresh buffers. Measuring both keeps the floor a
    floor on any machine.
    """
    return sorted({1, floor_threads()})


def _parallel(op, arrays, threads):
    """Apply ``op(chunk, ...)`` over equal chunks of same-shaped flat ``arrays`` on ``threads`` threads.

    NumPy releases the GIL in ``fill`` and in ufunc loops, so threads scale like a native loop.
    """
    flat = [a.reshape(-1) for a in arrays]
    if threads_used(flat[0].nbytes, threads) == 1:
        op(*flat)
        return
    bounds = np.linspace(0, flat[0].size, threads + 1).astype(int)
    parts = [[a[lo:hi] for a in flat] for lo, hi in zip(bounds[:-1], bounds[1:])]
    list(_pool(threads).map(lambda p: op(*p), parts))


def write_reused_call(shape, dtype="float32", threads=None):
    """A callable that overwrites one preallocated buffer of ``shape`` (the ``out=`` floor)."""
    threads = threads or floor_threads()
    buf = np.zeros(shape, dtype=dtype)  # zeros and one fill: pages mapped before timing starts
    buf.fill(1.0)
    return lambda: _parallel(lambda a: a.fill(0.0), [buf], threads)


def write_fresh_call(shape, dtype="float32", threads=None):
    """A callable that allocates a new buffer of ``shape`` and writes it (what ``render`` must do).

    Fresh pages are faulted in by the write; the buffer is returned and dropped inside the timing,
    like a rendered output a caller discards.
    """
    threads = threads or floor_threads()

    def call():
        buf = np.empty(shape, dtype=dtype)
        _parallel(lambda a: a.fill(0.0), [buf], threads)
        return buf
    return call


EXP_ELEMENTS = 1 << 23  # 32 MiB of float32 in and out: streams from memory like a real output


def exp_call(threads=None, n=EXP_ELEMENTS):
    """A callable computing ``np.exp`` of ``n`` float32 values into a reused buffer (SIMD exp floor)."""
    threads = threads or floor_threads()
    x = np.linspace(-20.0, 0.0, n, dtype=np.float32)
    y = np.empty_like(x)
    return lambda: _parallel(lambda a, b: np.exp(a, out=b), [x, y], threads)
