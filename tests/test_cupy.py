"""GPU tests of the cupy backend: device planning, arrays that stay on the device, out=, DLPack.

Every test here needs a CUDA device visible to CuPy (marker ``gpu``): elsewhere they are skipped
with the reason, and ``pytest --gpu`` turns that skip into an error. The pixel-equality suite for
cupy is in test_equality.py (the ``cupy`` backend parameter).
"""

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu.planning import make_grid, make_plan

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy():
    import cupy

    return cupy


def random_columns(rng, n, size):
    return dict(x=rng.uniform(-10, size + 10, n), y=rng.uniform(-10, size + 10, n),
                sigma_x=rng.uniform(0.3, 20, n), sigma_y=rng.uniform(0.3, 20, n),
                theta=rng.uniform(-np.pi, np.pi, n), amplitude=rng.uniform(0, 1, n), image=rng.integers(0, 3, n))


@pytest.mark.parametrize("normalize", ["pdf", "count"])
@pytest.mark.parametrize("truncate", [1.5, 3.0, None])
def test_device_planning_matches_host_planning(cupy, normalize, truncate):
    rng = np.random.default_rng(17)
    columns = random_columns(rng, 5000, 300)
    host = gh.Kernels(**columns)
    device = gh.Kernels(**{k: cupy.asarray(v) for k, v in columns.items()})
    assert device.xp is cupy
    grid = make_grid((3, 280, 300), extent=(0, 299, 0, 279))
    host_plan = make_plan(host, grid, normalize=normalize, truncate=truncate)
    device_plan = make_plan(device, grid, normalize=normalize, truncate=truncate, xp=cupy)
    np.testing.assert_array_equal(cupy.asnumpy(device_plan.boxes), host_plan.boxes)
    np.testing.assert_array_equal(cupy.asnumpy(device_plan.kernel_index), host_plan.kernel_index)
    np.testing.assert_allclose(cupy.asnumpy(device_plan.params), host_plan.params, rtol=1e-13, atol=1e-300)
    for tiles in ((8, 32), (64, 300)):
        for device_part, host_part in zip(device_plan.bins(*tiles), host_plan.bins(*tiles), strict=True):
            np.testing.assert_array_equal(cupy.asnumpy(device_part), host_part)


def test_device_kernels_render_on_their_device_without_host_copies(cupy):
    rng = np.random.default_rng(3)
    columns = random_columns(rng, 2000, 256)
    device = gh.Kernels(**{k: cupy.asarray(v) for k, v in columns.items()})
    heat = gh.render(device, (3, 256, 256), truncate=3)
    assert isinstance(heat, cupy.ndarray) and heat.device.id == cupy.cuda.Device().id
    expected = gh.render(gh.Kernels(**columns), (3, 256, 256), truncate=3, backend="numpy", dtype="float64")
    assert float(abs(heat.get() - expected).max()) <= 1e-5 * expected.max()


def test_auto_backend_is_cupy_on_a_gpu_machine(cupy):
    assert gh.available_backends()[0] == "cupy"
    heat = gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (8, 8))
    assert isinstance(heat, cupy.ndarray)


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


def test_too_large_device_output_is_refused_before_allocation(cupy):
    free = cupy.cuda.Device().mem_info[0]
    side = int((free / 4) ** 0.5) * 2  # four times the free memory in float32
    with pytest.raises(MemoryError, match="available to the cupy backend"):
        gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (side, side), backend="cupy")


def test_torch_takes_the_output_through_dlpack_without_a_copy(cupy):
    torch = pytest.importorskip("torch")
    heat = gh.render(gh.Kernels(x=[3.0], y=[4.0], sigma_x=1.0), (8, 8), backend="cupy")
    tensor = torch.from_dlpack(heat)
    assert tensor.is_cuda and tensor.data_ptr() == heat.data.ptr
    assert float(tensor[4, 3]) == pytest.approx(float(heat[4, 3]))


def test_device_info_names_the_device(cupy):
    from gaussheat_gpu.backends import cupy_backend

    lines = cupy_backend.device_info()
    assert lines[0].startswith("cupy ") and any(line.startswith("device 0: ") for line in lines)


def test_large_map_of_many_kernels_matches_reference_on_a_window(cupy):
    # Many kernels per tile over a large image: compare a window against the host reference.
    rng = np.random.default_rng(9)
    n, size = 200_000, 4096
    columns = dict(x=rng.uniform(0, size, n), y=rng.uniform(0, size, n), sigma_x=rng.uniform(1, 8, n))
    heat = gh.render(gh.Kernels(**{k: cupy.asarray(v) for k, v in columns.items()}), (size, size), truncate=3)
    near = (columns["x"] < 300) & (columns["y"] < 300)
    window = gh.render(gh.Kernels(**{k: v[near] for k, v in columns.items()}), (size, size), truncate=3,
                       backend="numpy", dtype="float64")[:256, :256]
    assert float(abs(heat[:256, :256].get() - window).max()) <= 1e-5 * window.max()
