"""Which array library holds an array: the one place that knows about device arrays.

The package never imports CuPy unless the caller hands it a device array or asks for the
``cupy`` backend. :func:`first_bad` reports an array's first invalid entry on either library.
"""

from __future__ import annotations

import numpy as np


def is_device_array(a) -> bool:
    """True for CuPy arrays and other objects exposing ``__cuda_array_interface__``."""
    return hasattr(a, "__cuda_array_interface__")


def array_module(*arrays):
    """``cupy`` if any of ``arrays`` lives on a CUDA device, else ``numpy``.

    Raises
    ------
    TypeError
        A device array was given but CuPy cannot be imported.
    """
    if any(is_device_array(a) for a in arrays):
        return _cupy()
    return np


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise TypeError(
            f"got a CUDA device array (it has __cuda_array_interface__) but CuPy cannot be imported ({exc}); "
            "install CuPy for your CUDA version (pip install 'gaussheat_gpu[cuda12]' or 'gaussheat_gpu[cuda13]') "
            "or pass host arrays"
        ) from None
    return cupy


def to_host(a):
    """A NumPy view or copy of ``a`` (device arrays are copied to the host)."""
    if is_device_array(a):
        cupy = _cupy()
        return cupy.asnumpy(cupy.asarray(a))
    return np.asarray(a)


def first_bad(values, bad, xp, requirement, item, name, *, count=True):
    """Raise ``ValueError`` naming the first of ``values`` where ``bad`` is true.

    Parameters
    ----------
    values : array
        Numbers, or rows (reported as lists), on the host or the device.
    bad : boolean array
        One entry per value (per row).
    xp : module
        ``numpy`` or ``cupy``, the library holding ``bad``.
    requirement : str
        What a good value satisfies, as the message says it (``"must be > 0"``).
    item, name : str
        What one entry is (``"kernel"``) and the argument's name (``"sigma_x"``).
    count : bool, default True
        Also say how many entries are bad (one more reduction, only when one is).

    Raises
    ------
    ValueError
        Some entry of ``bad`` is true: ``name[i] = value requirement (item i; n bad in all)``.

    Examples
    --------
    >>> first_bad(np.array([1.0, -2.0, -3.0]), np.array([False, True, True]), np, "must be > 0", "kernel", "sigma")
    Traceback (most recent call last):
    ...
    ValueError: sigma[1] = -2.0 must be > 0 (kernel 1; 2 bad in all)
    >>> first_bad(np.array([1.0]), np.array([False]), np, "must be > 0", "kernel", "sigma")  # nothing bad
    """
    if bool(bad.any()):
        i = int(xp.nonzero(bad)[0][0])
        where = f"{item} {i}; {int(xp.count_nonzero(bad))} bad in all" if count else f"{item} {i}"
        raise ValueError(f"{name}[{i}] = {values[i].tolist()!r} {requirement} ({where})")
