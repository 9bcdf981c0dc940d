"""The CUDA sources and the cupy backend, proven without a GPU.

Each operation in kernels/ is wrapped the way ``cupy.ElementwiseKernel`` wraps it (``typedef ... T;``,
the header as preamble, ``const CArray<...>`` raw arguments, a grid-stride loop over ``i`` with
``T &out = _raw_out[_ind.get()];``), generated from the signature lines in the .cu file itself, and:

1. compiled by NVRTC for compute_80/compute_90 (PTX) and sm_80/sm_90 (ptxas run too), failing on any
   error or warning, on a stack frame, or on a register spill;
2. compiled for the host by g++ (strict IEEE, and once more with FMA contraction as a GPU does) and
   driven by ``gaussheat_gpu.backends.cupy_backend.render`` itself, loaded against a host stand-in
   for CuPy: planning then runs through its CuPy code paths and the backend passes its real arguments
   to the compiled operation. The result must equal the NumPy backend's float64 reference pixel by
   pixel (DESIGN.md section 3).

What this cannot show: timings, and the last ulps of the GPU's own exp/erf/erfc.
"""

import ctypes
import functools
import hashlib
import importlib.util
import mmap
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_support_mask
from strategies import allowed_error, kernel_dicts, render_cases

import gaussheat_gpu as gh
from gaussheat_gpu import cuda_sources, planning
from gaussheat_gpu.planning import COMBINE_CODES, NORMALIZE_CODES, make_grid, make_plan

# -- CuPy's generated module, reproduced ------------------------------------------------------

C_TYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int"}
CTYPES_SCALARS = {"float64": ctypes.c_double, "float32": ctypes.c_float, "int64": ctypes.c_longlong,
                  "int32": ctypes.c_int}

# The parts of cupy/_core/include/cupy/carray.cuh an ElementwiseKernel operation touches, with the
# same member signatures (const operator[] returns const T&, so `&params[0]` is a const pointer).
STAND_IN = r"""
#if !defined(__CUDACC_RTC__)
#include <cstddef>
#define __global__
#define __device__
#define GH_UNROLL_ONCE
#define CUPY_FOR(i, n) for (ptrdiff_t i = 0; i < (n); ++i)
#else
#define GH_UNROLL_ONCE _Pragma("unroll 1")
#define CUPY_FOR(i, n) \
    for (ptrdiff_t i = static_cast<ptrdiff_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
         i += static_cast<ptrdiff_t>(blockDim.x) * gridDim.x)
#endif

template <typename T, int _ndim, bool _c_contiguous = false, bool _use_32bit_indexing = false>
class CArray {
    T* data_;
    ptrdiff_t size_;
  public:
    __device__ CArray(T* data, ptrdiff_t size) : data_(data), size_(size) {}
    __device__ ptrdiff_t size() const { return size_; }
    __device__ const T& operator[](ptrdiff_t idx) const { return data_[idx]; }
    __device__ T& operator[](ptrdiff_t idx) { return data_[idx]; }
    template <typename Int> __device__ T& operator[](const Int (&idx)[_ndim]) { return data_[idx[0]]; }
};

template <int _ndim, bool _use_32bit_indexing = false>
class CIndexer {
    ptrdiff_t size_;
    ptrdiff_t index_[_ndim];
  public:
    __device__ explicit CIndexer(ptrdiff_t size) : size_(size) {}
    __device__ ptrdiff_t size() const { return size_; }
    __device__ void set(ptrdiff_t i) { index_[0] = i; }
    __device__ const ptrdiff_t (&get() const)[_ndim] { return index_; }
};
"""


class Param(NamedTuple):
    raw: bool
    dtype: str  # a NumPy dtype name, or a type placeholder such as "T"
    name: str


def parse_params(text):
    """ElementwiseKernel parameter syntax ("raw float64 params, int32 combine, T out")."""
    params = []
    for item in text.split(","):
        words = item.split()
        raw = words[0] == "raw"
        dtype, name = words[raw:]
        params.append(Param(raw, dtype, name))
    return params


