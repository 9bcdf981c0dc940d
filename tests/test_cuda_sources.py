"""The CUDA sources, proven without a GPU.

1. Every source in kernels/ compiles with NVRTC (sm_80, sm_90) with no error and no warning, inside a
   stand-in for the wrapper CuPy generates around an ElementwiseKernel operation.
2. The same wrapper, compiled for the host with g++, renders plans that match the NumPy float64
   reference pixel by pixel: the device code's arithmetic is checked here, not only its syntax.
"""

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussheat_gpu as gh
from gaussheat_gpu import cuda_sources, planning
from gaussheat_gpu.planning import COMBINE_CODES, NORMALIZE_CODES, make_grid, make_plan
from naive import naive_support_mask
from strategies import allowed_error, kernel_dicts, render_cases

# The operation bodies of kernels/*.cu, wrapped the way CuPy wraps an ElementwiseKernel: raw
# arguments index like arrays, `i` is the flat index, the output is a reference to one element.
WRAPPER = r"""
template <typename V> struct RawArray {
    V* data;
    GH_DEVICE V& operator[](long long index) const { return data[index]; }
};

template <typename T>
GH_DEVICE void render_element(long long i, T& out, RawArray<const double> params, RawArray<const long long> boxes,
                              RawArray<const long long> tile_offsets, RawArray<const long long> kernel_ids,
                              RawArray<const double> count_sums, long long height, long long width,
                              long long tile_height, long long tile_width, int combine, int normalize, int accumulate) {
RENDER_OPERATION
}

GH_DEVICE void count_element(long long i, double& count_sum, RawArray<const double> params,
                             RawArray<const long long> boxes) {
COUNT_OPERATION
}

#if defined(__CUDACC_RTC__)
#define GH_ENTRY(T, NAME) \
extern "C" __global__ void NAME(long long n, T* out, const double* params, const long long* boxes, \
        const long long* tile_offsets, const long long* kernel_ids, const double* count_sums, long long height, \
        long long width, long long tile_height, long long tile_width, int combine, int normalize, int accumulate) { \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) \
        render_element<T>(i, out[i], {params}, {boxes}, {tile_offsets}, {kernel_ids}, {count_sums}, height, width, \
                          tile_height, tile_width, combine, normalize, accumulate); \
}
GH_ENTRY(float, render_f32)
GH_ENTRY(double, render_f64)
extern "C" __global__ void count_sums(long long n, double* sums, const double* params, const long long* boxes) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        count_element(i, sums[i], {params}, {boxes});
}
#else
#define GH_ENTRY(T, NAME) \
extern "C" void NAME(long long n, T* out, const double* params, const long long* boxes, \
        const long long* tile_offsets, const long long* kernel_ids, const double* count_sums, long long height, \
        long long width, long long tile_height, long long tile_width, int combine, int normalize, int accumulate) { \
    for (long long i = 0; i < n; ++i) \
        render_element<T>(i, out[i], {params}, {boxes}, {tile_offsets}, {kernel_ids}, {count_sums}, height, width, \
                          tile_height, tile_width, combine, normalize, accumulate); \
}
GH_ENTRY(float, render_f32)
GH_ENTRY(double, render_f64)
extern "C" void count_sums(long long n, double* sums, const double* params, const long long* boxes) {
    for (long long i = 0; i < n; ++i) count_element(i, sums[i], {params}, {boxes});
}
#endif
"""


def wrapped_source() -> str:
    wrapper = WRAPPER.replace("RENDER_OPERATION", cuda_sources.operation(cuda_sources.RENDER_PIXEL))
    wrapper = wrapper.replace("COUNT_OPERATION", cuda_sources.operation(cuda_sources.COUNT_SUMS))
    return cuda_sources.read(cuda_sources.HEADER) + "\n" + wrapper


# -- the plan layout ------------------------------------------------------------------------------

def test_header_layout_matches_planning():
    header = cuda_sources.read(cuda_sources.HEADER)
    defines = {name: int(value) for name, value in re.findall(r"#define (GH_\w+) (\d+)\s*$", header, re.M)}
    for name in dir(planning):
        if re.fullmatch(r"[PB]_\w+|N_PARAMS|N_BOX", name):
            assert defines[f"GH_{name}"] == getattr(planning, name), name
    for code_map, prefix in ((COMBINE_CODES, "GH_COMBINE_"), (NORMALIZE_CODES, "GH_NORMALIZE_")):
        for mode, code in code_map.items():
            assert defines[prefix + mode.upper()] == code


def test_sources_are_found_and_operations_are_bodies():
    assert (cuda_sources.source_dir() / cuda_sources.HEADER).is_file()
    body = cuda_sources.operation(cuda_sources.RENDER_PIXEL)
    assert body.startswith("out = gh_render_pixel<T>(i,") and "//" not in body


# -- 1. NVRTC ----------------------------------------------------------------------------------

def _find_nvrtc():
    try:
        import nvidia
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for path in sorted(Path(root).glob("**/libnvrtc.so*")):
            if "builtins" not in path.name:
                return path
    return None


class NVRTC:
    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _check(self, result, what):
        if result != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(result).decode()}")

    def compile(self, source, options):
        """Compile ``source``; return (success, log, ptx)."""
        program = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"gaussheat.cu", 0,
                                                None, None), "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            result = self.lib.nvrtcCompileProgram(program, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "log size")
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(program, log), "log")
            ptx = b""
            if result == 0:
                self._check(self.lib.nvrtcGetPTXSize(program, ctypes.byref(size)), "ptx size")
                buffer = ctypes.create_string_buffer(size.value)
                self._check(self.lib.nvrtcGetPTX(program, buffer), "ptx")
                ptx = buffer.value
            return result == 0, log.value.decode(errors="replace").strip(), ptx
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))


