"""W7, the floors of this machine, measured in the same run as the workloads they bound.

For each workload's float32 output: overwriting a buffer that is already mapped (what ``out=``
costs at least) and allocating and writing a fresh one (what ``render`` without ``out=`` costs at
least); once, NumPy's float32 ``exp`` throughput. All on every core (``harness.floor_threads``).
"""

import pytest

from bench import harness
from gaussheat_gpu import workloads


def _time(benchmark, call, group, nbytes, **info):
    benchmark.group = group
    estimate_s, _ = harness.timed(call)
    rounds, iterations = harness.rounds_for(estimate_s)
    benchmark.extra_info.update(kind="floor", threads=harness.threads_used(nbytes), **info)
    benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=0)


@pytest.mark.parametrize("how", ["reused", "fresh"])
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_write_floor(benchmark, cases, workload_id, how):
    case = cases[workload_id]
    make = harness.write_reused_call if how == "reused" else harness.write_fresh_call
    _time(benchmark, make(case.shape), "W7", case.output_bytes(), floor=f"write-{how}", workload=workload_id,
          bytes=case.output_bytes())


def test_exp_floor(benchmark):
    _time(benchmark, harness.exp_call(), "W7", harness.EXP_ELEMENTS * 4, floor="exp-float32",
          elements=harness.EXP_ELEMENTS)