def module_source(in_params, out_params, body, name, preamble, out_ctype, host):
    """The module CuPy generates for one ElementwiseKernel, plus (host) an ``extern "C"`` driver."""
    ins, outs = parse_params(in_params), parse_params(out_params)

    def ctype(p):
        return C_TYPES.get(p.dtype, out_ctype)

    decls = [f"const CArray<{ctype(p)}, 1, true, true> {p.name}" if p.raw else f"const {ctype(p)} {p.name}"
             for p in ins]
    decls += [f"CArray<{ctype(p)}, 1, true, true> _raw_{p.name}" for p in outs]
    decls.append("CIndexer<1> _ind")
    typedefs = "".join(f"typedef {out_ctype} {t};\n" for t in sorted({p.dtype for p in ins + outs} - C_TYPES.keys()))
    refs = "\n".join(f"        {ctype(p)} &{p.name} = _raw_{p.name}[_ind.get()];" for p in outs)
    source = f"""{STAND_IN}
{typedefs}{preamble}
extern "C" __global__ void {name}({", ".join(decls)}) {{
    GH_UNROLL_ONCE
    CUPY_FOR(i, _ind.size()) {{
        _ind.set(i);
{refs}
        {body};
    }}
}}
"""
    if host:
        args = [f"const {ctype(p)}* {p.name}" if p.raw else f"{ctype(p)} {p.name}" for p in ins]
        args += [f"{ctype(p)}* {p.name}" for p in outs]
        call = [f"CArray<{ctype(p)}, 1, true, true>(const_cast<{ctype(p)}*>({p.name}), 0)" if p.raw else p.name
                for p in ins]
        call += [f"CArray<{ctype(p)}, 1, true, true>({p.name}, n)" for p in outs]
        source += f"""
extern "C" void host_{name}(ptrdiff_t n, {", ".join(args)}) {{
    {name}({", ".join(call)}, CIndexer<1>(n));
}}
"""
    return source


def operation_module(name, dtype=None, host=False):
    """The generated module of operation file ``name`` with output dtype ``dtype``."""
    op = cuda_sources.operation(name)
    return module_source(op.in_params, op.out_params, op.body, cuda_sources.kernel_name(name, dtype),
                         cuda_sources.read(cuda_sources.HEADER), C_TYPES[dtype or "float64"], host)


def has_placeholder_output(name):
    return any(p.dtype not in C_TYPES for p in parse_params(cuda_sources.operation(name).out_params))


VARIANTS = [(name, dtype) for name in cuda_sources.OPERATIONS
            for dtype in (("float32", "float64") if has_placeholder_output(name) else (None,))]


# -- the plan layout and the files -------------------------------------------------------------

def test_header_layout_matches_planning():
    header = cuda_sources.read(cuda_sources.HEADER)
    defines = {name: int(value) for name, value in re.findall(r"#define (GH_\w+) (\d+)\s*$", header, re.MULTILINE)}
    checked = 0
    for name in dir(planning):
        if re.fullmatch(r"[PB]_\w+|N_PARAMS|N_BOX", name):
            assert defines[f"GH_{name}"] == getattr(planning, name), name
            checked += 1
    assert checked == planning.N_PARAMS + planning.N_BOX + 2
    for code_map, prefix in ((COMBINE_CODES, "GH_COMBINE_"), (NORMALIZE_CODES, "GH_NORMALIZE_")):
        assert {k: v for k, v in defines.items() if k.startswith(prefix)} == \
               {prefix + mode.upper(): code for mode, code in code_map.items()}


def test_every_source_is_compiled_by_these_tests():
    # A new file in kernels/ must be listed in cuda_sources.OPERATIONS (or be the header) to ship.
    assert cuda_sources.source_names() == sorted([cuda_sources.HEADER, *cuda_sources.OPERATIONS])
    for name in cuda_sources.OPERATIONS:
        op = cuda_sources.operation(name)
        assert "//" not in op.body and len(op.body.splitlines()) <= 4
        parse_params(op.in_params), parse_params(op.out_params)


