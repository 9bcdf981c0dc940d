"""The CUDA sources and the cupy backend, proven without a GPU.

Each operation in kernels/ is wrapped the way ``cupy.ElementwiseKernel`` wraps it (tests/cuda_harness.py)
and:

1. compiled by NVRTC with CuPy's options: every variant the backend builds (output dtypes,
   compile-time modes) for sm_90 with ptxas run, and a sample for compute_80 with 32- and 64-bit
   indexing and C++11/17, failing on any error or
   warning, on a stack frame, or on a register spill; the render kernel's in-box visit is counted in
   SASS (no float64 instruction on the float32 path, a bounded instruction count);
2. compiled for the host by g++ (strict IEEE; FMA contraction as a GPU does; float32 flushed to zero
   as CuPy's -ftz=true) and driven by ``gaussheat_gpu.backends.cupy`` itself, loaded against a
   host stand-in for CuPy that counts launches and host synchronisations. The result must equal
   the NumPy backend's float64 reference pixel by pixel (DESIGN.md section 3), the device plan's
   boxes must be the host plan's bit for bit, and a call must stay within its launch budget.

What this cannot show: timings, and the last ulps of the GPU's own exp/erf/erfc.
"""

import re
import shutil
import sys
import types

import numpy as np
import pytest
from cuda_harness import (
    FP64_OPCODES,
    CUPY_OPTIONS,
    NVRTC,
    Counts,
    counted_render,
    counting_cupy,
    find_nvdisasm,
    find_nvrtc,
    host_compilers,
    load_cupy_backend,
    operation_module,
    parse_params,
    sass_of,
    variants,
    visit_loop,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_support_mask
from strategies import allowed_error, kernel_dicts, render_cases

import gaussheat_gpu as gh
from gaussheat_gpu import cuda_sources, planning, workloads
from gaussheat_gpu.planning import COMBINE_CODES, NORMALIZE_CODES, make_grid, make_plan

VARIANTS = variants()


def variant_id(variant):
    name, dtype, defines = variant
    return cuda_sources.kernel_name(name, dtype, defines).removeprefix("gaussheat_")


# -- the plan layout and the files -------------------------------------------------------------

def header_defines():
    header = cuda_sources.read(cuda_sources.HEADER)
    return {name: int(value) for name, value in re.findall(r"#define (GH_\w+) (\d+)(?:\s|$)", header)}


def test_header_layout_matches_planning(host_backends):
    defines = header_defines()
    checked = 0
    for name in dir(planning):
        if re.fullmatch(r"[PB]_\w+|N_PARAMS|N_BOX", name):
            assert defines[f"GH_{name}"] == getattr(planning, name), name
            checked += 1
    assert checked == planning.N_PARAMS + planning.N_BOX + 2
    for code_map, prefix in ((COMBINE_CODES, "GH_COMBINE_"), (NORMALIZE_CODES, "GH_NORMALIZE_")):
        assert {k: v for k, v in defines.items() if k.startswith(prefix)} == \
               {prefix + mode.upper(): code for mode, code in code_map.items()}
    device_planning = host_backends["ieee"][0].planning
    assert (defines["GH_N_FAST"], defines["GH_N_IBOX"], defines["GH_N_SUMMARY"]) == \
           (device_planning.N_FAST, device_planning.N_IBOX, device_planning.N_SUMMARY)
    assert (defines["GH_S_ERROR"], defines["GH_S_NEEDS64"], defines["GH_S_ROTATED"]) == \
           (device_planning.S_ERROR, device_planning.S_NEEDS64, device_planning.S_ROTATED)
    assert (defines["GH_TILE"], defines["GH_TILE_PIXELS"], defines["GH_COUNT_LANES"]) == \
           (cuda_sources.TILE, cuda_sources.TILE_PIXELS, cuda_sources.COUNT_LANES_PER_KERNEL)
    assert 1 << defines["GH_TILE_SHIFT"] == cuda_sources.TILE
    assert (planning.CHECK_IMAGE, planning.CHECK_INTEGRAL_ROTATED, planning.CHECK_POR, planning.CHECK_ROTATED_REACH) \
        == (0, 1, 2, 3)  # the order of the device's error key


def test_every_source_is_compiled_by_these_tests():
    # A new file in kernels/ must be listed in cuda_sources.OPERATIONS (or be the header) to ship.
    assert cuda_sources.source_names() == sorted([cuda_sources.HEADER, *cuda_sources.OPERATIONS])
    assert {v[0] for v in VARIANTS} == set(cuda_sources.OPERATIONS)
    for name in cuda_sources.OPERATIONS:
        op = cuda_sources.operation(name)
        assert "//" not in op.body and len(op.body.splitlines()) <= 4
        parse_params(op.in_params), parse_params(op.out_params)
    assert cuda_sources.operation(cuda_sources.PLAN_KERNELS).options == ("--fmad=false",)


def test_installed_layout_reads_the_wheel_copy(tmp_path):
    import importlib.util

    # pyproject.toml force-includes kernels/ as gaussheat_gpu/_cuda_sources/ in the wheel.
    package = tmp_path / "site-packages" / "gaussheat_gpu"
    shutil.copytree(cuda_sources.source_dir(), package / "_cuda_sources")
    shutil.copy(cuda_sources.__file__, package / "cuda_sources.py")
    spec = importlib.util.spec_from_file_location("installed_cuda_sources", package / "cuda_sources.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    assert installed.source_dir() == package / "_cuda_sources"
    assert installed.source_names() == cuda_sources.source_names()
    assert installed.operation(installed.RENDER_TILES) == cuda_sources.operation(cuda_sources.RENDER_TILES)


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


def test_kernel_names_record_the_variant():
    defines = cuda_sources.render_defines(2, 3, False)
    assert cuda_sources.kernel_name(cuda_sources.RENDER_TILES, "float32", defines) == \
        "gaussheat_render_tiles_float32_c2_n3_e0"
    assert cuda_sources.kernel_name(cuda_sources.PLAN_KERNELS) == "gaussheat_plan_kernels"


# -- 1. NVRTC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nvrtc():
    path = find_nvrtc()
    if path is None:
        pytest.skip("NVRTC library not found (install the dev extra, which brings the nvidia-cuda-nvrtc wheel)")
    return NVRTC(path)


def diagnostics(log):
    """Lines of a compile log that are warnings or errors (ptxas' "info" lines are neither)."""
    return [line for line in log.splitlines() if re.search(r"warning|error|fatal", line, re.IGNORECASE)]


# The plan kernel takes cos/sin of device thetas: CUDA's float64 argument reduction for huge angles
# (Payne-Hanek) keeps a 40-byte table on the stack. Nothing else may use the stack.
TRIG_STACK = {cuda_sources.PLAN_KERNELS: "40"}


def assemble(nvrtc, source, arch, options=(), stack="0"):
    """Compile for a real architecture with ptxas' report; return (registers, log)."""
    flags = [f"--gpu-architecture={arch}", *CUPY_OPTIONS, *options, "-Xptxas", "-v", "-Xptxas", "--warn-on-spills",
             "-Xptxas", "--warn-on-local-memory-usage"]
    ok, log, _ = nvrtc.compile(source, flags)
    assert ok, log
    expected_warning = f"Local memory used for function '.*', size of stack frame: {stack} bytes"
    assert not [line for line in diagnostics(log) if stack == "0" or not re.search(expected_warning, line)], log
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    registers = [int(n) for n in re.findall(r"Used (\d+) registers", log)]
    assert frames and registers, log
    # Every value stays in registers: no spills, no per-thread stack but the one named.
    assert all(frame in (("0", "0", "0"), (stack, "0", "0")) for frame in frames), log
    return max(registers), log


@pytest.mark.parametrize("variant", VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_every_variant_assembles_for_sm90_without_stack_or_spills(nvrtc, variant, record_property):
    name, dtype, defines = variant
    options = cuda_sources.operation(name).options
    registers, _ = assemble(nvrtc, operation_module(name, dtype, defines=defines), "sm_90", options,
                            stack=TRIG_STACK.get(name, "0"))
    if name == cuda_sources.RENDER_TILES:
        # The per-pixel kernel is the hot one: few enough registers for full occupancy of 256-thread
        # blocks at 64 registers (64 Ki registers per SM, 2048 threads: 32 registers for all of them).
        assert registers <= 64
    record_property("registers", registers)


SAMPLE = [v for v in VARIANTS if v[2] is None or v[2] in (cuda_sources.render_defines(0, 0, False),
                                                         cuda_sources.render_defines(1, 3, True))]


@pytest.mark.parametrize("index64", [False, True], ids=["index32", "index64"])
@pytest.mark.parametrize("std", ["--std=c++17", "--std=c++11"])
@pytest.mark.parametrize("variant", SAMPLE, ids=[variant_id(v) for v in SAMPLE])
def test_operations_compile_for_sm80_both_indexings_and_standards(nvrtc, variant, std, index64):
    name, dtype, defines = variant
    source = operation_module(name, dtype, defines=defines, index64=index64)
    options = ["--gpu-architecture=compute_80", std, "-ftz=true", *cuda_sources.operation(name).options]
    ok, log, ptx = nvrtc.compile(source, options)
    assert ok, log
    assert log == "", f"NVRTC printed diagnostics:\n{log}"
    assert f".entry {cuda_sources.kernel_name(name, dtype, defines)}(".encode() in ptx


def test_nvrtc_harness_fails_on_errors_and_warnings(nvrtc):
    # The checks above must be able to fail: a typo, and an unused variable (a warning).
    source = operation_module(cuda_sources.RENDER_TILES, "float32", defines=cuda_sources.render_defines(0, 0, False))
    ok, log, _ = nvrtc.compile(source.replace("gh_combine<T>(current", "gh_combine<T>(curent"),
                               ["--gpu-architecture=compute_80"])
    assert not ok and "curent" in log
    ok, log, _ = nvrtc.compile(source.replace("_ind.set(i);", "_ind.set(i); int unused = 0;"),
                               ["--gpu-architecture=compute_80"])
    assert ok and "unused" in log and diagnostics(log)


# -- the render kernel's visit, in SASS ------------------------------------------------------------

@pytest.fixture(scope="module")
def nvdisasm():
    path = find_nvdisasm()
    if path is None:
        pytest.skip("nvdisasm not found (install the dev extra, which brings the nvidia-cuda-nvdisasm wheel)")
    return path


def render_visit_sass(nvrtc, nvdisasm, dtype, defines, arch="sm_90"):
    lines = sass_of(nvrtc, nvdisasm, operation_module(cuda_sources.RENDER_TILES, dtype, defines=defines), arch)
    loop = visit_loop(lines)
    assert loop, "no loop found in the render kernel"
    return loop


FAST_MODES = [(c, n) for c in ("sum", "max", "por") for n in ("pdf", "peak")]


@pytest.mark.parametrize(("combine", "normalize"), FAST_MODES, ids=[f"{c}-{n}" for c, n in FAST_MODES])
def test_float32_visit_has_no_float64_instruction_and_at_most_45_instructions(nvrtc, nvdisasm, combine, normalize):
    defines = cuda_sources.render_defines(COMBINE_CODES[combine], NORMALIZE_CODES[normalize], False)
    loop = render_visit_sass(nvrtc, nvdisasm, "float32", defines)
    fp64 = [line for line in loop if FP64_OPCODES.search(line)]
    assert not fp64, "\n".join(fp64)
    assert len(loop) <= 45, "\n".join(loop)


def test_sass_visit_count_sees_float64_where_it_is(nvrtc, nvdisasm):
    # The counter must be able to fail: the float64 evaluation does run float64 instructions.
    loop = render_visit_sass(nvrtc, nvdisasm, "float32", cuda_sources.render_defines(0, 0, True))
    assert any(FP64_OPCODES.search(line) for line in loop)


# -- 2. the device code and the backend on the host ----------------------------------------------

@pytest.fixture(scope="session")
def compilers(tmp_path_factory):
    found = host_compilers(tmp_path_factory.mktemp("cuda_host"))
    if not found:
        pytest.skip("no C++ compiler (g++/c++/clang++) on PATH to build the device code for the host")
    return found


@pytest.fixture(scope="session")
def host_backends(compilers):
    backends = {}
    for name, compiler in compilers.items():
        fake = counting_cupy(compiler)
        backends[name] = (load_cupy_backend(fake), fake)
    return backends


def host_render(host_backends, variant, kernels, shape, *, dtype, out=None, accumulate=False, **options):
    """Render through the cupy backend on the host: its device planning, arguments and device code."""
    backend, fake = host_backends[variant]
    grid = make_grid(shape, options.pop("extent", None))
    plan = backend.make_plan(kernels, grid, dtype=np.dtype(dtype), accumulate=accumulate, **options)
    device_out = fake.asarray(np.zeros(shape, dtype) if out is None else out)
    backend.render(plan, device_out)
    result = device_out.get()
    if out is not None:
        out[...] = result
        return out
    return result


def on_device(fake, kernels):
    """The same kernels with their arrays on the stand-in device (the backend's device-kernel path)."""
    return kernels.to(fake)


@settings(max_examples=150)
@given(case=render_cases(max_side=70), dtype=st.sampled_from(["float32", "float64"]), accumulate=st.booleans(),
       variant=st.sampled_from(["ieee", "fma", "ftz"]), device_kernels=st.booleans())
def test_backend_on_host_matches_reference(host_backends, case, dtype, accumulate, variant, device_kernels):
    kernels, shape, options = case
    if variant not in host_backends:
        variant = "ieee"
    start = np.random.default_rng(11).uniform(0, 1, shape) if accumulate else np.zeros(shape)
    expected = start.copy()
    gh.render(kernels, shape, backend="numpy", out=expected, accumulate=accumulate, **options)
    given_kernels = on_device(host_backends[variant][1], kernels) if device_kernels else kernels
    actual = host_render(host_backends, variant, given_kernels, shape, dtype=dtype, out=start.astype(dtype),
                         accumulate=accumulate, **options)
    assert np.abs(actual - expected).max() <= allowed_error(expected, dtype)
    if not accumulate:
        inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options["truncate"], options["extent"]))
        assert not actual[~inside.reshape(shape)].any(), "nonzero pixel outside every support"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalize", ["pdf", "peak", "integral", "count"])
@pytest.mark.parametrize("combine", ["sum", "max", "por"])
def test_backend_on_host_every_mode_on_a_batch(host_backends, combine, normalize, dtype):
    # Every combine x normalize x dtype, rotated (but integral), batch of 3, reversed extent, every
    # host build: supports crossing many tiles and image edges.
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
    # Larger cases: thousands of rotated splats, many kernels per tile, count over whole boxes, and
    # rotated count kernels (the count lanes pass).
    rng = np.random.default_rng(5)
    n = 3000
    splats = gh.Kernels(rng.uniform(0, 300, n), rng.uniform(0, 200, n), rng.uniform(0.5, 4, n),
                        rng.uniform(0.5, 4, n), rng.uniform(0, np.pi, n), rng.uniform(0, 1, n))
    crowd = gh.Kernels(rng.uniform(-10, 310, 300), rng.uniform(-10, 210, 300), rng.uniform(1, 15, 300))
    tilted = gh.Kernels(rng.uniform(-10, 310, 300), rng.uniform(-10, 210, 300), rng.uniform(1, 15, 300),
                        rng.uniform(1, 15, 300), rng.uniform(0, np.pi, 300))
    for kernels, normalize in ((splats, "pdf"), (crowd, "count"), (tilted, "count")):
        expected = gh.render(kernels, (200, 300), backend="numpy", dtype="float64", normalize=normalize, truncate=3)
        actual = host_render(host_backends, "ieee", kernels, (200, 300), dtype="float32", normalize=normalize,
                             truncate=3)
        assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
        if normalize == "count":  # each kernel with a pixel in the image spreads exactly its amplitude, 1
            visible = make_plan(kernels, make_grid((200, 300)), normalize="count", truncate=3).n_kernels
            assert 250 < visible < len(kernels)
            np.testing.assert_allclose(actual.sum(dtype=np.float64), visible, rtol=1e-5)


def test_device_plan_boxes_are_the_host_plans_bit_for_bit(host_backends):
    # DESIGN.md: the box is decided in float64 identically for every backend. Host and device kernels,
    # rotated and not, a batch, a reversed extent far from the origin, per-kernel and shared truncation.
    backend, fake = host_backends["fma"] if "fma" in host_backends else host_backends["ieee"]
    rng = np.random.default_rng(17)
    n = 4000
    kernels = gh.Kernels(1e5 + rng.uniform(-10, 310, n), rng.uniform(-10, 290, n), rng.uniform(0.3, 40, n),
                         rng.uniform(0.3, 40, n), np.where(rng.uniform(size=n) < 0.5, 0.0, rng.uniform(-3, 3, n)),
                         rng.uniform(0, 1, n), rng.integers(0, 3, n))
    grid = make_grid((3, 280, 300), extent=(1e5 + 299.5, 1e5 - 0.5, 0, 279))
    for truncate in (1.5, 3.0, None, rng.uniform(0.5, 4, n)):
        for normalize in ("pdf", "count"):
            host = make_plan(kernels, grid, normalize=normalize, truncate=truncate)
            for given_kernels in (kernels, on_device(fake, kernels)):
                device = backend.make_plan(given_kernels, grid, normalize=normalize, truncate=truncate)
                ibox = device.ibox.view(np.ndarray)
                kept = (ibox[:, 0] <= ibox[:, 1]) & (ibox[:, 2] <= ibox[:, 3])
                np.testing.assert_array_equal(np.flatnonzero(kept), host.kernel_index)
                np.testing.assert_array_equal(ibox[kept, :planning.N_BOX], host.boxes)
                params = device.params.view(np.ndarray)[kept]
                columns = slice(0, planning.P_SHIFT_COL) if normalize == "count" else slice(None)
                np.testing.assert_array_equal(params[:, columns], host.params[:, columns])
                np.testing.assert_allclose(params, host.params, rtol=1e-12, atol=1e-300)


def test_device_bins_are_the_host_plans_bins(host_backends):
    backend, fake = host_backends["ieee"]
    rng = np.random.default_rng(23)
    n = 2000
    kernels = gh.Kernels(rng.uniform(-20, 220, n), rng.uniform(-20, 120, n), rng.uniform(0.3, 12, n),
                         rng.uniform(0.3, 12, n), rng.uniform(-3, 3, n), image=rng.integers(0, 2, n))
    grid = make_grid((2, 100, 200))
    host = make_plan(kernels, grid, truncate=3)
    device = backend.make_plan(kernels, grid, truncate=3)
    offsets, ids = (a.view(np.ndarray) for a in backend.bin_tiles(device))
    host_offsets, host_ids = host.bins(cuda_sources.TILE, cuda_sources.TILE)
    np.testing.assert_array_equal(offsets, host_offsets)
    np.testing.assert_array_equal(ids, host.kernel_index[host_ids])


@pytest.mark.parametrize("aspect", [1, 10, 100])
def test_float32_path_holds_extreme_shapes_sizes_and_places(host_backends, aspect):
    # Aspect ratios up to 100, sigmas from 0.3 to 500 px, centres near x = 1e5, a batch: the float32
    # evaluation stays within DESIGN.md's 1e-5 of max|reference| (and takes the float32 path).
    backend, fake = host_backends["fma"] if "fma" in host_backends else host_backends["ieee"]
    rng = np.random.default_rng(aspect)
    n = 400
    sigma_short = np.exp(rng.uniform(np.log(0.3), np.log(500 / aspect), n))
    swap = rng.uniform(size=n) < 0.5
    sigma_x = np.where(swap, sigma_short * aspect, sigma_short)
    sigma_y = np.where(swap, sigma_short, sigma_short * aspect)
    kernels = gh.Kernels(1e5 + rng.uniform(-50, 450, n), rng.uniform(-50, 350, n), sigma_x, sigma_y,
                         rng.uniform(-np.pi, np.pi, n), rng.uniform(0.1, 1, n), rng.integers(0, 2, n))
    shape, extent = (2, 300, 400), (1e5, 1e5 + 399, 0, 299)
    for combine, normalize in (("sum", "pdf"), ("max", "peak"), ("sum", "count")):
        options = dict(combine=combine, normalize=normalize, truncate=4.0, extent=extent)
        grid = make_grid(shape, extent)
        plan = backend.make_plan(kernels, grid, normalize=normalize, combine=combine, truncate=4.0)
        # count: kernels seen only through a far tail (shift > 16) take the float64 evaluation.
        assert plan.path == "tiles" and (normalize == "count" or not plan.eval64)
        expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
        actual = host_render(host_backends, "fma" if "fma" in host_backends else "ieee", kernels, shape,
                             dtype="float32", **options)
        assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max(), (combine, normalize)


def test_kernels_past_float32_limits_take_the_float64_evaluation(host_backends):
    # SCALE past the float32 evaluation's limit (a peak of 1e36: within float32's range, which planning
    # requires of the output, but beyond 1e30), a centre past 2^23 pixels, a count kernel seen only
    # through its far tail: each makes the call evaluate in float64, and every result stays right.
    backend, fake = host_backends["ieee"]
    cases = [
        (gh.Kernels(x=[3.0], y=[5.45], sigma_x=1.3e-36, sigma_y=0.12), {}),
        (gh.Kernels(x=[1e7, 3.0], y=[4.0, 4.0], sigma_x=[5e6, 2.0]), {}),
        (gh.Kernels(x=[-30.0, 5.0], y=[4.0, 4.0], sigma_x=[4.0, 2.0]), {"normalize": "count", "truncate": 10.0}),
    ]
    for kernels, options in cases:
        plan = backend.make_plan(kernels, make_grid((10, 12)), **options)
        assert plan.eval64
        expected = gh.render(kernels, (10, 12), backend="numpy", dtype="float64", **options)
        actual = host_render(host_backends, "ieee", kernels, (10, 12), dtype="float32", **options)
        assert np.abs(actual - expected).max() <= allowed_error(expected, "float32")
        assert np.isfinite(actual).all()


def test_dense_path_for_axis_aligned_sums(host_backends):
    backend, fake = host_backends["ieee"]
    case = workloads.build("W3", tiny=True)
    kernels, shape, options = case.kernels, case.shape, dict(case.options)
    for normalize, truncate in (("pdf", None), ("count", None), ("peak", 5.0)):
        options.update(normalize=normalize, truncate=truncate)
        plan = backend.make_plan(kernels, make_grid(shape, options.get("extent")),
                                 **{k: v for k, v in options.items() if k != "extent"})
        assert plan.path == "dense", normalize
        for dtype in ("float32", "float64"):
            expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
            actual = host_render(host_backends, "ieee", kernels, shape, dtype=dtype, **options)
            assert np.abs(actual - expected).max() <= allowed_error(expected, dtype), (normalize, dtype)
            if truncate is not None:
                inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, truncate, options.get("extent")))
                assert not actual[~inside.reshape(shape)].any()


