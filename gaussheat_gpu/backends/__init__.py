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
``call_bytes(plan, exact=False)`` (optional)
    Bytes of scratch memory ``render(plan, out)`` allocates at its peak, beyond ``out`` and the
    plan: an upper bound that costs O(1), or with ``exact=True`` the figure itself (may cost
    O(kernels)). ``render`` refuses with a MemoryError, before allocating, a call whose output,
    plan and scratch exceed ``free_memory()``; it asks for the exact figure only when the bound
    does not fit.
``plan_options`` (optional, default ``{}``)
    Keyword arguments for :func:`~gaussheat_gpu.planning.make_plan`: ``compiled`` (plan host kernels
    in its compiled pass, same bits) and ``workspace`` (where that pass puts the tables).
``make_plan(kernels, grid, *, combine, normalize, truncate, dtype, accumulate)`` (optional)
    Plan on the backend's own device instead of :func:`~gaussheat_gpu.planning.make_plan`, taking
    host or device kernels, with planning.py's checks and errors; returns what ``render`` takes.
``plan_bytes_per_kernel`` (optional, with ``make_plan``)
    Bytes per kernel its ``make_plan`` allocates on the device, for the check before planning
    (default: what :func:`~gaussheat_gpu.planning.make_plan` holds).
``plan_from_rows(plan)`` (optional, with ``make_plan``)
    What ``render`` takes for a :class:`~gaussheat_gpu.planning.Plan` made on the host (a window of a
    larger map's plan, for Dask chunks); backends without their own ``make_plan`` render that plan itself.
``check_output_device(out)`` (optional)
    Raise if a caller's ``out`` is not on the device the backend writes to.

Adding a backend is a new module plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
import os

from .. import _threading

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


def name_of(module) -> str:
    """The registry name of a backend module (``"numba"`` for ``gaussheat_gpu.backends.numba``)."""
    return next((name for name, path in _MODULES.items() if path == module.__name__),
                module.__name__.rsplit(".", 1)[-1])


def _load(name: str):
    if name == "numba" and _threading.FORKED and _threading.fork_unsafe_reason():
        # A child forked after the parent ran GNU OpenMP threads would abort in Numba's parallel code.
        _loaded.pop(name, None)
        _reasons[name] = _threading.fork_unsafe_reason()
        return None
    if name in _loaded:
        return _loaded[name]
    if name in _reasons:
        return None
    if name == "numba":
        _threading.prefer_tbb()
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
    """``None`` if backend ``name`` (case-insensitive) can run here, else the reason it cannot."""
    name = _fold(name, "backend")
    _check_name(name)
    return None if _load(name) is not None else _reasons[name]


def available() -> list[str]:
    """Names of the backends that can run here, best first."""
    return [name for name in _MODULES if _load(name) is not None]


def get(name: str = "auto"):
    """The backend module for ``name`` (case-insensitive); ``"auto"`` honours ``GAUSSHEAT_BACKEND``,
    then takes the best.

    Raises
    ------
    TypeError
        ``name`` is not a string.
    ValueError
        Unknown name.
    BackendUnavailable
        The backend cannot run here (the message says why).
    """
    module = _loaded.get(name) if type(name) is str else None
    if module is not None and not _threading.FORKED:  # a loaded backend by its own name: ~0.1 us
        return module
    if type(name) is not str or name != "auto":
        name = _fold(name, "backend")
    if name == "auto":
        name = _fold(os.environ.get(ENV_VAR, ""), f"environment variable {ENV_VAR}") or "auto"
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


def _fold(name, source):
    """``name`` stripped and lower-cased; a TypeError naming ``source`` when it is not a string."""
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a string, one of 'auto', {', '.join(map(repr, _MODULES))}; got {name!r}")
    return name.strip().lower()


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