def test_installed_layout_reads_the_wheel_copy(tmp_path):
    # pyproject.toml force-includes kernels/ as gaussheat_gpu/_cuda_sources/ in the wheel.
    package = tmp_path / "site-packages" / "gaussheat_gpu"
    shutil.copytree(cuda_sources.source_dir(), package / "_cuda_sources")
    shutil.copy(cuda_sources.__file__, package / "cuda_sources.py")
    spec = importlib.util.spec_from_file_location("installed_cuda_sources", package / "cuda_sources.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    assert installed.source_dir() == package / "_cuda_sources"
    assert installed.source_names() == cuda_sources.source_names()
    assert installed.operation(installed.RENDER_PIXEL) == cuda_sources.operation(cuda_sources.RENDER_PIXEL)


def test_operation_file_without_signature_is_refused(tmp_path, monkeypatch):
    (tmp_path / cuda_sources.HEADER).write_text("")
    (tmp_path / "bad.cu").write_text("// in_params: raw float64 params\nout = 1;\n")
    monkeypatch.setattr(cuda_sources, "source_dir", lambda: tmp_path)
    cuda_sources.read.cache_clear(), cuda_sources.operation.cache_clear()
    try:
        with pytest.raises(ValueError, match="out_params"):
            cuda_sources.operation("bad.cu")
    finally:
        cuda_sources.read.cache_clear(), cuda_sources.operation.cache_clear()


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
    """Just enough of the NVRTC C API, through ctypes."""

    def __init__(self, path):
        self.path = path
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
            if result == 0 and not any(o.startswith("--gpu-architecture=sm_") for o in options):
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
        pytest.skip("NVRTC library not found (install the dev extra, which brings the nvidia-cuda-nvrtc wheel)")
    return NVRTC(path)


def diagnostics(log):
    """Lines of a compile log that are warnings or errors (ptxas' "info" lines are neither)."""
    return [line for line in log.splitlines() if re.search(r"warning|error|fatal", line, re.IGNORECASE)]


@pytest.mark.parametrize("options", [["--std=c++17"], ["--std=c++11"], ["--std=c++17", "-default-device"]],
                         ids=["c++17", "c++11", "default-device"])
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize(("name", "dtype"), VARIANTS, ids=[f"{n}-{d}" for n, d in VARIANTS])
def test_operations_compile_to_ptx_with_nvrtc_without_diagnostics(nvrtc, name, dtype, arch, options):
    ok, log, ptx = nvrtc.compile(operation_module(name, dtype), [f"--gpu-architecture={arch}", *options])
    assert ok, log
    assert log == "", f"NVRTC printed diagnostics:\n{log}"
    assert f".entry {cuda_sources.kernel_name(name, dtype)}(".encode() in ptx


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize(("name", "dtype"), VARIANTS, ids=[f"{n}-{d}" for n, d in VARIANTS])
def test_operations_assemble_for_sm80_sm90_without_stack_or_spills(nvrtc, name, dtype, arch, record_property):
    # ptxas runs inside NVRTC for a real architecture: its report shows what a GPU would load.
    options = [f"--gpu-architecture={arch}", "--std=c++17", "-Xptxas", "-v", "-Xptxas", "--warn-on-spills",
               "-Xptxas", "--warn-on-local-memory-usage"]
    ok, log, _ = nvrtc.compile(operation_module(name, dtype), options)
    assert ok, log
    assert not diagnostics(log), log
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    registers = [int(n) for n in re.findall(r"Used (\d+) registers", log)]
    assert frames and registers, log
    # Every value of the per-pixel loop stays in registers: no per-thread stack, no spills.
    assert all(frame == ("0", "0", "0") for frame in frames), log
    # The per-pixel kernel is the hot one: few enough registers for at least half occupancy
    # (64 Ki registers per SM, 2048 threads). The count pre-pass runs one thread per kernel.
    if name == cuda_sources.RENDER_PIXEL:
        assert max(registers) <= 64, log
    record_property("registers", max(registers))


def test_nvrtc_harness_fails_on_errors_and_warnings(nvrtc):
    # The checks above must be able to fail: a typo, and an unused variable (a warning).
    source = operation_module(cuda_sources.RENDER_PIXEL, "float32")
    ok, log, _ = nvrtc.compile(source.replace("gh_combine<T>(current", "gh_combine<T>(curent"),
                               ["--gpu-architecture=compute_80"])
    assert not ok and "curent" in log
    ok, log, _ = nvrtc.compile(source.replace("_ind.set(i);", "_ind.set(i); int unused = 0;"),
                               ["--gpu-architecture=compute_80"])
    assert ok and "unused" in log and diagnostics(log)


# -- 2. the device code and the backend on the host ----------------------------------------------

HOST_FLAGS = {
    # IEEE double/float arithmetic, every operation rounded: the NumPy reference's arithmetic.
    "ieee": ["-ffp-contract=off"],
    # Multiply-adds fused, as NVRTC does by default (--fmad=true): the GPU's rounding pattern.
    "fma": ["-mfma", "-ffp-contract=fast"],
}


class HostCompiler:
    """Builds generated modules into shared libraries with a host C++ compiler (cached per source)."""

    def __init__(self, compiler, folder, flags):
        self.compiler, self.folder, self.flags = compiler, folder, flags
        self._libraries = {}

    def library(self, source):
        digest = hashlib.sha1((source + " ".join(self.flags)).encode()).hexdigest()[:16]
        if digest not in self._libraries:
            path = self.folder / f"module_{digest}.cpp"
            path.write_text(source)
            command = [self.compiler, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion",
                       "-Werror", *self.flags, "-shared", "-fPIC", str(path), "-o", str(path.with_suffix(".so"))]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
            self._libraries[digest] = ctypes.CDLL(str(path.with_suffix(".so")))
        return self._libraries[digest]


class HostElementwiseKernel:
    """``cupy.ElementwiseKernel``'s constructor and call, run on the host through the generated module.

    As in CuPy, the output type placeholder is bound from the output array's dtype at call time,
    and ``i`` runs over the output's flat indices.
    """

    def __init__(self, compiler, in_params, out_params, operation, name, preamble=""):
        self.compiler = compiler
        self.in_params, self.out_params = parse_params(in_params), parse_params(out_params)
        self.text = (in_params, out_params, operation, name, preamble)

    def __call__(self, *args):
        assert len(args) == len(self.in_params) + len(self.out_params) == len(self.in_params) + 1
        out = args[-1]
        assert out.flags.c_contiguous
        source = module_source(*self.text[:4], self.text[4], C_TYPES[out.dtype.name], host=True)
        entry = getattr(self.compiler.library(source), f"host_{self.text[3]}")
        converted, guarded = [ctypes.c_ssize_t(out.size)], []
        for param, arg in zip(self.in_params + self.out_params, args, strict=True):
            if param.raw or isinstance(arg, np.ndarray):
                assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, param
                assert param.dtype not in C_TYPES or arg.dtype == np.dtype(param.dtype), param
                copy = GuardedArray(arg)
                guarded.append(copy)
                converted.append(ctypes.c_void_p(copy.array.ctypes.data))
            else:
                converted.append(CTYPES_SCALARS[param.dtype](arg))
        entry(*converted)
        out[...] = guarded[-1].array
        return out


class GuardedArray:
    """A copy of an array that ends where an unreadable page begins.

    A GPU reading past the end of an allocation may fault or read garbage; on the host a read
    past the end of these copies is a segmentation fault, so such a bug cannot pass unseen.
    """

    _libc = ctypes.CDLL(None, use_errno=True)
    PROT_NONE = 0

    def __init__(self, array):
        page = mmap.PAGESIZE
        data_pages = max(1, -(-array.nbytes // page))
        self._buffer = mmap.mmap(-1, (data_pages + 1) * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._buffer))
        guard = ctypes.c_void_p(base + data_pages * page)
        assert self._libc.mprotect(guard, ctypes.c_size_t(page), self.PROT_NONE) == 0, ctypes.get_errno()
        self.array = np.frombuffer(self._buffer, dtype=array.dtype, count=array.size,
                                   offset=data_pages * page - array.nbytes).reshape(array.shape)
        self.array[...] = array


def fake_cupy(compiler):
    """A module named cupy that is NumPy plus the few CUDA calls the backend makes, on the host.

    Planning code takes its CuPy branches (``xp is not numpy``) with it.
    """
    module = types.ModuleType("cupy")
    module.__getattr__ = lambda name: getattr(np, name)
    module.__version__ = "host-stand-in"
    module.ElementwiseKernel = functools.partial(HostElementwiseKernel, compiler)
    module.asnumpy = np.asarray
    module.cuda = types.SimpleNamespace(Device=lambda *a: types.SimpleNamespace(id=0))
    return module


def load_backend_on(fake):
    """gaussheat_gpu.backends.cupy_backend executed against ``fake``, kept out of sys.modules."""
    path = Path(gh.__file__).parent / "backends" / "cupy_backend.py"
    spec = importlib.util.spec_from_file_location("gaussheat_gpu.backends._cupy_backend_on_host", path)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fake
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    return module


@pytest.fixture(scope="session")
def host_compilers(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++/c++/clang++) on PATH to build the device code for the host")
    flags = dict(HOST_FLAGS)
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not re.search(r"\bfma\b", cpu):
        del flags["fma"]  # cannot run fused code here
    folder = tmp_path_factory.mktemp("cuda_host")
    return {name: HostCompiler(compiler, folder, f) for name, f in flags.items()}


@pytest.fixture(scope="session")
def host_backends(host_compilers):
    backends = {}
    for name, compiler in host_compilers.items():
        fake = fake_cupy(compiler)
        backends[name] = (load_backend_on(fake), fake)
    return backends


def host_render(host_backends, variant, kernels, shape, *, dtype, out=None, accumulate=False, tiles=None,
                **options):
    """Render through cupy_backend.render on the host: its planning branch, arguments and device code."""
    backend, fake = host_backends[variant]
    grid = make_grid(shape, options.pop("extent", None))
    plan = make_plan(kernels.to(fake), grid, dtype=dtype, accumulate=accumulate, xp=fake, **options)
    assert plan.xp is fake
    out = np.zeros(shape, dtype) if out is None else out
    with pytest.MonkeyPatch.context() as patch:
        if tiles is not None:
            patch.setattr(cuda_sources, "TILE_HEIGHT", tiles[0])
            patch.setattr(cuda_sources, "TILE_WIDTH", tiles[1])
        backend.render(plan, out)
    return out


TILES = st.sampled_from([None, (16, 16), (1, 1), (5, 7), (64, 4096)])  # None: the backend's own


@settings(max_examples=150)
@given(case=render_cases(max_side=70), dtype=st.sampled_from(["float32", "float64"]), accumulate=st.booleans(),
       variant=st.sampled_from(sorted(HOST_FLAGS)), tiles=TILES)
def test_backend_on_host_matches_reference(host_backends, case, dtype, accumulate, variant, tiles):
    kernels, shape, options = case
    if variant not in host_backends:
        variant = "ieee"
    start = np.random.default_rng(11).uniform(0, 1, shape) if accumulate else np.zeros(shape)
    expected = start.copy()
    gh.render(kernels, shape, backend="numpy", out=expected, accumulate=accumulate, **options)
    actual = host_render(host_backends, variant, kernels, shape, dtype=dtype, out=start.astype(dtype),
                         accumulate=accumulate, tiles=tiles, **options)
    assert np.abs(actual - expected).max() <= allowed_error(expected, dtype)
    if not accumulate:
        inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options["truncate"], options["extent"]))
        assert not actual[~inside.reshape(shape)].any(), "nonzero pixel outside every support"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalize", ["pdf", "peak", "integral", "count"])
