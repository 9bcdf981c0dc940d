"""Every available backend on every CPU workload, float32, checked against the float64 reference.

The first call in this process is timed on its own (it includes Numba's compilation or cache
load) and recorded as ``first_call_s``; a second call estimates the rounds; the benchmark then
times warm calls only.
"""

import pytest

from bench import harness
from gaussheat_gpu import workloads


@pytest.mark.parametrize("backend", harness.backend_names() + harness.backend_names(device=True))
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_backend(benchmark, cases, references, workload_id, backend):
    case = cases[workload_id]
    call = harness.render_call(case, backend)
    first_s, out = harness.timed(call)
    error = harness.rel_error(out, references.get(case))
    assert error <= harness.TOLERANCE, f"{backend} on {workload_id}: error {error:.3g} > {harness.TOLERANCE}"
    estimate_s, _ = harness.timed(call)
    harness.record_benchmark(benchmark, call, workload=case, kind="backend", method=f"{backend} (float32)",
                             rel_error=error, first_call_s=first_s, estimate_s=estimate_s)
