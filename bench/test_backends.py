"""Every available backend on every CPU workload, float32, checked against the float64 reference.

The first call in this process is timed on its own (it includes Numba's compilation or cache
load) and recorded as ``first_call_s``; a second call estimates the rounds; the benchmark then
times warm calls only. Workloads with large outputs are also rendered into a caller's buffer
(``out=``), which skips the page faults of a fresh allocation; those rows are compared with the
``write-reused`` floor.
"""

import numpy as np
import pytest

from bench import harness
from gaussheat_gpu import workloads

OUT_MIN_BYTES = 16 << 20  # outputs from this size on get an out= row too (page faults start to show)


def _check_and_time(benchmark, case, references, backend, out=None):
    call = harness.render_call(case, backend, out=out)
    first_s, result = harness.timed(call)
    error = harness.rel_error(result, references.get(case))
    assert error <= harness.TOLERANCE, f"{backend} on {case.id}: error {error:.3g} > {harness.TOLERANCE}"
    estimate_s, _ = harness.timed(call)
    method = f"{backend} (float32" + (", out=)" if out is not None else ")")
    harness.record_benchmark(benchmark, call, workload=case, kind="backend", method=method, rel_error=error,
                             first_call_s=first_s, estimate_s=estimate_s,
                             floor="write-reused" if out is not None else "")


@pytest.mark.parametrize("backend", harness.backend_names() + harness.backend_names(device=True))
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_backend(benchmark, cases, references, workload_id, backend):
    _check_and_time(benchmark, cases[workload_id], references, backend)


@pytest.mark.parametrize("backend", harness.backend_names())
@pytest.mark.parametrize("workload_id", workloads.CPU_IDS)
def test_backend_into_out(benchmark, cases, references, workload_id, backend):
    case = cases[workload_id]
    if case.output_bytes() < OUT_MIN_BYTES:
        pytest.skip(f"{case.output_bytes() / 2**20:.2g} MiB output: out= changes nothing measurable")
    _check_and_time(benchmark, case, references, backend, out=np.empty(case.shape, np.float32))
