"""Backend registry: a plain dict from name to module, imported on first use and cached.

A backend module provides:

``render(plan, out)``
    Evaluate ``plan`` into ``out`` (C-contiguous, ``plan.grid.shape``, ``plan.dtype``): overwrite
    every pixel, or combine with what ``out`` holds when ``plan.accumulate``.
``unavailable_reason()``
    ``None`` when it can run here, else why not and how to install what it needs.
``xp``
    The array module of its outputs (``numpy`` or ``cupy``).
``free_memory()``
    Bytes an output may take on its device.
``plan_options`` (optional, default ``{}``)
    Keyword arguments for :func:`~gaussheat_gpu.planning.make_plan`: ``compiled`` (plan host kernels
    in its compiled pass, same bits) and ``workspace`` (where that pass puts the tables).
``make_plan(kernels, grid, *, combine, normalize, truncate, dtype, accumulate)`` (optional)
    Plan on the backend's own device instead of :func:`~gaussheat_gpu.planning.make_plan`, taking
    host or device kernels, with planning.py's checks and errors; returns what ``render`` takes.
``render_plan(plan, out)`` (optional, with ``make_plan``)
    Evaluate a :class:`~gaussheat_gpu.planning.Plan` made on the host (a window of a larger map's plan,
    for Dask chunks); backends without their own ``make_plan`` do this with ``render``.
``check_output_device(out)`` (optional)
    Raise if a caller's ``out`` is not on the device the backend writes to.

Adding a backend is a new module plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
import os

# Best first: "auto" takes the first one that can run.
_MODULES = {
    "cupy": "gaussheat_gpu.backends.cupy",
    "numba": "gaussheat_gpu.backends.numba",
    "numpy": "gaussheat_gpu.backends.numpy_backend",
}
ENV_VAR = "GAUSSHEAT_BACKEND"
# What to install when a backend's module cannot be imported.
_INSTALL_HINTS = {
    "cupy": "install CuPy for your CUDA version: pip install 'gaussheat_gpu[cuda12]' or 'gaussheat_gpu[cuda13]'",
    "numba": "pip install numba",
}

_loaded: dict = {}
_reasons: dict = {}


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run here; the message says why and how to fix it."""


def names() -> tuple[str, ...]:
    """Every backend name, best first."""
    return tuple(_MODULES)


def _load(name: str):
    if name in _loaded:
        return _loaded[name]
    if name in _reasons:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        _reasons[name] = f"cannot import it ({exc}); {_INSTALL_HINTS.get(name, 'reinstall gaussheat_gpu')}"
        return None
    reason = module.unavailable_reason()
    if reason:
        _reasons[name] = reason
        return None
    _loaded[name] = module
    return module


def unavailable_reason(name: str) -> str | None:
    """``None`` if backend ``name`` can run here, else the reason it cannot."""
    _check_name(name)
    return None if _load(name) is not None else _reasons[name]


def available() -> list[str]:
    """Names of the backends that can run here, best first."""
    return [name for name in _MODULES if _load(name) is not None]


def get(name: str = "auto"):
    """The backend module for ``name``; ``"auto"`` honours ``GAUSSHEAT_BACKEND``, then takes the best.

    Raises
    ------
    ValueError
        Unknown name.
    BackendUnavailable
        The backend cannot run here (the message says why).
    """
    if name == "auto":
        name = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        if name != "auto":
            _check_name(name, source=f"environment variable {ENV_VAR}")
        else:
            for candidate in _MODULES:
                module = _load(candidate)
                if module is not None:
                    return module
            raise BackendUnavailable("no backend can run: " + "; ".join(f"{n}: {r}" for n, r in _reasons.items()))
    _check_name(name)
    module = _load(name)
    if module is None:
        raise BackendUnavailable(f"backend {name!r} cannot run here: {_reasons[name]}")
    return module


def _check_name(name, source="backend"):
    if name not in _MODULES:
        raise ValueError(f"{source} = {name!r} is not one of 'auto', {', '.join(map(repr, _MODULES))}")


def host_free_memory() -> int:
    """Bytes of host memory available for a new array (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