@pytest.mark.parametrize("combine", ["sum", "max", "por"])
def test_backend_on_host_every_mode_on_a_batch(host_backends, combine, normalize, dtype):
    # Every combine x normalize x dtype, rotated (but integral), batch of 3, reversed extent, both
    # host builds: supports crossing many tiles and image edges.
    rng = np.random.default_rng(COMBINE_CODES[combine] * 10 + NORMALIZE_CODES[normalize])
    n = 150
    sigma_x = rng.uniform(0.4, 12, n)
    sigma_y = sigma_x if normalize == "integral" else rng.uniform(0.4, 12, n)
    kernels = gh.Kernels(rng.uniform(-15, 115, n), rng.uniform(-15, 75, n), sigma_x, sigma_y,
                         theta=0.0 if normalize == "integral" else rng.uniform(-np.pi, np.pi, n),
                         amplitude=rng.uniform(0, 1e-3 if combine == "por" else 1, n), image=rng.integers(0, 3, n))
    shape = (3, 60, 100)
    options = {"combine": combine, "normalize": normalize, "truncate": 3.0, "extent": (99, 0, 0, 59)}
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    for variant in host_backends:
        actual = host_render(host_backends, variant, kernels, shape, dtype=dtype, **options)
        assert np.abs(actual - expected).max() <= allowed_error(expected, dtype), variant


