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
    """``cupy`` if any of ``arrays`` lives on a CUDA device, else ``numpy``."""
    if any(is_device_array(a) for a in arrays):
        import cupy

        return cupy
    return np


def to_host(a):
    """A NumPy view or copy of ``a`` (device arrays are copied to the host)."""
    if is_device_array(a):
        import cupy

        return cupy.asnumpy(cupy.asarray(a))
    return np.asarray(a)
