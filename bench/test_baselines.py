"""Every baseline of bench/baselines.py, checked against the float64 reference, then timed.

The check run also serves as the warm-up and the estimate for the rounds policy. Baselines timed
on a part of the workload (a crop, the first kernels) record their scale; the report multiplies.
"""

import pytest

from bench import baselines, harness


@pytest.mark.parametrize("baseline", baselines.BASELINES, ids=lambda b: b.id)
def test_baseline(benchmark, cases, references, baseline):
    case = cases[baseline.workload]
    prepared = baselines.prepare(baseline, case, references)
    estimate_s, out = harness.timed(prepared.call)
    error, note = baselines.check(prepared, out)
    assert error <= harness.TOLERANCE, f"{baseline.id}: error {error:.3g} > {harness.TOLERANCE} ({note})"
    harness.record_benchmark(benchmark, prepared.call, workload=case, kind="baseline", method=baseline.name,
                             rel_error=error, scale=prepared.scale, timed_part=prepared.timed_part, note=note,
                             estimate_s=estimate_s)
