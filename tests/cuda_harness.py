"""The CuPy backend without a GPU: CuPy's generated modules, NVRTC, and a counting host stand-in.

Shared by tests/test_cuda_sources.py and bench/gpu_counts.py.

* :func:`module_source` writes the module ``cupy.ElementwiseKernel`` generates for an operation
  (``typedef ... T;``, the preamble, ``CArray`` parameters, a grid-stride loop over ``i``), with the
  32-bit or the 64-bit indexing CuPy picks by array size; with ``host=True`` it adds an
  ``extern "C"`` driver so that a host C++ compiler can run it.
* :class:`NVRTC` compiles such modules with the CUDA runtime compiler (PTX, or SASS for a real
  architecture, whose instructions :func:`sass_of` lists through nvdisasm).
* :func:`counting_cupy` is a module named ``cupy`` that runs everything on the host: arrays are
  :class:`DeviceArray` (NumPy arrays that count the kernel launches and host synchronisations a
  GPU would see), ``ElementwiseKernel`` compiles the operation for the host and runs it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import mmap
import re
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gaussheat_gpu import cuda_sources

C_TYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int"}
CTYPES_SCALARS = {"float64": ctypes.c_double, "float32": ctypes.c_float, "int64": ctypes.c_longlong,
                  "int32": ctypes.c_int}

# The parts of cupy/_core/include/cupy/carray.cuh an ElementwiseKernel operation touches, with the
# same member signatures (const operator[] returns const T&, so `&params[0]` is a const pointer).
STAND_IN = r"""
#if !defined(__CUDACC_RTC__)
#include <cstddef>
#include <xmmintrin.h>
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


def module_source(in_params, out_params, body, name, preamble, out_ctype, host, index64=False):
    """The module CuPy generates for one ElementwiseKernel, plus (host) an ``extern "C"`` driver.

    ``index64`` gives the variant CuPy builds when an argument exceeds 2**31 - 1 elements.
    """
    ins, outs = parse_params(in_params), parse_params(out_params)
    small = "false" if index64 else "true"

    def ctype(p):
        return C_TYPES.get(p.dtype, out_ctype)

    def array(p, const):
        return f"{'const ' if const else ''}CArray<{ctype(p)}, 1, true, {small}> "

    decls = [array(p, True) + p.name if p.raw else f"const {ctype(p)} {p.name}" for p in ins]
    decls += [array(p, False) + (p.name if p.raw else f"_raw_{p.name}") for p in outs]
    decls.append(f"CIndexer<1, {small}> _ind")
    typedefs = "".join(f"typedef {out_ctype} {t};\n" for t in sorted({p.dtype for p in ins + outs} - C_TYPES.keys()))
    refs = "\n".join(f"        {ctype(p)} &{p.name} = _raw_{p.name}[_ind.get()];" for p in outs if not p.raw)
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
        call = [f"CArray<{ctype(p)}, 1, true, {small}>(const_cast<{ctype(p)}*>({p.name}), 0)" if p.raw else p.name
                for p in ins]
        call += [f"CArray<{ctype(p)}, 1, true, {small}>({p.name}, _size)" for p in outs]
        source += f"""
extern "C" void host_{name}(ptrdiff_t _size, int flush_to_zero, {", ".join(args)}) {{
    unsigned int saved = _mm_getcsr();
    if (flush_to_zero) _mm_setcsr(saved | 0x8040);  // FTZ and DAZ, as -ftz=true does for float32
    {name}({", ".join(call)}, CIndexer<1, {small}>(_size));
    _mm_setcsr(saved);
}}
"""
    return source


def operation_module(name, dtype=None, host=False, defines=None, index64=False):
    """The generated module of operation file ``name`` with output dtype ``dtype`` and ``defines``."""
    op = cuda_sources.operation(name)
    return module_source(op.in_params, op.out_params, op.body, cuda_sources.kernel_name(name, dtype, defines),
                         cuda_sources.preamble(defines), C_TYPES[dtype or "float64"], host, index64)