def test_errors_are_planning_errors_and_leave_out_untouched(host_backends):
    backend, fake = host_backends["ieee"]
    grid = make_grid((8, 8))
    cases = [
        (gh.Kernels(x=[3.0, 4.0], y=[4.0, 4.0], sigma_x=1.0, image=[0, 5]), {}, r"image\[1\] = 5 is out of range"),
        (gh.Kernels(x=[3.0, 4.0], y=[4.0, 4.0], sigma_x=1.0, sigma_y=2.0, theta=[0, 0.5]), {"normalize": "integral"},
         "kernel 1 has theta"),
        (gh.Kernels(x=[3.0, 4.0], y=[4.0, 4.0], sigma_x=1.0, amplitude=[0.5, 2.0]),
         {"combine": "por", "normalize": "peak"}, "kernel 1 has amplitude = 2.0"),
        # The first failed check in planning's order, whatever the kernel order.
        (gh.Kernels(x=[3.0, 4.0], y=[4.0, 4.0], sigma_x=1.0, amplitude=[2.0, 0.5], image=[0, 3]),
         {"combine": "por", "normalize": "peak"}, r"image\[1\] = 3"),
    ]
    for kernels, options, message in cases:
        with pytest.raises(ValueError, match=message):
            make_plan(kernels, grid, **options)
        with pytest.raises(ValueError, match=message):
            backend.make_plan(kernels, grid, **options)


