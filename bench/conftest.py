"""Fixtures of the CPU benchmark suite: the workloads and their float64 references.

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
