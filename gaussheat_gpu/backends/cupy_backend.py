"""CuPy backend: one CUDA thread per output pixel, each walking its tile's kernel list.

The device code lives in ``kernels/`` (plain CUDA C, see :mod:`gaussheat_gpu.cuda_sources`); it is
compiled once per device and output dtype into ``cupy.ElementwiseKernel`` s. The plan is computed
on the device by the same planning code as on the host (``plan.xp`` is CuPy), so kernel arrays that
are already CuPy arrays never visit the host.
"""

from __future__ import annotations

import cupy

from .. import cuda_sources
from ..planning import COMBINE_CODES, NORMALIZE_CODES

xp = cupy

_RENDER_PARAMS = ("raw float64 params, raw int64 boxes, raw int64 tile_offsets, raw int64 kernel_ids, "
                  "raw float64 count_sums, int64 height, int64 width, int64 tile_height, int64 tile_width, "
                  "int32 combine, int32 normalize, int32 accumulate")


def unavailable_reason():
    """None when a CUDA device answers; else why not."""
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, or a missing driver library
        return f"CuPy is installed but no CUDA device answers ({exc})"
    if n_devices == 0:
        return "CuPy is installed but sees no CUDA device"
    return None


def free_memory() -> int:
    """Free bytes on the current device."""
    return int(cupy.cuda.Device().mem_info[0])


def check_output_device(out):
    """``out`` must live on the current device, where the kernels run."""
    current = cupy.cuda.Device().id
    if out.device.id != current:
        raise ValueError(f"out is on CUDA device {out.device.id} but rendering runs on device {current}; "
                         f"call inside `with cupy.cuda.Device({out.device.id}):`")


@cupy._util.memoize(for_each_device=True)
def _render_kernel():
    # T (the output dtype) is a type placeholder: CuPy compiles one variant per dtype on first use.
    return cupy.ElementwiseKernel(
        _RENDER_PARAMS, "T out", cuda_sources.operation(cuda_sources.RENDER_PIXEL),
        name="gaussheat_render_pixel", preamble=cuda_sources.read(cuda_sources.HEADER))


@cupy._util.memoize(for_each_device=True)
def _count_sums_kernel():
    return cupy.ElementwiseKernel(
        "raw float64 params, raw int64 boxes", "float64 count_sum",
        cuda_sources.operation(cuda_sources.COUNT_SUMS),
        name="gaussheat_count_sums", preamble=cuda_sources.read(cuda_sources.HEADER))


def render(plan, out):
    """Evaluate ``plan`` into the CuPy array ``out`` (see :mod:`gaussheat_gpu.backends`)."""
    grid = plan.grid
    if plan.n_kernels == 0:
        if not plan.accumulate:
            out.fill(0)
        return
    offsets, kernel_ids = plan.bins(cuda_sources.TILE_HEIGHT, cuda_sources.TILE_WIDTH)
    # Flat views: the device code indexes the row-major tables itself (k * GH_N_PARAMS + column),
    # exactly as the NVRTC and host-compiled tests drive it.
    params, boxes = plan.params.ravel(), plan.boxes.ravel()
    if plan.normalize == "count":
        count_sums = cupy.empty(plan.n_kernels, dtype=cupy.float64)
        _count_sums_kernel()(params, boxes, count_sums)
    else:
        count_sums = cupy.empty(1, dtype=cupy.float64)
    _render_kernel()(params, boxes, offsets, kernel_ids, count_sums,
                     grid.height, grid.width, cuda_sources.TILE_HEIGHT, cuda_sources.TILE_WIDTH,
                     COMBINE_CODES[plan.combine], NORMALIZE_CODES[plan.normalize], int(plan.accumulate), out)


def device_info() -> list[str]:
    """Lines describing the CUDA devices, CuPy and CUDA versions, or why CUDA is not usable."""
    lines = [f"cupy {cupy.__version__}"]
    reason = unavailable_reason()
    if reason:
        return [*lines, f"not usable: {reason}"]
    runtime = cupy.cuda.runtime
    lines.append(f"CUDA runtime {runtime.runtimeGetVersion()}, driver {runtime.driverGetVersion()}")
    for index in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        with cupy.cuda.Device(index) as device:
            free, total = device.mem_info
        lines.append(f"device {index}: {name}, compute capability {props['major']}.{props['minor']}, "
                     f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    return lines