def test_backend_on_host_crowd_and_splats(host_backends):
    # Larger cases: thousands of rotated splats, many kernels per tile, count over whole boxes.
    rng = np.random.default_rng(5)
    n = 3000
    splats = gh.Kernels(rng.uniform(0, 300, n), rng.uniform(0, 200, n), rng.uniform(0.5, 4, n),
                        rng.uniform(0.5, 4, n), rng.uniform(0, np.pi, n), rng.uniform(0, 1, n))
    crowd = gh.Kernels(rng.uniform(-10, 310, 300), rng.uniform(-10, 210, 300), rng.uniform(1, 15, 300))
    for kernels, normalize in ((splats, "pdf"), (crowd, "count")):
        expected = gh.render(kernels, (200, 300), backend="numpy", dtype="float64", normalize=normalize, truncate=3)
        actual = host_render(host_backends, "ieee", kernels, (200, 300), dtype="float32", normalize=normalize,
                             truncate=3)
        assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
        if normalize == "count":  # each kernel with a pixel in the image spreads exactly its amplitude, 1
            visible = make_plan(crowd, make_grid((200, 300)), normalize="count", truncate=3).n_kernels
            assert 250 < visible < len(crowd)
            np.testing.assert_allclose(actual.sum(dtype=np.float64), visible, rtol=1e-5)