def has_placeholder_output(name):
    return any(p.dtype not in C_TYPES for p in parse_params(cuda_sources.operation(name).out_params))


def render_variants():
    """Every (combine, normalize, eval64) the render kernel is built for: integral is float64 only."""
    variants = []
    for combine in range(3):
        for normalize in range(4):
            for eval64 in (False, True):
                if normalize == 2 and not eval64:
                    continue
                variants.append(cuda_sources.render_defines(combine, normalize, eval64))
    return variants


def variants():
    """(operation, dtype, defines) of every kernel the backend can build."""
    out = []
    for name in cuda_sources.OPERATIONS:
        dtypes = ("float32", "float64") if has_placeholder_output(name) else (None,)
        for dtype in dtypes:
            if name == cuda_sources.RENDER_TILES:
                out += [(name, dtype, d) for d in render_variants() if dtype == "float32" or d["GH_EVAL64"]]
            else:
                out.append((name, dtype, None))
    return out


# -- NVRTC ---------------------------------------------------------------------------------------

def find_nvrtc():
    """Path of libnvrtc from the nvidia-cuda-nvrtc wheel, or None."""
    try:
        import nvidia
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for path in sorted(Path(root).glob("**/libnvrtc.so*")):
            if "builtins" not in path.name:
                return path
    return None


def find_nvdisasm():
    """Path of nvdisasm (the nvidia-cuda-nvdisasm wheel, or PATH), or None."""
    try:
        import nvidia
    except ImportError:
        nvidia = None
    for root in getattr(nvidia, "__path__", []) if nvidia else []:
        for path in sorted(Path(root).glob("**/bin/nvdisasm")):
            return path
    found = shutil.which("nvdisasm")
    return Path(found) if found else None


class NVRTC:
    """Just enough of the NVRTC C API, through ctypes."""

    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _check(self, result, what):
        if result != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(result).decode()}")

    def compile(self, source, options, cubin=False):
        """Compile ``source``; return (success, log, ptx or cubin bytes)."""
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
            code = b""
            real_arch = any(o.startswith("--gpu-architecture=sm_") for o in options)
            if result == 0 and cubin and real_arch:
                self._check(self.lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "cubin size")
                buffer = ctypes.create_string_buffer(size.value)
                self._check(self.lib.nvrtcGetCUBIN(program, buffer), "cubin")
                code = buffer.raw
            elif result == 0 and not real_arch:
                self._check(self.lib.nvrtcGetPTXSize(program, ctypes.byref(size)), "ptx size")
                buffer = ctypes.create_string_buffer(size.value)
                self._check(self.lib.nvrtcGetPTX(program, buffer), "ptx")
                code = buffer.value
            return result == 0, log.value.decode(errors="replace").strip(), code
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))


# CuPy compiles every kernel with these (cupy/cuda/compiler.py), then the operation's own options.
CUPY_OPTIONS = ["--std=c++17", "-ftz=true"]


def sass_of(nvrtc, nvdisasm, source, arch, options=()):
    """SASS instruction lines of ``source`` compiled for ``arch`` (``"sm_90"``), as nvdisasm prints them."""
    ok, log, cubin = nvrtc.compile(source, [f"--gpu-architecture={arch}", *CUPY_OPTIONS, *options], cubin=True)
    assert ok, log
    return sass_lines(nvdisasm, cubin)


