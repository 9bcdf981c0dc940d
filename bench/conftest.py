"""Fixtures of the CPU benchmark suite: the workloads, their float64 references, one recorder.

``GAUSSHEAT_BENCH_TINY=1`` runs every benchmark on the tiny workloads (seconds, for trying the
runner); ``bench/run.py --tiny`` sets it.
"""

import os

import pytest

from bench import harness
from gaussheat_gpu import workloads

TINY = os.environ.get("GAUSSHEAT_BENCH_TINY") == "1"


@pytest.fixture(scope="session")
def cases():
    """W1-W6 by id (tiny versions under GAUSSHEAT_BENCH_TINY=1)."""
    return workloads.cpu_workloads(tiny=TINY)


@pytest.fixture(scope="session")
def references():
    """Float64 NumPy references, computed once per session."""
    return harness.ReferenceCache()


def record(benchmark, call, *, workload, kind, method, rel_error, scale=1.0, timed_part="", first_call_s=None,
           note="", estimate_s, output_bytes=None):
    """Attach what the report needs to ``benchmark`` and time ``call`` with the rounds policy.

    Everything but the timing goes to ``benchmark.extra_info`` so that the JSON file written by
    pytest-benchmark is the only record bench/run.py reads.
    """
    benchmark.group = workload.id
    rounds, iterations = harness.rounds_for(estimate_s)
    benchmark.extra_info.update(
        workload=workload.id, workload_title=workload.title, kind=kind, method=method,
        rel_error=rel_error, scale=scale, timed_part=timed_part, first_call_s=first_call_s, note=note,
        output_bytes=output_bytes if output_bytes is not None else workload.output_bytes(),
    )
    benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=0)