@pytest.fixture(scope="module")
def nvrtc():
    path = _find_nvrtc()
    if path is None:
        pytest.skip("NVRTC library not found (install the dev extra: pip install nvidia-cuda-nvrtc)")
    return NVRTC(path)


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("std", ["c++11", "c++17"])
def test_cuda_sources_compile_with_nvrtc_without_warnings(nvrtc, arch, std):
    ok, log, ptx = nvrtc.compile(wrapped_source(), [f"--gpu-architecture={arch}", f"--std={std}",
                                                    "--Wreorder"])
    assert ok, log
    assert log == "", f"NVRTC printed diagnostics:\n{log}"
    for entry in (b"render_f32", b"render_f64", b"count_sums"):
        assert b".entry " + entry in ptx
    # No per-thread stack arrays or spills: every value the pixel loop needs stays in registers.
    assert b".local" not in ptx


def test_nvrtc_reports_errors(nvrtc):
    # The harness itself must be able to fail: a typo in a source is caught.
    ok, log, _ = nvrtc.compile(wrapped_source().replace("gh_combine<T>(current", "gh_combine<T>(curent"),
                               ["--gpu-architecture=compute_80"])
    assert not ok and "curent" in log


# -- 2. the device code on the host ------------------------------------------------------------

@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH to build the device code for the host")
    folder = tmp_path_factory.mktemp("cuda_host")
    source = folder / "gaussheat_host.cpp"
    source.write_text(wrapped_source())
    library = folder / "gaussheat_host.so"
    result = subprocess.run([compiler, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                             str(source), "-o", str(library)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(library))


def _pointer(array):
    return array.ctypes.data_as(ctypes.c_void_p)


def host_render(library, kernels, shape, *, dtype, out=None, accumulate=False, **options):
    """Render through the host-compiled device code, as the CuPy backend drives it."""
    grid = make_grid(shape, options.pop("extent", None))
    plan = make_plan(kernels, grid, dtype=dtype, accumulate=accumulate, **options)
    out = np.zeros(shape, dtype) if out is None else out
    offsets, kernel_ids = plan.bins(cuda_sources.TILE_HEIGHT, cuda_sources.TILE_WIDTH)
    params, boxes = np.ascontiguousarray(plan.params), np.ascontiguousarray(plan.boxes)
    sums = np.ones(max(plan.n_kernels, 1))
    if plan.normalize == "count" and plan.n_kernels:
        library.count_sums(ctypes.c_longlong(plan.n_kernels), _pointer(sums), _pointer(params), _pointer(boxes))
    entry = library.render_f32 if np.dtype(dtype) == np.float32 else library.render_f64
    entry(ctypes.c_longlong(out.size), _pointer(out), _pointer(params), _pointer(boxes), _pointer(offsets),
          _pointer(kernel_ids), _pointer(sums), ctypes.c_longlong(grid.height), ctypes.c_longlong(grid.width),
          ctypes.c_longlong(cuda_sources.TILE_HEIGHT), ctypes.c_longlong(cuda_sources.TILE_WIDTH),
          ctypes.c_int(COMBINE_CODES[plan.combine]), ctypes.c_int(NORMALIZE_CODES[plan.normalize]),
          ctypes.c_int(int(accumulate)))
    return out


@settings(max_examples=120)
@given(case=render_cases(max_side=70), dtype=st.sampled_from(["float32", "float64"]),
       accumulate=st.booleans())
def test_device_code_on_host_matches_reference(host_library, case, dtype, accumulate):
    kernels, shape, options = case
    start = np.random.default_rng(11).uniform(0, 1, shape) if accumulate else np.zeros(shape)
    expected = start.copy()
    gh.render(kernels, shape, backend="numpy", out=expected, accumulate=accumulate, **options)
    actual = host_render(host_library, kernels, shape, dtype=dtype, out=start.astype(dtype),
                         accumulate=accumulate, **options)
    assert np.abs(actual - expected).max() <= allowed_error(expected, dtype)
    if not accumulate:
        inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options["truncate"], options["extent"]))
        assert not actual[~inside.reshape(shape)].any(), "nonzero pixel outside every support"


def test_device_code_on_host_crowd_and_splats(host_library):
    # Larger cases: many kernels per tile, tiles crossing image edges, count over whole boxes.
    rng = np.random.default_rng(5)
    n = 3000
    splats = gh.Kernels(rng.uniform(0, 300, n), rng.uniform(0, 200, n), rng.uniform(0.5, 4, n),
                        rng.uniform(0.5, 4, n), rng.uniform(0, np.pi, n), rng.uniform(0, 1, n))
    crowd = gh.Kernels(rng.uniform(-10, 310, 300), rng.uniform(-10, 210, 300), rng.uniform(1, 15, 300))
    for kernels, normalize in ((splats, "pdf"), (crowd, "count")):
        expected = gh.render(kernels, (200, 300), backend="numpy", dtype="float64", normalize=normalize, truncate=3)
        actual = host_render(host_library, kernels, (200, 300), dtype="float32", normalize=normalize, truncate=3)
        assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