def sass_lines(nvdisasm, cubin):
    """SASS instruction lines and ``.L_x_N:`` labels of ``cubin`` (bytes), as nvdisasm prints them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "module.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(nvdisasm), "-c", str(path)], capture_output=True, text=True, check=True).stdout
    return [line for line in text.splitlines()
            if re.search(r"/\*[0-9a-f]{4,}\*/", line) or re.match(r"\s*\.L_x_\d+:", line)]


FP64_OPCODES = re.compile(r"\b(DADD|DMUL|DFMA|DSETP|DMNMX|F2F\.F64|F2F\.F32\.F64|I2F\.F64|F2I\.F64|MUFU\.\w+\.64)")


def visit_loop(lines):
    """The innermost loop of a SASS listing (instructions and ``.L_x_N:`` labels, as :func:`sass_of`
    returns them): the instructions from the target of a backward branch to that branch."""
    labels, instructions = {}, []
    for line in lines:
        label = re.match(r"\s*(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(instructions)
        else:
            instructions.append(line)
    loops = []
    for index, line in enumerate(instructions):
        target = re.search(r"\bBRA\b.*?(\.L_x_\d+)", line)
        if target and labels[target.group(1)] < index:  # a branch to itself is the trap after EXIT
            loops.append(instructions[labels[target.group(1)]:index + 1])
    return min(loops, key=len) if loops else []


# -- running operations on the host --------------------------------------------------------------

HOST_FLAGS = {
    # IEEE double/float arithmetic, every operation rounded: the NumPy reference's arithmetic.
    "ieee": ["-ffp-contract=off"],
    # Multiply-adds fused, as NVRTC does by default (--fmad=true): the GPU's rounding pattern.
    "fma": ["-mfma", "-ffp-contract=fast"],
    # float32 subnormals flushed to zero, as CuPy's -ftz=true (the host flushes float64 too: stricter).
    "ftz": ["-ffp-contract=off"],
}
# Host builds of operations compiled with --fmad=false on the GPU.
NO_FMA_FLAGS = ["-ffp-contract=off"]


class HostCompiler:
    """Builds generated modules into shared libraries with a host C++ compiler (cached per source)."""

    def __init__(self, compiler, folder, flags, flush_to_zero=False):
        self.compiler, self.folder, self.flags, self.flush_to_zero = compiler, folder, flags, flush_to_zero
        self._libraries = {}

    def library(self, source, options=()):
        flags = NO_FMA_FLAGS if "--fmad=false" in options else self.flags
        digest = hashlib.sha1((source + " ".join(flags)).encode()).hexdigest()[:16]
        if digest not in self._libraries:
            path = self.folder / f"module_{digest}.cpp"
            path.write_text(source)
            command = [self.compiler, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion",
                       "-Werror", *flags, "-shared", "-fPIC", str(path), "-o", str(path.with_suffix(".so"))]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
            self._libraries[digest] = ctypes.CDLL(str(path.with_suffix(".so")))
        return self._libraries[digest]


def host_compilers(folder):
    """One :class:`HostCompiler` per entry of :data:`HOST_FLAGS` this machine can run, or {} without a compiler."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        return {}
    flags = dict(HOST_FLAGS)
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not re.search(r"\bfma\b", cpu):
        del flags["fma"]  # cannot run fused code here
    return {name: HostCompiler(compiler, folder, f, flush_to_zero=name == "ftz") for name, f in flags.items()}


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


# -- a counting CuPy on the host -----------------------------------------------------------------

@dataclass
class Counts:
    """What a GPU would see of the calls made through :func:`counting_cupy` since the last reset."""

    launches: int = 0
    syncs: int = 0
    uploads: int = 0
    events: list = field(default_factory=list)

    def launch(self, what):
        self.launches += 1
        self.events.append(("launch", what))

    def sync(self, what):
        self.syncs += 1
        self.events.append(("sync", what))

    def upload(self, what):
        self.uploads += 1
        self.events.append(("upload", what))

    def reset(self):
        self.launches = self.syncs = self.uploads = 0
        self.events = []


def _plain(value):
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _wrap(value, counts):
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        wrapped = value.view(DeviceArray)
        wrapped.counts = counts
        return wrapped
    if isinstance(value, tuple):
        return tuple(_wrap(v, counts) for v in value)
    return value


def _basic_index(key):
    keys = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, np.integer, slice)) or k is Ellipsis or k is None for k in keys)


