"""W7, the floors of this machine, measured in the same run as the workloads they bound.

For each workload's float32 output: overwriting a buffer that is already mapped (what ``out=``
costs at least) and allocating and writing a fresh one (what ``render`` without ``out=`` costs at
least); once, NumPy's float32 ``exp`` throughput. Each on one thread and on every core
(``harness.floor_thread_counts``); bench/run.py keeps the faster as the floor.
"""

import pytest

from bench import harness
from gaussheat_gpu import workloads

FLOOR_BUDGET_S = 0.5  # floors are cheap and steady: fewer seconds per row than the workloads


def _time(benchmark, call, threads, nbytes, **info):
    benchmark.group = "W7"
    estimate_s, _ = harness.timed(call)
    estimate_s, _ = harness.timed(call)  # the first call may have faulted in pages of the pool
    rounds, iterations = harness.rounds_for(estimate_s, FLOOR_BUDGET_S)
    benchmark.extra_info.update(kind="floor", threads=harness.threads_used(nbytes, threads), **info)
    benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=0)


@pytest.mark.parametrize("threads", harness.floor_thread_counts(), ids=lambda n: f"{n}thr")
@pytest.mark.parametrize("how", ["reused", "fresh"])
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_write_floor(benchmark, cases, workload_id, how, threads):
    case = cases[workload_id]
    make = harness.write_reused_call if how == "reused" else harness.write_fresh_call
    _time(benchmark, make(case.shape, threads=threads), threads, case.output_bytes(), floor=f"write-{how}",
          workload=workload_id, bytes=case.output_bytes())


@pytest.mark.parametrize("threads", harness.floor_thread_counts(), ids=lambda n: f"{n}thr")
def test_exp_floor(benchmark, threads):
    _time(benchmark, harness.exp_call(threads=threads), threads, harness.EXP_ELEMENTS * 4, floor="exp-float32",
          elements=harness.EXP_ELEMENTS)
