"""Shared fixtures: backends as parameters, a ``gpu`` marker and ``--gpu`` option (datashader style)."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", deadline=None, max_examples=400,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the GPU tests and fail (not skip) them when no CUDA device answers")


def _gpu_unavailable_reason():
    from gaussheat_gpu import backends

    return backends.unavailable_reason("cupy")


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    reason = _gpu_unavailable_reason()
    if reason is None:
        return
    if config.getoption("--gpu"):
        raise pytest.UsageError(f"--gpu given but the cupy backend cannot run: {reason}")
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Fast backends checked against the NumPy float64 reference; cupy runs where a GPU answers.
FAST_BACKENDS = [
    pytest.param("numba", id="numba"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]
ALL_BACKENDS = [pytest.param("numpy", id="numpy"), *FAST_BACKENDS]


@pytest.fixture(params=ALL_BACKENDS, scope="session")
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS, scope="session")
def fast_backend(request):
    return request.param


@pytest.fixture
def helpers_as_python(monkeypatch):
    """``swap(*modules)``: the Numba backend's helpers named in ``modules`` replaced by their Python
    bodies, so that a compiled function's ``.py_func`` can run from Python (compiled for calls from
    compiled code only, a helper has no entry point Python can call)."""
    def swap(*modules):
        for module in modules:
            for name, value in list(vars(module).items()):
                options = getattr(value, "targetoptions", None)
                if options and options.get("no_cpython_wrapper") and options.get("no_cfunc_wrapper"):
                    monkeypatch.setattr(module, name, value.py_func)
    return swap
