"""The target helpers (W8-W10) on every host backend, float32, checked against the float64 reference.

A helper's row times the whole call from annotations (validation, kernels, the one render); the
same workload's plain backend row (bench/test_backends.py) times the bare render of the kernels
the helper builds, so the two rows of one run give the helper's own overhead.
"""

import pytest

from bench import harness
from gaussheat_gpu import workloads


@pytest.mark.parametrize("backend", harness.backend_names() + harness.backend_names(device=True))
@pytest.mark.parametrize("workload_id", workloads.TARGET_IDS)
def test_helper(benchmark, cases, references, workload_id, backend):
    case = cases[workload_id]
    call = harness.helper_call(case, backend)
    first_s, result = harness.timed(call)
    error = harness.rel_error(result, references.get(case))
    assert error <= harness.TOLERANCE, f"{backend} helper on {case.id}: error {error:.3g} > {harness.TOLERANCE}"
    estimate_s, _ = harness.timed(call)
    function = case.helper[0].__name__
    harness.record_benchmark(benchmark, call, workload=case, kind="backend", method=f"{backend} {function} (float32)",
                             rel_error=error, first_call_s=first_s, estimate_s=estimate_s,
                             note=f"targets.{function} from annotations; the plain row is its bare render call")