def test_count_pre_pass_on_host_is_the_sum_over_each_box(host_backends):
    backend, fake = host_backends["ieee"]
    rng = np.random.default_rng(8)
    kernels = gh.Kernels(rng.uniform(-5, 45, 40), rng.uniform(-5, 35, 40), rng.uniform(0.3, 6, 40),
                         rng.uniform(0.3, 6, 40), theta=np.where(rng.uniform(size=40) < 0.5, 0.0, 1.0))
    plan = make_plan(kernels.to(fake), make_grid((30, 40)), normalize="count", truncate=2.5, xp=fake)
    sums = np.empty(plan.n_kernels)
    backend._elementwise(cuda_sources.COUNT_SUMS)(plan.params.ravel(), plan.boxes.ravel(), sums)
    for k, (p, box) in enumerate(zip(plan.params, plan.boxes, strict=True)):
        u = np.arange(box[0], box[1] + 1) - p[planning.P_CX]
        w = (np.arange(box[2], box[3] + 1) - p[planning.P_CY])[:, None]
        q = p[planning.P_A] * u * u + 2 * p[planning.P_B] * u * w + p[planning.P_C] * w * w
        g = np.exp(-0.5 * (q - p[planning.P_SHIFT_COL] - p[planning.P_SHIFT_ROW]))
        assert sums[k] == pytest.approx(g.sum(), rel=1e-13)


def test_backend_caches_one_kernel_per_device_operation_and_dtype(host_backends):
    backend, _ = host_backends["ieee"]
    kernels = gh.Kernels(x=[3.0, 9.0], y=[4.0, 2.0], sigma_x=[1.0, 2.0])
    for dtype in ("float32", "float64", "float32"):
        host_render(host_backends, "ieee", kernels, (8, 12), dtype=dtype, normalize="count")
    keys = {key for key in backend._kernels if key[1] == cuda_sources.RENDER_PIXEL}
    assert keys == {(0, cuda_sources.RENDER_PIXEL, "float32"), (0, cuda_sources.RENDER_PIXEL, "float64")}
    assert backend._kernels[(0, cuda_sources.COUNT_SUMS, None)].text[3] == "gaussheat_count_sums"
    assert backend._kernels[(0, cuda_sources.RENDER_PIXEL, "float32")].text[3] == "gaussheat_render_pixel_float32"