class DeviceArray(np.ndarray):
    """A NumPy array standing for a CuPy array: kernel launches and host synchronisations are counted.

    Arithmetic, reductions, copies, fills and fancy indexing count a launch; ``get``, ``int``,
    ``float``, ``bool``, ``item`` and ``tolist`` count a synchronisation; views are free.
    """

    counts: Counts = None

    def __array_finalize__(self, obj):
        self.counts = getattr(obj, "counts", None)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        self.counts.launch(f"ufunc {ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        return out[0] if out is not None and len(out) == 1 else _wrap(result, self.counts)

    def __array_function__(self, func, types_, args, kwargs):
        self.counts.launch(f"function {func.__name__}")
        return _wrap(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}), self.counts)

    def __getitem__(self, key):
        if not _basic_index(key):
            self.counts.launch("gather")
            key = _plain(key)
        result = self.view(np.ndarray)[key]
        if not isinstance(result, np.ndarray):
            result = np.asarray(result)  # CuPy returns a 0-d device array
        return _wrap(result, self.counts)

    def __setitem__(self, key, value):
        self.counts.launch("setitem")
        self.view(np.ndarray)[_plain(key)] = _plain(value)

    def fill(self, value):
        self.counts.launch("fill")
        self.view(np.ndarray).fill(value)

    def copy(self, order="C"):
        self.counts.launch("copy")
        return _wrap(self.view(np.ndarray).copy(order), self.counts)

    def astype(self, dtype, *args, **kwargs):
        self.counts.launch("astype")
        return _wrap(self.view(np.ndarray).astype(dtype, *args, **kwargs), self.counts)

    def get(self, stream=None, order="C", out=None, blocking=True):
        self.counts.sync("get")
        return np.array(self.view(np.ndarray), order=order)

    def _synced(self, what):
        self.counts.sync(what)
        return self.view(np.ndarray)

    def __int__(self):
        return int(self._synced("int"))

    def __index__(self):
        return int(self._synced("index"))

    def __float__(self):
        return float(self._synced("float"))

    def __bool__(self):
        return bool(self._synced("bool"))

    def item(self, *args):
        return self._synced("item").item(*args)

    def tolist(self):
        return self._synced("tolist").tolist()


class HostElementwiseKernel:
    """``cupy.ElementwiseKernel``'s constructor and call, run on the host through the generated module.

    As in CuPy, the output type placeholder is bound from the output arrays' dtype at call time, and
    ``i`` runs over the non-raw output's indices or ``size``.
    """

    def __init__(self, compiler, counts, skip, in_params, out_params, operation, name, preamble="", options=()):
        self.compiler, self.counts, self.name = compiler, counts, name
        self.skip = name.startswith(skip) if skip else False
        self.in_params, self.out_params = parse_params(in_params), parse_params(out_params)
        self.text = (in_params, out_params, operation, name, preamble)
        self.options = tuple(options)

    def __call__(self, *args, size=None, block_size=None):
        assert len(args) == len(self.in_params) + len(self.out_params)
        outs = args[len(self.in_params):]
        typed = [a for p, a in zip(self.in_params + self.out_params, args) if p.dtype not in C_TYPES]
        out_ctype = C_TYPES[typed[0].dtype.name] if typed else "double"
        if size is None:
            sized = [a for p, a in zip(self.out_params, outs) if not p.raw]
            assert sized, f"{self.name}: size= is needed when every argument is raw"
            size = sized[0].size
        if block_size is not None:
            assert 1 <= block_size <= 1024
        self.counts.launch(f"kernel {self.name}")
        if self.skip:
            return outs[0] if len(outs) == 1 else outs
        source = module_source(*self.text[:4], self.text[4], out_ctype, host=True, index64=size >= 2**31)
        entry = getattr(self.compiler.library(source, self.options), f"host_{self.text[3]}")
        converted, guarded = [ctypes.c_ssize_t(size), ctypes.c_int(int(self.compiler.flush_to_zero))], []
        for param, arg in zip(self.in_params + self.out_params, args, strict=True):
            if param.raw or isinstance(arg, np.ndarray):
                assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, param
                assert param.dtype not in C_TYPES or arg.dtype == np.dtype(param.dtype), (param, arg.dtype)
                copy = GuardedArray(_plain(arg))
                guarded.append((param, arg, copy))
                converted.append(ctypes.c_void_p(copy.array.ctypes.data))
            else:
                assert not isinstance(arg, np.ndarray), param
                converted.append(CTYPES_SCALARS[param.dtype](arg))
        entry(*converted)
        for param, arg, copy in guarded:
            if param in self.out_params:
                _plain(arg)[...] = copy.array
        return outs[0] if len(outs) == 1 else outs


