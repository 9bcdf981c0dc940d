"""CuPy backend: planning, binning and rendering on the device in a few launches per call.

The device code lives in ``kernels/`` (plain CUDA C, see :mod:`gaussheat_gpu.cuda_sources`). Each
operation there becomes a ``cupy.ElementwiseKernel`` with the header as its preamble, built once per
device and variant and cached (:mod:`.kernels`). :func:`make_plan` (:mod:`.planning`) plans on the
device with one host synchronisation; :func:`render` then evaluates: a rank-K matrix product for
dense axis-aligned sums, else one 256-thread block per 16x16 tile walking the tile's kernel list, in
float32 for float32 outputs (float64 where the output, the mode or a kernel's numbers need it).
Kernel arrays that are CuPy arrays never visit the host; host arrays travel in one copy.

Importing this package imports CuPy: where CuPy is missing the registry reports the ImportError
together with what to install.
"""

from __future__ import annotations

import cupy

from ... import cuda_sources
from ...planning import COMBINE_CODES, NORMALIZE_CODES
from .kernels import _kernels, elementwise
from .planning import DevicePlan, bin_tiles, call_bytes, free_memory, make_plan, plan_from_rows
from .planning import PLAN_BYTES_PER_KERNEL as plan_bytes_per_kernel  # noqa: F401  (backend interface)

xp = cupy

__all__ = ["DevicePlan", "call_bytes", "check_output_device", "device_info", "free_memory", "make_plan",
           "plan_bytes_per_kernel", "plan_from_rows", "render", "unavailable_reason", "xp", "_kernels"]


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


def check_output_device(out):
    """Raise ``ValueError`` unless ``out`` lives on the current device, where the kernels run."""
    current = cupy.cuda.Device().id
    if out.device.id != current:
        raise ValueError(f"out is on CUDA device {out.device.id} but rendering runs on device {current}; "
                         f"call inside `with cupy.cuda.Device({out.device.id}):`")


def render(plan: DevicePlan, out):
    """Evaluate ``plan`` into the CuPy array ``out`` (see :mod:`gaussheat_gpu.backends`).

    Parameters
    ----------
    plan : DevicePlan
        From :func:`make_plan` on the current device.
    out : cupy.ndarray
        C-contiguous, ``plan.grid.shape``, ``plan.dtype``, on the current device.
    """
    grid = plan.grid
    if plan.path == "empty":
        if not plan.accumulate:
            out.fill(0)
        return
    if plan.path == "dense":
        factors = cupy.empty(plan.n_kernels * (grid.height + grid.width), dtype=out.dtype)
        elementwise(cuda_sources.DENSE_FACTORS, out.dtype)(
            plan.params, plan.ibox, plan.count_sums, plan.n_kernels, grid.height, grid.width,
            NORMALIZE_CODES[plan.normalize], factors, size=factors.size)
        split = grid.height * plan.n_kernels
        rows = factors[:split].reshape(grid.height, plan.n_kernels)
        cols = factors[split:].reshape(plan.n_kernels, grid.width)
        cupy.matmul(rows, cols, out=out.reshape(grid.height, grid.width))
        return
    offsets, kernel_ids = bin_tiles(plan)
    defines = cuda_sources.render_defines(COMBINE_CODES[plan.combine], NORMALIZE_CODES[plan.normalize], plan.eval64)
    elementwise(cuda_sources.RENDER_TILES, out.dtype, defines)(
        offsets, kernel_ids, plan.ibox, plan.fast, plan.params, plan.count_sums, plan.tile_rows, plan.tile_cols,
        grid.height, grid.width, int(plan.accumulate), out, size=plan.n_tiles * cuda_sources.TILE_PIXELS,
        block_size=cuda_sources.TILE_PIXELS)


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