def test_backend_on_host_with_no_kernel_in_the_image(host_backends):
    kernels = gh.Kernels(x=[-100.0], y=[-100.0], sigma_x=1.0)
    out = np.full((4, 5), 7.0, np.float32)
    host_render(host_backends, "ieee", kernels, (4, 5), dtype="float32", out=out)
    assert not out.any()
    out[:] = 7.0
    host_render(host_backends, "ieee", kernels, (4, 5), dtype="float32", out=out, accumulate=True)
    assert (out == 7.0).all()


# -- availability and `gaussheat info`, with CUDA answering or not ---------------------------------

class FakeRuntime:
    """cupy.cuda.runtime as a machine with one device, or with none (``error`` set)."""

    def __init__(self, error=None):
        self.error = error

    def getDeviceCount(self):
        if self.error:
            raise RuntimeError(self.error)
        return 1

    def runtimeGetVersion(self):
        return 13000

    def driverGetVersion(self):
        if self.error:
            raise RuntimeError(self.error)
        return 13020

    def getDeviceProperties(self, index):
        return {"name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0}


def backend_with_runtime(host_compilers, runtime, nvrtc_version=(13, 0)):
    fake = fake_cupy(host_compilers["ieee"])

    class Device:
        def __init__(self, index=0):
            self.id = index
            self.mem_info = (60 * 2**30, 80 * 2**30)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def get_version():
        if nvrtc_version is None:
            raise OSError("libnvrtc.so.13: cannot open shared object file")
        return nvrtc_version

    nvrtc = types.SimpleNamespace(getVersion=get_version)
    fake.cuda = types.SimpleNamespace(Device=Device, runtime=runtime, nvrtc=nvrtc)
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 2**30)
    return load_backend_on(fake), fake, nvrtc


@pytest.mark.parametrize("case", ["usable", "no device", "no nvrtc"])
def test_unavailable_reason_and_device_info(host_compilers, monkeypatch, case):
    runtime = FakeRuntime("cudaErrorNoDevice: no CUDA-capable device is detected" if case == "no device" else None)
    backend, fake, nvrtc = backend_with_runtime(host_compilers, runtime, None if case == "no nvrtc" else (13, 0))
    for name, module in (("cupy", fake), ("cupy.cuda", fake.cuda), ("cupy.cuda.nvrtc", nvrtc)):
        monkeypatch.setitem(sys.modules, name, module)
    reason, lines = backend.unavailable_reason(), backend.device_info()
    assert lines[0] == "cupy: host-stand-in" and all(": " in line for line in lines)
    if case == "usable":
        assert reason is None
        assert lines[1:4] == ["CUDA runtime: 13.0", "CUDA driver: 13.2", "NVRTC: 13.0"]
        assert "device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, 80.0 GiB (60.0 GiB free)" in lines
        assert backend.free_memory() == 61 * 2**30  # the device's free memory and CuPy's unused pool blocks
    elif case == "no device":
        assert reason.startswith("no CUDA device: ") and "cudaErrorNoDevice" in reason
        assert lines[-1] == f"cupy backend: not usable: {reason}"
    else:
        assert "NVRTC" in reason and "cannot open shared object" in reason
        assert "NVRTC: not loadable (libnvrtc.so.13: cannot open shared object file)" in lines


def test_check_output_device(host_compilers):
    backend, _, _ = backend_with_runtime(host_compilers, FakeRuntime())
    backend.check_output_device(types.SimpleNamespace(device=types.SimpleNamespace(id=0)))
    with pytest.raises(ValueError, match="out is on CUDA device 1 but rendering runs on device 0"):
        backend.check_output_device(types.SimpleNamespace(device=types.SimpleNamespace(id=1)))
