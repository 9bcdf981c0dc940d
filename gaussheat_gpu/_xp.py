"""Which array library holds an array: the one place that knows about device arrays.

The package never imports CuPy unless the caller hands it a device array or asks for the
``cupy`` backend.
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
