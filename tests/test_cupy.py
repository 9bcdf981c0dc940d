"""GPU tests of the cupy backend: pixels against the reference, device planning, device-resident data.

Every test here needs a CUDA device visible to CuPy (marker ``gpu``): elsewhere they are skipped
with the reason, and ``pytest --gpu`` turns that skip into an error. They use only what a GPU
image without network has (CuPy, NumPy, SciPy, pytest, hypothesis; torch where present).
test_equality.py runs the shared cross-backend suite on ``cupy`` as well.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import naive_support_mask
from strategies import allowed_error, kernel_dicts, render_cases

import gaussheat_gpu as gh
from gaussheat_gpu import cuda_sources, planning
from gaussheat_gpu._xp import to_host
from gaussheat_gpu.planning import make_grid, make_plan

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def backend_module():
    from gaussheat_gpu.backends import cupy as cupy_backend

    return cupy_backend


def reference(kernels, shape, **options):
    return gh.render(kernels, shape, backend="numpy", dtype="float64", **options)


def assert_matches(actual, expected, dtype, kernels=None, shape=None, options=None):
    """DESIGN.md section 3: within tolerance of max|reference|, and (given the case) 0 outside supports."""
    actual = to_host(actual)
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
    assert np.abs(actual.astype(np.float64) - expected).max() <= allowed_error(expected, dtype)
    if kernels is not None:
        inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options["truncate"],
                                             options["extent"])).reshape(shape)
        assert not actual[~inside].any(), "nonzero pixel outside every support"


def random_columns(rng, n, size):
    return {"x": rng.uniform(-10, size + 10, n), "y": rng.uniform(-10, size + 10, n),
            "sigma_x": rng.uniform(0.3, 20, n), "sigma_y": rng.uniform(0.3, 20, n),
            "theta": rng.uniform(-np.pi, np.pi, n), "amplitude": rng.uniform(0, 1, n),
            "image": rng.integers(0, 3, n)}


def on_device(cupy, columns):
    return gh.Kernels(**{k: cupy.asarray(v) for k, v in columns.items()})


# -- pixels ------------------------------------------------------------------------------------

@settings(max_examples=150)
@given(case=render_cases(max_side=70), dtype=st.sampled_from(["float32", "float64"]), device_kernels=st.booleans())
def test_matches_reference_on_random_inputs(cupy, case, dtype, device_kernels):
    kernels, shape, options = case
    expected = reference(kernels, shape, **options)
    heat = gh.render(kernels.to(cupy) if device_kernels else kernels, shape, backend="cupy", dtype=dtype, **options)
    assert isinstance(heat, cupy.ndarray)
    assert_matches(heat, expected, dtype, kernels, shape, options)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalize", ["pdf", "peak", "integral", "count"])
@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("truncate", [2.0, None])
def test_every_mode_on_a_batch(cupy, combine, normalize, dtype, truncate):
    # Rotated kernels (axis-aligned for integral), a batch of 3 images, a reversed extent, kernels on the device.
    rng = np.random.default_rng(planning.COMBINE_CODES[combine] * 10 + planning.NORMALIZE_CODES[normalize])
    n = 200
    columns = random_columns(rng, n, 100)
    if normalize == "integral":
        columns["sigma_y"], columns["theta"] = columns["sigma_x"], np.zeros(n)
    if combine == "por":
        columns["amplitude"] *= 1e-2
    shape = (3, 70, 110)
    options = {"combine": combine, "normalize": normalize, "truncate": truncate, "extent": (109, 0, 0, 69)}
    expected = reference(gh.Kernels(**columns), shape, **options)
    heat = gh.render(on_device(cupy, columns), shape, dtype=dtype, **options)
    assert_matches(heat, expected, dtype, gh.Kernels(**columns), shape, options)


@settings(max_examples=40)
@given(case=render_cases(max_side=40), dtype=st.sampled_from(["float32", "float64"]))
def test_out_and_accumulate_with_a_device_array(cupy, case, dtype):
    kernels, shape, options = case
    start = np.random.default_rng(7).uniform(0, 1, shape)
    for accumulate in (False, True):
        expected = start.copy()
        gh.render(kernels, shape, backend="numpy", out=expected, accumulate=accumulate, **options)
        out = cupy.asarray(start.astype(dtype))
        result = gh.render(kernels, shape, backend="cupy", out=out, accumulate=accumulate, **options)
        assert result is out
        assert np.abs(out.get().astype(np.float64) - expected).max() <= allowed_error(expected, dtype)


def test_count_normalisers_are_the_float64_sums_over_each_box(cupy, backend_module):
    rng = np.random.default_rng(8)
    columns = random_columns(rng, 300, 60)
    columns["theta"][::2] = 0.0  # separable and rotated kernels (the count lanes pass)
    grid = make_grid((3, 50, 60))
    host_plan = make_plan(gh.Kernels(**columns), grid, normalize="count", truncate=2.5)
    plan = backend_module.make_plan(on_device(cupy, columns), grid, normalize="count", truncate=2.5)
    backend_module.bin_tiles(plan)
    sums = plan.count_sums.get()[host_plan.kernel_index]
    expected = []
    for p, box in zip(host_plan.params, host_plan.boxes, strict=True):
        u = np.arange(box[0], box[1] + 1) - p[planning.P_CX]
        w = (np.arange(box[2], box[3] + 1) - p[planning.P_CY])[:, None]
        q = p[planning.P_A] * u * u + 2 * p[planning.P_B] * u * w + p[planning.P_C] * w * w
        expected.append(np.exp(-0.5 * (q - p[planning.P_SHIFT_COL] - p[planning.P_SHIFT_ROW])).sum())
    np.testing.assert_allclose(sums, expected, rtol=1e-12)


def test_large_map_of_many_kernels_matches_reference_on_a_window(cupy):
    # Many kernels per tile over a large image: compare a window against the host reference.
    rng = np.random.default_rng(9)
    n, size = 200_000, 4096
    columns = {"x": rng.uniform(0, size, n), "y": rng.uniform(0, size, n), "sigma_x": rng.uniform(1, 8, n)}
    heat = gh.render(on_device(cupy, columns), (size, size), truncate=3)
    near = (columns["x"] < 300) & (columns["y"] < 300)
    window = gh.render(gh.Kernels(**{k: v[near] for k, v in columns.items()}), (size, size), truncate=3,
                       backend="numpy", dtype="float64")[:256, :256]
    assert float(abs(heat[:256, :256].get() - window).max()) <= 1e-5 * window.max()


# -- planning on the device ----------------------------------------------------------------------

@pytest.mark.parametrize("normalize", ["pdf", "count"])
@pytest.mark.parametrize("truncate", [1.5, 3.0, None])
def test_device_planning_matches_host_planning(cupy, backend_module, normalize, truncate):
    rng = np.random.default_rng(17)
    columns = random_columns(rng, 5000, 300)
    host = gh.Kernels(**columns)
    device = on_device(cupy, columns)
    assert device.xp is cupy and device.to(cupy) is device  # nothing to upload
    grid = make_grid((3, 280, 300), extent=(0, 299, 0, 279))
    host_plan = make_plan(host, grid, normalize=normalize, truncate=truncate)
    for kernels in (host, device):
        plan = backend_module.make_plan(kernels, grid, normalize=normalize, truncate=truncate)
        ibox = plan.ibox.get()
        kept = (ibox[:, 0] <= ibox[:, 1]) & (ibox[:, 2] <= ibox[:, 3])
        np.testing.assert_array_equal(np.flatnonzero(kept), host_plan.kernel_index)
        np.testing.assert_array_equal(ibox[kept, :planning.N_BOX], host_plan.boxes)
        # Same float64 formulas; the device's cos/sin may differ from glibc's in the last ulps.
        np.testing.assert_allclose(plan.params.get()[kept], host_plan.params, rtol=1e-12, atol=1e-300)
        if plan.path == "tiles":
            offsets, kernel_ids = backend_module.bin_tiles(plan)
            host_offsets, host_ids = host_plan.bins(cuda_sources.TILE, cuda_sources.TILE)
            np.testing.assert_array_equal(offsets.get(), host_offsets)
            np.testing.assert_array_equal(kernel_ids.get(), host_plan.kernel_index[host_ids])


# -- arrays on the device ----------------------------------------------------------------------

def test_device_kernels_render_on_their_device(cupy):
    rng = np.random.default_rng(3)
    columns = random_columns(rng, 2000, 256)
    heat = gh.render(on_device(cupy, columns), (3, 256, 256), truncate=3)
    assert isinstance(heat, cupy.ndarray) and heat.device.id == cupy.cuda.Device().id
    expected = reference(gh.Kernels(**columns), (3, 256, 256), truncate=3)
    assert float(abs(heat.get() - expected).max()) <= 1e-5 * expected.max()


def test_render_on_a_second_device(cupy, backend_module):
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one CUDA device: nothing to show about a second")
    columns = random_columns(np.random.default_rng(4), 500, 128)
    with cupy.cuda.Device(1):
        heat = gh.render(on_device(cupy, columns), (3, 128, 128), truncate=3)
        assert heat.device.id == 1
        assert any(key[0] == 1 and key[1] == cuda_sources.RENDER_TILES for key in backend_module._kernels)
    expected = reference(gh.Kernels(**columns), (3, 128, 128), truncate=3)
    assert float(abs(heat.get() - expected).max()) <= 1e-5 * expected.max()


def test_auto_backend_is_cupy_on_a_gpu_machine(cupy, backend_module):
    assert backend_module.unavailable_reason() is None
    assert gh.available_backends()[0] == "cupy"
    heat = gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (8, 8))
    assert isinstance(heat, cupy.ndarray)


def test_kernels_are_cached_per_device_and_variant_with_variant_names(cupy, backend_module):
    kernels = gh.Kernels(x=[3.0, 5.0], y=[4.0, 2.0], sigma_x=1.0, sigma_y=2.0, theta=[0.0, 0.5])
    for dtype in ("float32", "float64"):
        gh.render(kernels, (8, 8), backend="cupy", dtype=dtype, normalize="count")
    device = cupy.cuda.Device().id
    names = {key: kernel.name for key, kernel in backend_module._kernels.items() if key[0] == device}
    for (_, name, dtype, defines), kernel_name in names.items():
        assert kernel_name == cuda_sources.kernel_name(name, dtype, dict(defines))
    assert {"gaussheat_render_tiles_float32_c0_n3_e0", "gaussheat_render_tiles_float64_c0_n3_e1",
            "gaussheat_count_lanes", "gaussheat_plan_kernels"} <= set(names.values())


def test_dense_path_renders_w3_exactly(cupy, backend_module):
    from gaussheat_gpu import workloads

    case = workloads.build("W3", tiny=True)
    kernels = case.kernels.to(cupy)
    plan = backend_module.make_plan(kernels, make_grid(case.shape, case.options.get("extent")),
                                    **{k: v for k, v in case.options.items() if k != "extent"})
    assert plan.path == "dense"
    for dtype in ("float32", "float64"):
        heat = gh.render(kernels, case.shape, backend="cupy", dtype=dtype, **case.options)
        assert_matches(heat, reference(case.kernels, case.shape, **case.options), dtype)


def test_cupy_backend_refuses_a_numpy_out(cupy):
    out = np.full((8, 8), 5.0, np.float32)
    with pytest.raises(TypeError, match="out must be a cupy.ndarray"):
        gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (8, 8), backend="cupy", out=out)
    assert (out == 5.0).all()


def test_failed_call_leaves_device_out_untouched(cupy):
    out = cupy.full((8, 8), 5.0, dtype=cupy.float32)
    with pytest.raises(ValueError, match="kernel 0 has amplitude = 2.0"):
        gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0, amplitude=2.0), (8, 8), backend="cupy", out=out,
                  combine="por", normalize="peak")
    assert bool((out == 5.0).all())


def test_too_large_device_output_is_refused_before_allocation(cupy, backend_module):
    free = backend_module.free_memory()
    assert free > 0
    side = int((free / 4) ** 0.5) * 2  # four times the free memory in float32
    with pytest.raises(MemoryError, match="available to the cupy backend"):
        gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (side, side), backend="cupy")


def test_torch_takes_the_output_through_dlpack_without_a_copy(cupy):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch is installed without CUDA support")
    heat = gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (8, 8), backend="cupy")
    tensor = torch.from_dlpack(heat)
    assert tensor.is_cuda and tensor.data_ptr() == heat.data.ptr
    assert float(tensor[4, 3]) == pytest.approx(float(heat[4, 3]))


def test_device_info_names_the_device(backend_module):
    lines = backend_module.device_info()
    assert lines[0].startswith("cupy: ") and any(line.startswith("device 0: ") for line in lines)
    assert all(": " in line for line in lines)
    assert lines[-1].startswith("cupy backend: usable")