def counting_cupy(compiler, counts=None, free_bytes=60 * 2**30, skip_kernels=()):
    """A module named ``cupy`` running on the host, counting launches and synchronisations.

    ElementwiseKernels whose names start with one of ``skip_kernels`` are counted but not run.

    Module functions not defined here are NumPy's, each call counted as one launch with its array
    results as :class:`DeviceArray`; allocation (``empty``) is free, host-to-device copies
    (``asarray`` of host data) are counted as uploads.
    """
    counts = counts or Counts()
    module = types.ModuleType("cupy")
    module.__version__ = "host-stand-in"
    module.counts = counts
    module.ndarray = DeviceArray

    def launch_of(name):
        function = getattr(np, name)

        @functools.wraps(function)
        def launched(*args, **kwargs):
            counts.launch(f"cupy.{name}")
            return _wrap(function(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}), counts)
        return launched

    def empty(shape, dtype=float, order="C"):
        return _wrap(np.empty(shape, dtype, order), counts)

    def asarray(a, dtype=None, order=None):
        if isinstance(a, DeviceArray) and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        if isinstance(a, DeviceArray):
            return a.astype(dtype)
        counts.upload("asarray")
        return _wrap(np.array(a, dtype=dtype, order=order or "K"), counts)

    def asnumpy(a):
        if isinstance(a, DeviceArray):
            return a.get()
        return np.asarray(a)

    module.__getattr__ = lambda name: launch_of(name) if callable(getattr(np, name, None)) else getattr(np, name)
    module.empty, module.asarray, module.array, module.asnumpy = empty, asarray, asarray, asnumpy
    for name in ("float32", "float64", "int32", "int64", "bool_", "dtype", "iinfo", "finfo", "ndim", "shape"):
        setattr(module, name, getattr(np, name))
    module.ElementwiseKernel = functools.partial(HostElementwiseKernel, compiler, counts, tuple(skip_kernels))
    stable_argsort = launch_of("argsort")
    module.argsort = lambda a, axis=-1, kind=None: stable_argsort(a, axis=axis, kind="stable")  # CuPy's always is

    class Device:
        def __init__(self, index=0):
            self.id = index
            self.mem_info = (free_bytes, 80 * 2**30)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    module.cuda = types.SimpleNamespace(Device=Device)
    module.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0)
    return module


def load_cupy_backend(fake):
    """gaussheat_gpu.backends.cupy executed against ``fake`` as ``cupy``, kept out of sys.modules.

    Returns the package, with its submodules (``planning``, ``kernels``) loaded the same way.
    """
    import gaussheat_gpu as gh

    folder = Path(gh.__file__).parent / "backends" / "cupy"
    name = f"gaussheat_gpu.backends._cupy_on_host_{id(fake)}"
    saved = {key: sys.modules.get(key) for key in ("cupy",)}
    sys.modules["cupy"] = fake
    try:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
    return package


def counted_render(backend, fake, case, kernels):
    """One float32 render of workload ``case`` (gaussheat_gpu.workloads) through ``backend`` loaded on
    ``fake``, with ``kernels`` on the stand-in device or the host; returns (plan, counts, out)."""
    from gaussheat_gpu.planning import make_grid

    options = dict(case.options)
    grid = make_grid(case.shape, options.pop("extent", None))
    out = fake.empty(case.shape, dtype=np.float32)
    fake.counts.reset()
    plan = backend.make_plan(kernels, grid, dtype=np.dtype("float32"), **options)
    backend.render(plan, out)
    return plan, fake.counts, out
