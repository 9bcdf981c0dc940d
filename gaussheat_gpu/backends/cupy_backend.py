"""CuPy backend: one CUDA thread per output pixel, each walking its tile's kernel list.

The device code lives in ``kernels/`` (plain CUDA C, see :mod:`gaussheat_gpu.cuda_sources`). Each
operation there becomes a ``cupy.ElementwiseKernel`` with the header as its preamble, built once per
device and output dtype and cached (:func:`_elementwise`). The plan is computed on the device by the
same planning code as on the host (``plan.xp`` is CuPy), so kernel arrays that are already CuPy
arrays never visit the host; host arrays were uploaded once by :func:`gaussheat_gpu.render`.

Importing this module imports CuPy: where CuPy is missing the registry reports the ImportError
together with what to install.
"""

from __future__ import annotations

import threading

import cupy
import numpy as np

from .. import cuda_sources
from ..planning import COMBINE_CODES, NORMALIZE_CODES

xp = cupy

# (device id, operation file, dtype name) -> cupy.ElementwiseKernel. CuPy also caches the compiled
# module (in memory and on disk); this keeps one kernel object, with a name that records its
# variant, per device.
_kernels: dict = {}
_kernels_lock = threading.Lock()


def unavailable_reason():
    """``None`` when a CUDA device answers and CuPy can compile for it; else why not.

    Returns
    -------
    str or None
    """
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001  CUDARuntimeError (no device, old driver) or no driver library
        return f"no CUDA device: CuPy {cupy.__version__} is installed but the CUDA runtime says: {exc}"
    if n_devices == 0:
        return f"no CUDA device: CuPy {cupy.__version__} is installed but sees no device"
    return _nvrtc_problem()


def _nvrtc_problem():
    """Why CuPy cannot load NVRTC (which compiles the kernels at run time), or None."""
    try:
        from cupy.cuda import nvrtc
    except ImportError:  # a CuPy that lays its modules out differently: the first compile will tell
        return None
    try:
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001  NVRTCError, or the library failing to load
        return (f"CuPy cannot load NVRTC, the CUDA runtime compiler its kernels need ({exc}); install the "
                f"CUDA toolkit or the NVRTC wheel matching your CUDA version (e.g. pip install nvidia-cuda-nvrtc)")
    return None


def free_memory() -> int:
    """Bytes a new output may take on the current device.

    The device's free memory plus what CuPy's default memory pool holds unused: CuPy returns those
    blocks to the device and retries when an allocation would otherwise fail.
    """
    free = int(cupy.cuda.Device().mem_info[0])
    return free + int(cupy.get_default_memory_pool().free_bytes())


def check_output_device(out):
    """Raise ``ValueError`` unless ``out`` lives on the current device, where the kernels run."""
    current = cupy.cuda.Device().id
    if out.device.id != current:
        raise ValueError(f"out is on CUDA device {out.device.id} but rendering runs on device {current}; "
                         f"call inside `with cupy.cuda.Device({out.device.id}):`")


def _elementwise(name: str, dtype=None):
    """The ElementwiseKernel for operation file ``name`` on the current device (built on first use).

    ``dtype`` (the output dtype, for operations whose output type is the placeholder ``T``) only
    names the variant: CuPy specialises ``T`` from the output array when it compiles.
    """
    dtype_name = None if dtype is None else np.dtype(dtype).name
    key = (cupy.cuda.Device().id, name, dtype_name)
    kernel = _kernels.get(key)
    if kernel is None:
        op = cuda_sources.operation(name)
        with _kernels_lock:
            kernel = _kernels.setdefault(key, cupy.ElementwiseKernel(
                op.in_params, op.out_params, op.body, name=cuda_sources.kernel_name(name, dtype_name),
                preamble=cuda_sources.read(cuda_sources.HEADER)))
    return kernel


def render(plan, out):
    """Evaluate ``plan`` into the CuPy array ``out`` (see :mod:`gaussheat_gpu.backends`).

    Parameters
    ----------
    plan : gaussheat_gpu.planning.Plan
        Planned with ``xp=cupy``: its tables live on the current device.
    out : cupy.ndarray
        C-contiguous, ``plan.grid.shape``, ``plan.dtype``, on the current device.
    """
    grid = plan.grid
    if plan.n_kernels == 0:
        if not plan.accumulate:
            out.fill(0)
        return
    offsets, kernel_ids = plan.bins(cuda_sources.TILE_HEIGHT, cuda_sources.TILE_WIDTH)
    # Flat views: the device code indexes the row-major tables itself (k * GH_N_PARAMS + column),
    # exactly as the NVRTC and host-compiled tests drive it.
    params, boxes = cupy.ascontiguousarray(plan.params).ravel(), cupy.ascontiguousarray(plan.boxes).ravel()
    if plan.normalize == "count":
        count_sums = cupy.empty(plan.n_kernels, dtype=cupy.float64)
        _elementwise(cuda_sources.COUNT_SUMS)(params, boxes, count_sums)
    else:
        count_sums = cupy.empty(1, dtype=cupy.float64)  # never read
    _elementwise(cuda_sources.RENDER_PIXEL, out.dtype)(
        params, boxes, offsets, kernel_ids, count_sums, grid.height, grid.width,
        cuda_sources.TILE_HEIGHT, cuda_sources.TILE_WIDTH, COMBINE_CODES[plan.combine],
        NORMALIZE_CODES[plan.normalize], int(plan.accumulate), out)


def _cuda_version(number: int) -> str:
    """CUDA's encoded version (1000 * major + 10 * minor) as ``major.minor``."""
    return f"{number // 1000}.{number % 1000 // 10}"


def device_info() -> list[str]:
    """``"key: value"`` lines for ``gaussheat info``: CuPy, CUDA and device versions, or why CUDA is not usable.

    Returns
    -------
    list of str
    """
    lines = [f"cupy: {cupy.__version__}"]
    runtime = cupy.cuda.runtime
    for key, query in (("CUDA runtime", runtime.runtimeGetVersion), ("CUDA driver", runtime.driverGetVersion)):
        try:
            lines.append(f"{key}: {_cuda_version(query())}")
        except Exception as exc:  # noqa: BLE001  a report, not a check: say what failed
            lines.append(f"{key}: unknown ({exc})")
    try:
        from cupy.cuda import nvrtc

        lines.append("NVRTC: {}.{}".format(*nvrtc.getVersion()))
    except Exception as exc:  # noqa: BLE001  a report, not a check: say what failed
        lines.append(f"NVRTC: not loadable ({exc})")
    reason = unavailable_reason()
    if reason:
        return [*lines, f"cupy backend: not usable: {reason}"]
    for index in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        with cupy.cuda.Device(index) as device:
            free, total = device.mem_info
        lines.append(f"device {index}: {name}, compute capability {props['major']}.{props['minor']}, "
                     f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    lines.append(f"cupy backend: usable (renders on device {cupy.cuda.Device().id})")
    return lines
