"""The backend's ElementwiseKernels, built from kernels/ once per device and variant, and cached."""

from __future__ import annotations

import threading

import cupy
import numpy as np

from ... import cuda_sources

# (device id, operation file, dtype name, defines) -> cupy.ElementwiseKernel. CuPy also caches the
# compiled module (in memory and on disk); this keeps one kernel object per device and variant,
# named after the variant.
_kernels: dict = {}
_kernels_lock = threading.Lock()


def elementwise(name: str, dtype=None, defines=None):
    """The ElementwiseKernel for operation file ``name`` on the current device (built on first use).

    Parameters
    ----------
    name : str
        An operation in :data:`gaussheat_gpu.cuda_sources.OPERATIONS`.
    dtype : dtype, optional
        The output dtype, for operations whose output type is the placeholder ``T``: it only names
        the variant (CuPy specialises ``T`` from the output array when it compiles).
    defines : dict of str to int, optional
        Compile-time switches put before the header (``cuda_sources.render_defines``).

    Returns
    -------
    cupy.ElementwiseKernel
    """
    dtype_name = None if dtype is None else np.dtype(dtype).name
    variant = tuple((defines or {}).items())
    key = (cupy.cuda.Device().id, name, dtype_name, variant)
    kernel = _kernels.get(key)
    if kernel is None:
        op = cuda_sources.operation(name)
        with _kernels_lock:
            kernel = _kernels.setdefault(key, cupy.ElementwiseKernel(
                op.in_params, op.out_params, op.body, name=cuda_sources.kernel_name(name, dtype_name, defines),
                preamble=cuda_sources.preamble(defines), options=op.options))
    return kernel