def registered(monkeypatch, backend):
    """``backend`` (loaded on a stand-in) as the registry's ``cupy``: what gh.render and Dask chunks take."""
    monkeypatch.setattr(backend, "__name__", "gaussheat_gpu.backends.cupy")
    monkeypatch.setitem(gh.backends._loaded, "cupy", backend)
    return backend


def memory_case(path):
    """Kernels, shape and dtype whose render takes ``path`` with well over 64 MiB of scratch."""
    if path == "tiles":  # 300 rotated kernels over every tile of a 4096^2 map: a 700 MB tile list
        kernels = gh.Kernels(x=np.linspace(0, 4000, 300), y=2000.0, sigma_x=3000.0, theta=0.3, sigma_y=100.0)
        return kernels, (4096, 4096), "float32"
    # 2048 axis-aligned kernels covering the map: 128 MiB of float64 row and column factors
    return gh.Kernels(x=np.linspace(0, 4000, 2048), y=2000.0, sigma_x=3000.0), (4096, 4096), "float64"


@pytest.mark.parametrize("path", ["tiles", "dense"])
def test_the_output_and_the_paths_scratch_must_fit_together(compilers, monkeypatch, path):
    # The scratch alone fits and so does the output, but not both: refused after planning, before the
    # output or any scratch is allocated; with room for both the call renders.
    kernels, shape, dtype = memory_case(path)
    output_bytes = 4096 * 4096 * np.dtype(dtype).itemsize
    probe = load_cupy_backend(counting_cupy(compilers["ieee"]))
    plan = probe.make_plan(kernels, make_grid(shape), truncate=None, dtype=np.dtype(dtype))
    scratch = probe.call_bytes(plan)
    assert plan.path == path and scratch > 64 * 2**20 and probe.call_bytes(plan, exact=True) == scratch
    for free, fits in ((scratch + output_bytes // 2, False), (scratch + output_bytes + 2**20, True)):
        fake = counting_cupy(compilers["ieee"], free_bytes=free)
        backend = registered(monkeypatch, load_cupy_backend(fake))
        allocated, rendered = [], []
        empty = fake.empty
        monkeypatch.setattr(fake, "empty", lambda shape, *a, **k: allocated.append(shape) or empty(shape, *a, **k))
        monkeypatch.setattr(backend, "render", lambda plan, out: rendered.append(plan.path))
        if fits:
            gh.render(kernels, shape, backend="cupy", truncate=None, dtype=dtype)
            assert rendered == [path] and shape in allocated
            continue
        with pytest.raises(MemoryError, match=r"needs .* GiB \(output, plan and scratch\), but only .* cupy backend"):
            gh.render(kernels, shape, backend="cupy", truncate=None, dtype=dtype)
        assert not rendered and shape not in allocated
        assert [e for e in fake.counts.events if e[0] == "launch"][-1] == ("launch", "cupy.min")  # nothing after


def test_a_dask_chunk_on_the_device_checks_the_same_memory(compilers, monkeypatch):
    pytest.importorskip("dask")
    from gaussheat_gpu import dask as gh_dask

    kernels, shape, _ = memory_case("tiles")
    fake = counting_cupy(compilers["ieee"], free_bytes=300 * 2**20)  # the 64 MiB chunk, not its tile list
    backend = registered(monkeypatch, load_cupy_backend(fake))
    monkeypatch.setattr(backend, "render", lambda plan, out: pytest.fail("a chunk rendered"))
    heat = gh_dask.render(kernels, shape, chunks=4096, backend="cupy", truncate=None)
    with pytest.raises(MemoryError, match=r"output, plan and scratch\), but only 0.29 GiB .* cupy backend"):
        heat.compute(scheduler="synchronous")


# -- launches and host synchronisations per call ---------------------------------------------------

COUNTED = ["W1", "W3", "W4x4", "W5", "W6", "G1-map"]


@pytest.mark.parametrize("workload", COUNTED)
@pytest.mark.parametrize("kernels_on", ["device", "host"])
def test_a_call_stays_within_8_launches_and_1_host_sync(host_backends, workload, kernels_on):
    backend, fake = host_backends["ieee"]
    case = workloads.build(workload, tiny=True)
    kernels = on_device(fake, case.kernels) if kernels_on == "device" else case.kernels
    _, counts, out = counted_render(backend, fake, case, kernels)
    assert counts.launches <= 8 and counts.syncs == 1, counts.events
    assert counts.uploads == (1 if kernels_on == "host" else 0), counts.events
    expected = gh.render(case.kernels, case.shape, backend="numpy", dtype="float64", **case.options)
    assert np.abs(out.view(np.ndarray) - expected).max() <= allowed_error(expected, "float32")


def test_counting_stand_in_counts_what_it_should(compilers):
    counts = Counts()
    fake = counting_cupy(compilers["ieee"], counts)
    a = fake.asarray(np.arange(6.0))
    b = a[1:4]  # a view: free
    c = a * 2  # a kernel
    d = fake.cumsum(a)
    int(d[-1])  # a read by the host
    c[0] = 1.0
    assert (counts.uploads, counts.launches, counts.syncs) == (1, 3, 1)
    assert isinstance(b, fake.ndarray)


def test_backend_caches_one_kernel_per_device_and_variant(host_backends):
    backend, _ = host_backends["ieee"]
    kernels = gh.Kernels(x=[3.0, 9.0], y=[4.0, 2.0], sigma_x=[1.0, 2.0], theta=[0.0, 0.4])
    for dtype in ("float32", "float64", "float32"):
        host_render(host_backends, "ieee", kernels, (8, 12), dtype=dtype, normalize="count")
    keys = {key for key in backend.kernels._kernels if key[1] == cuda_sources.RENDER_TILES}
    assert {(k[2], dict(k[3])["GH_EVAL64"]) for k in keys} >= {("float32", 0), ("float64", 1)}
    for key, kernel in backend.kernels._kernels.items():
        assert kernel.name == cuda_sources.kernel_name(key[1], key[2], dict(key[3]))
    assert (0, cuda_sources.COUNT_LANES, None, ()) in backend.kernels._kernels


def test_backend_on_host_with_no_kernel_in_the_image(host_backends):
    kernels = gh.Kernels(x=[-100.0], y=[-100.0], sigma_x=1.0)
    out = np.full((4, 5), 7.0, np.float32)
    host_render(host_backends, "ieee", kernels, (4, 5), dtype="float32", out=out)
    assert not out.any()
    out[:] = 7.0
    host_render(host_backends, "ieee", kernels, (4, 5), dtype="float32", out=out, accumulate=True)
    assert (out == 7.0).all()
    empty = gh.Kernels(x=np.zeros(0), y=np.zeros(0), sigma_x=1.0)
    out[:] = 7.0
    host_render(host_backends, "ieee", empty, (4, 5), dtype="float32", out=out)
    assert not out.any()


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


def backend_with_runtime(compilers, runtime, nvrtc_version=(13, 0)):
    fake = counting_cupy(compilers["ieee"])

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
    return load_cupy_backend(fake), fake, nvrtc


@pytest.mark.parametrize("case", ["usable", "no device", "no nvrtc"])
def test_unavailable_reason_and_device_info(compilers, monkeypatch, case):
    runtime = FakeRuntime("cudaErrorNoDevice: no CUDA-capable device is detected" if case == "no device" else None)
    backend, fake, nvrtc = backend_with_runtime(compilers, runtime, None if case == "no nvrtc" else (13, 0))
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


def test_check_output_device(compilers):
    backend, _, _ = backend_with_runtime(compilers, FakeRuntime())
    backend.check_output_device(types.SimpleNamespace(device=types.SimpleNamespace(id=0)))
    with pytest.raises(ValueError, match="out is on CUDA device 1 but rendering runs on device 0"):
        backend.check_output_device(types.SimpleNamespace(device=types.SimpleNamespace(id=1)))


# -- host plans (Dask chunks) ------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", ["pdf", "integral", "count"])
def test_windows_of_a_host_plan_render_like_the_numpy_backend(host_backends, normalize):
    # gaussheat_gpu.dask renders each chunk from its window of the whole-grid plan: the cupy backend's
    # plan_from_rows must give the numpy backend's pixels for every window, seams included.
    from gaussheat_gpu.backends import numpy_backend

    backend, fake = host_backends["ieee"]
    rng = np.random.default_rng(31)
    n = 300
    sigma_x = rng.uniform(0.4, 9, n)
    kernels = gh.Kernels(rng.uniform(-10, 90, n), rng.uniform(-10, 70, n), sigma_x,
                         sigma_x if normalize == "integral" else rng.uniform(0.4, 9, n),
                         0.0 if normalize == "integral" else rng.uniform(-3, 3, n), rng.uniform(0, 1, n),
                         rng.integers(0, 2, n))
    grid = make_grid((2, 60, 80), extent=(79, 0, 0, 59))
    plan = make_plan(kernels, grid, normalize=normalize, truncate=3.0, dtype=np.float32)
    if normalize == "count":
        with pytest.raises(ValueError, match="fix_count_normaliser"):
            backend.plan_from_rows(plan)
        plan = planning.fix_count_normaliser(plan, numpy_backend.box_sums(plan))
    whole = np.empty(grid.shape, np.float32)
    numpy_backend.render(plan, whole)
    for window in (((0, 2), (0, 60), (0, 80)), ((1, 2), (13, 45), (20, 61)), ((0, 1), (0, 16), (64, 80))):
        part = planning.window_plan(plan, window)
        out = fake.empty(part.grid.shape, dtype=np.float32)
        backend.render(backend.plan_from_rows(part), out)
        expected = whole[tuple(slice(a, b) for a, b in window)]
        assert np.abs(out.view(np.ndarray) - expected).max() <= 1e-5 * np.abs(whole).max()


# -- planning.py's later checks, on the device ------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_count_of_thin_rotated_kernels_on_the_device_sums_to_the_amplitude(host_backends, dtype):
    # The device planner takes the exponent's minimum over pixel centres where the box rectangle's
    # minimum lies far below it (planning._lattice_min), as the host planner does.
    rng = np.random.default_rng(11)
    n = 40
    kernels = gh.Kernels(rng.uniform(2, 8, n), rng.uniform(2, 6, n), rng.uniform(0.5, 5, n),
                         10 ** rng.uniform(-4, -2, n), theta=rng.uniform(0, np.pi, n),
                         amplitude=rng.uniform(0.5, 2, n), image=np.arange(n))
    shape = (n, 9, 11)
    backend, _ = host_backends["ieee"]
    host = make_plan(kernels, make_grid(shape), normalize="count", truncate=None)
    device = backend.make_plan(kernels, make_grid(shape), normalize="count", truncate=None)
    shifts = device.params.view(np.ndarray)[:, planning.P_SHIFT_COL]
    np.testing.assert_allclose(shifts, host.params[:, planning.P_SHIFT_COL], rtol=1e-12)
    heat = host_render(host_backends, "ieee", kernels, shape, dtype=dtype, normalize="count", truncate=None)
    assert np.isfinite(heat).all()
    np.testing.assert_allclose(heat.sum(axis=(1, 2), dtype=np.float64), kernels.amplitude, rtol=1e-5)


def test_rotated_kernels_reaching_too_far_are_refused_as_on_the_host(host_backends):
    backend, fake = host_backends["ieee"]
    kernels = gh.Kernels(x=[5.0, 50.0], y=[5.0, 40.0], sigma_x=[2.0, 1e-5], sigma_y=[2.0, 200.0], theta=[0.0, 0.7])
    grid = make_grid((80, 100))
    with pytest.raises(ValueError) as host_error:
        make_plan(kernels, grid, truncate=None)
    assert "kernel 1" in str(host_error.value) and "reaches" in str(host_error.value)
    for given in (kernels, on_device(fake, kernels)):
        with pytest.raises(ValueError) as device_error:
            backend.make_plan(given, grid, truncate=None)
        assert str(device_error.value) == str(host_error.value)
    header = cuda_sources.read(cuda_sources.HEADER)
    limits = dict(re.findall(r"#define (GH_MAX_ROTATED_REACH2|GH_LATTICE_GAP) ([0-9.e]+)", header))
    assert float(limits["GH_MAX_ROTATED_REACH2"]) == planning.MAX_ROTATED_REACH ** 2
    assert float(limits["GH_LATTICE_GAP"]) == planning.LATTICE_GAP
