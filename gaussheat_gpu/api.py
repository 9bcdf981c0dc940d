"""The public entry point: ``render``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from . import backends
from .kernel_set import Kernels
from .planning import make_grid, make_plan

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Asking a device for its free memory costs several microseconds (a /proc read on the host);
# calls needing less than this are run without asking.
_CHECK_MEMORY_ABOVE = 64 * 2**20
# Bytes per kernel the planning step may hold at once: the plan's tables (10 float64 parameters,
# 5 int64 box fields, an index) and as much again in temporaries.
PLAN_BYTES_PER_KERNEL = 2 * 8 * 16


def render(kernels, shape, *, combine="sum", normalize="pdf", truncate=4.0, extent=None,
           dtype=None, backend="auto", out=None, accumulate=False):
    """Render a heatmap of Gaussian kernels.

    Parameters
    ----------
    kernels : Kernels, or a mapping / DataFrame of columns
        The kernels (see :class:`Kernels`).
    shape : tuple of int
        ``(H, W)`` or ``(..., H, W)``; leading dimensions flattened give the image index.
    combine : {"sum", "max", "por"}
        How kernels meet at a pixel: their sum, ``max(0, max v)``, or the probabilistic OR
        ``1 - prod(1 - v)`` (every value must lie in [0, 1]).
    normalize : {"pdf", "peak", "integral", "count"}
        Per-kernel value: the density ``a * N(x; mu, S)``; ``a`` at the centre; ``a`` times the
        mass inside each pixel cell (axis-aligned kernels); or ``a`` spread over the kernel's
        visible pixels so they sum to exactly ``a``.
    truncate : float, None or array of N floats, default 4
        Each kernel covers the integer pixel box around its ``truncate``-sigma ellipse; pixels
        outside get nothing. ``None`` evaluates every pixel. An array gives each kernel its own
        value (finite, > 0), on the kernels' device or the host.
    extent : (x0, x1, y0, y1), optional
        Coordinates of the first and last pixel centres (``numpy.linspace`` semantics; reversed
        ranges allowed). Default ``(0, W-1, 0, H-1)``: pixel ``(r, c)`` is at ``x=c, y=r``.
    dtype : {"float32", "float64"}, optional
        Output dtype; float32 accumulates in float32. Default float32, or ``out.dtype``.
    backend : {"auto", "cupy", "numba", "numpy"}
        ``"auto"`` honours the ``GAUSSHEAT_BACKEND`` environment variable, else takes the best
        that can run here (``available_backends()``).
    out : array, optional
        Render into this C-contiguous array of ``shape`` and ``dtype`` on the backend's device.
        Nothing is written to it if the call fails.
    accumulate : bool, default False
        Combine with what ``out`` already holds instead of starting from 0.

    Returns
    -------
    array of ``shape``
        A NumPy array, or a CuPy array for the ``cupy`` backend; ``out`` when given.

    Raises
    ------
    ValueError, TypeError
        Bad arguments; the message names the argument, the kernel index and the value.
    MemoryError
        The output, the plan and the backend's scratch memory cannot fit in the memory available
        on the backend's device (checked before allocating them).
    gaussheat_gpu.BackendUnavailable
        The requested backend cannot run here; the message says why and what to install.

    Examples
    --------
    The Stack Overflow seed: a round kernel inside an elongated one, combined by probabilistic OR.

    >>> import gaussheat_gpu as gh
    >>> k = gh.Kernels(x=[256, 260], y=[256, 250], sigma_x=[20, 40], sigma_y=[20, 80])
    >>> heat = gh.render(k, (512, 512), combine="por", backend="numpy")
    >>> heat.shape, heat.dtype.name
    ((512, 512), 'float32')
    """
    if type(kernels) is Kernels:  # checked first: an ABC isinstance costs a microsecond
        pass
    elif isinstance(kernels, Mapping) or hasattr(kernels, "columns"):
        kernels = Kernels.from_columns(kernels)
    elif not isinstance(kernels, Kernels):
        raise TypeError(f"kernels must be a gaussheat_gpu.Kernels (or a mapping of columns), got {type(kernels).__name__}")
    if not isinstance(accumulate, (bool, np.bool_)):
        raise TypeError(f"accumulate must be True or False, got {accumulate!r}")
    module = backends.get(backend)
    grid = make_grid(shape, extent)
    dtype = _resolve_dtype(dtype, out)
    if out is not None:
        _check_out(out, grid.shape, dtype, module)
    elif accumulate:
        raise ValueError("accumulate=True combines with an existing output: pass out=")
    output_bytes = math.prod(grid.shape) * dtype.itemsize if out is None else 0
    # Refused before planning: the output and the plan's tables cannot fit (a (2**62, 3) shape never
    # reaches a compiled planner); then, once the plan is known, with the backend's scratch memory.
    check_plan_memory(module, grid, dtype, output_bytes, len(kernels))
    options = dict(combine=combine, normalize=normalize, truncate=truncate, dtype=dtype, accumulate=accumulate)
    backend_planner = getattr(module, "make_plan", None)
    if backend_planner is not None:  # plans where it renders (the device): takes host or device kernels
        plan = backend_planner(kernels, grid, **options)
    else:
        plan = make_plan(kernels.to(module.xp), grid, xp=module.xp, **options, **getattr(module, "plan_options", {}))
    check_call_memory(module, plan, grid, dtype, output_bytes)
    if out is None:
        out = module.xp.empty(grid.shape, dtype=dtype)
    module.render(plan, out)
    return out


def check_plan_memory(module, grid, dtype, output_bytes, n_kernels):
    """Refuse, before planning, a call whose output and plan cannot fit on ``module``'s device.

    Parameters
    ----------
    module : backend module
    grid : gaussheat_gpu.planning.Grid
    dtype : numpy.dtype
        The output's dtype (named in the message).
    output_bytes : int
        Bytes of the output still to allocate (0 for a caller's ``out``).
    n_kernels : int
        Kernels to plan: ``module.plan_bytes_per_kernel`` bytes each where the backend plans on its
        own device, else what the host planner holds.

    Raises
    ------
    MemoryError
        The output and the plan need more than ``module.free_memory()``.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> from gaussheat_gpu.planning import make_grid
    >>> grid = make_grid((2**20, 2**20))
    >>> check_plan_memory(gh.backends.get("numpy"), grid, np.dtype("float32"), 4 * 2**40, 1)
    Traceback (most recent call last):
    ...
    MemoryError: rendering shape (1048576, 1048576) in float32 needs 4096.00 GiB (output, plan and scratch), ...
    """
    per_kernel = getattr(module, "plan_bytes_per_kernel", PLAN_BYTES_PER_KERNEL)
    _check_memory(module, grid, dtype, output_bytes + n_kernels * per_kernel)


def check_call_memory(module, plan, grid, dtype, output_bytes):
    """Refuse, once ``plan`` is made, a call whose output and ``render`` scratch cannot fit.

    Parameters
    ----------
    module : backend module
        Its optional ``call_bytes(plan, exact=False)`` gives the scratch; without it, nothing is checked.
    plan
        What ``module.render`` takes.
    grid, dtype, output_bytes
        As in :func:`check_plan_memory`.

    Raises
    ------
    MemoryError
        The output and the scratch need more than ``module.free_memory()``, by the backend's bound
        and then by its exact figure.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> from gaussheat_gpu.planning import make_grid, make_plan
    >>> grid = make_grid((64, 64))
    >>> plan = make_plan(gh.Kernels(3.0, 4.0, 1.0), grid)
    >>> check_call_memory(gh.backends.get("numpy"), plan, grid, np.dtype("float32"), 4 * 64 * 64)
    """
    call_bytes = getattr(module, "call_bytes", None)
    if call_bytes is not None:
        _check_memory(module, grid, dtype, output_bytes + call_bytes(plan),
                      lambda: output_bytes + call_bytes(plan, exact=True))


def _check_memory(module, grid, dtype, needed, exact=None):
    """MemoryError unless ``needed`` bytes (or, when that bound fails, ``exact()``) fit the device's free memory."""
    if needed <= _CHECK_MEMORY_ABOVE:
        return
    free = module.free_memory()
    if needed > free and exact is not None:
        needed = exact()
    if needed > free:
        name = backends.name_of(module)
        raise MemoryError(
            f"rendering shape {grid.shape} in {dtype.name} needs {needed / 2**30:.2f} GiB (output, plan and scratch), "
            f"but only {free / 2**30:.2f} GiB is available to the {name} backend; render in tiles with extent=, "
            f"or into a smaller dtype"
        )


def available_backends() -> list[str]:
    """Names of the backends that can run here, best first.

    Returns
    -------
    list of str
        A subset of ``["cupy", "numba", "numpy"]``; ``"numpy"`` is always there.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> "numpy" in gh.available_backends()
    True
    """
    return backends.available()


def _resolve_dtype(dtype, out):
    if dtype is None and out is not None:
        try:
            resolved = np.dtype(getattr(out, "dtype", None))
        except TypeError:
            raise TypeError(f"out has no usable dtype ({type(out).__name__}); pass a float32 or float64 array") from None
        if resolved not in _DTYPES:
            raise ValueError(f"out has dtype {_dtype_text(resolved)}, which render cannot write; "
                             f"pass a native float32 or float64 array")
        return resolved
    return parse_dtype(dtype)


def parse_dtype(dtype, supported=_DTYPES):
    """``dtype`` as one of the ``supported`` dtypes, in any spelling NumPy understands.

    Parameters
    ----------
    dtype : dtype-like or None
        A dtype, its name, its type or its code (``"float32"``, ``"f4"``, ``numpy.float32``,
        ``numpy.dtype("float32")``). ``None`` means float32.
    supported : tuple of numpy.dtype, default (float32, float64)
        The dtypes accepted, in native byte order; named in this order in the error messages.

    Returns
    -------
    numpy.dtype

    Raises
    ------
    TypeError
        ``dtype`` is not a dtype.
    ValueError
        ``dtype`` is not one of ``supported`` (a non-native byte order included).

    Examples
    --------
    >>> parse_dtype("f8"), parse_dtype(np.float32), parse_dtype(None)
    (dtype('float64'), dtype('float32'), dtype('float32'))
    """
    if dtype is None:
        return _DTYPES[0]
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype = {dtype!r} is not a dtype; use {_choices(supported)}") from None
    if resolved not in supported:
        raise ValueError(f"dtype = {_dtype_text(resolved, supported)} is not supported; use {_choices(supported)}")
    return resolved


def _choices(dtypes):
    """``'a', 'b' or 'c'``: the dtypes' names for an error message."""
    names = [repr(d.name) for d in dtypes]
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]


def _dtype_text(dtype, supported=_DTYPES):
    """A dtype's name, quoted, with its byte order when that is not the machine's."""
    if dtype.byteorder not in "=|" and dtype.newbyteorder("=") in supported:
        return f"{dtype.name!r} in {'big' if dtype.byteorder == '>' else 'little'}-endian byte order ({dtype.str!r})"
    return repr(dtype.name)


def _check_out(out, shape, dtype, module):
    name = backends.name_of(module)
    if not isinstance(out, module.xp.ndarray) or isinstance(out, (np.matrix, np.ma.MaskedArray)):
        raise TypeError(f"out must be a {module.xp.__name__}.ndarray for the {name} backend, got {type(out).__module__}.{type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)} but shape = {shape}")
    if np.dtype(out.dtype) != dtype:
        raise ValueError(f"out has dtype {out.dtype} but dtype = {dtype.name!r}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous (render into a contiguous array, then copy)")
    if not getattr(out.flags, "writeable", True):
        raise ValueError("out is read-only")
    check_device = getattr(module, "check_output_device", None)
    if check_device is not None:
        check_device(out)
