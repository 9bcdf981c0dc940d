"""Public API behaviour: Kernels constructors, the backend registry, dtype and out handling."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu import backends


def test_kernels_broadcast_scalars_and_default_sigma_y():
    k = gh.Kernels(x=[1, 2, 3], y=5, sigma_x=2.0, theta=0.1, amplitude=[1, 2, 3], image=0)
    assert len(k) == 3
    np.testing.assert_array_equal(k.y, [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(k.sigma_y, k.sigma_x)
    assert k.x.dtype == np.float64 and k.image.dtype == np.int64
    assert k.x.flags.c_contiguous


def test_kernels_copy_their_inputs():
    x = np.array([1.0, 2.0])
    k = gh.Kernels(x=x, y=x, sigma_x=1.0)
    x[0] = 99.0
    assert k.x[0] == 1.0


def test_from_array_default_and_named_columns():
    arr = np.array([[1.0, 2.0, 3.0, 4.0, 0.5], [5.0, 6.0, 7.0, 8.0, -0.5]])
    k = gh.Kernels.from_array(arr)
    np.testing.assert_array_equal(k.theta, [0.5, -0.5])
    k2 = gh.Kernels.from_array(arr[:, :3], columns=["y", "x", "sigma_x"])
    np.testing.assert_array_equal(k2.x, [2.0, 6.0])
    np.testing.assert_array_equal(k2.sigma_y, [3.0, 7.0])


def test_from_columns_dict_and_dataframe_agree():
    table = {"x": [1.0, 2.0], "y": [3.0, 4.0], "sigma": [1.5, 2.5], "amplitude": [2.0, 3.0]}
    from_dict = gh.Kernels.from_columns(table)
    from_frame = gh.Kernels.from_columns(pd.DataFrame(table))
    for name, values in from_dict.as_dict().items():
        np.testing.assert_array_equal(values, from_frame.as_dict()[name])
    a = gh.render(pd.DataFrame(table), (8, 8), backend="numpy")
    b = gh.render(from_dict, (8, 8), backend="numpy")
    np.testing.assert_array_equal(a, b)


def test_default_dtype_is_float32_or_that_of_out():
    k = gh.Kernels(x=[2.0], y=[2.0], sigma_x=1.0)
    assert gh.render(k, (5, 5), backend="numpy").dtype == np.float32
    out = np.zeros((5, 5))
    assert gh.render(k, (5, 5), backend="numpy", out=out) is out
    assert out[2, 2] == pytest.approx(1 / (2 * np.pi), rel=1e-15)


def test_float32_output_close_to_float64():
    k = gh.Kernels(x=[20.3, 5.0], y=[11.1, 3.0], sigma_x=[3.0, 1.0], sigma_y=[1.0, 2.0], theta=[0.3, 0])
    f32 = gh.render(k, (30, 40), backend="numpy")
    f64 = gh.render(k, (30, 40), backend="numpy", dtype="float64")
    assert np.abs(f32 - f64).max() <= 1e-6 * f64.max()


def test_available_backends_best_first_and_numpy_always():
    names = gh.available_backends()
    assert names[-1] == "numpy"
    order = list(backends.names())
    assert names == sorted(names, key=order.index)


def test_auto_honours_environment_variable(monkeypatch):
    monkeypatch.setenv("GAUSSHEAT_BACKEND", "numpy")
    assert backends.get("auto").__name__.endswith("numpy_backend")
    monkeypatch.delenv("GAUSSHEAT_BACKEND")
    assert backends.get("auto") is backends.get(gh.available_backends()[0])


def test_explicit_backend_wins_over_environment(monkeypatch):
    monkeypatch.setenv("GAUSSHEAT_BACKEND", "cupy")
    assert backends.get("numpy").__name__.endswith("numpy_backend")


def test_importing_the_package_never_imports_cupy_or_numba():
    code = ("import sys, gaussheat_gpu as gh; "
            "k = gh.Kernels(x=[1], y=[1], sigma_x=1); gh.render(k, (4, 4), backend='numpy'); "
            "print(sorted(m for m in ('cupy', 'numba') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_kernels_outside_the_image_are_dropped_from_the_plan():
    from gaussheat_gpu.planning import make_grid, make_plan

    k = gh.Kernels(x=[-100.0, 5.0, 500.0], y=[5.0, 5.0, 5.0], sigma_x=1.0)
    plan = make_plan(k, make_grid((10, 10)))
    assert plan.n_kernels == 1 and plan.kernel_index.tolist() == [1]


def test_bins_list_each_kernel_in_every_tile_its_box_touches():
    from gaussheat_gpu.planning import B_COL0, B_COL1, B_IMAGE, B_ROW0, B_ROW1, make_grid, make_plan

    rng = np.random.default_rng(3)
    n = 200
    k = gh.Kernels(rng.uniform(-5, 75, n), rng.uniform(-5, 45, n), rng.uniform(0.3, 6, n),
                   image=rng.integers(0, 3, n))
    plan = make_plan(k, make_grid((3, 40, 70)), truncate=3.0)
    offsets, ids = plan.bins(16, 32)
    n_tr, n_tc = plan.tile_counts(16, 32)
    assert (n_tr, n_tc) == (3, 3) and offsets.size == 3 * 9 + 1
    for tile in range(3 * n_tr * n_tc):
        image, rest = divmod(tile, n_tr * n_tc)
        tr, tc = divmod(rest, n_tc)
        b = plan.boxes
        touches = ((b[:, B_IMAGE] == image) & (b[:, B_ROW0] < (tr + 1) * 16) & (b[:, B_ROW1] >= tr * 16)
                   & (b[:, B_COL0] < (tc + 1) * 32) & (b[:, B_COL1] >= tc * 32))
        listed = ids[offsets[tile]:offsets[tile + 1]]
        assert listed.tolist() == np.flatnonzero(touches).tolist()  # plan order kept


def test_axis_aligned_shortcut_plans_the_same_bits_as_the_rotated_path():
    from gaussheat_gpu.planning import make_grid, make_plan

    rng = np.random.default_rng(8)
    n = 500
    columns = dict(x=rng.uniform(-5, 105, n), y=rng.uniform(-5, 85, n), sigma_x=rng.uniform(0.3, 9, n),
                   sigma_y=rng.uniform(0.3, 9, n))
    grid = make_grid((80, 100), extent=(0, 33.3, 80, -2.5))
    for normalize in ("pdf", "count"):
        aligned = make_plan(gh.Kernels(**columns), grid, normalize=normalize, truncate=2.7)
        # One rotated kernel appended sends every kernel through cos/sin arrays.
        mixed_columns = {k: np.append(v, 1.0) for k, v in columns.items()}
        mixed = make_plan(gh.Kernels(**mixed_columns, theta=np.append(np.zeros(n), 0.5)), grid,
                          normalize=normalize, truncate=2.7)
        keep = mixed.kernel_index < n
        np.testing.assert_array_equal(mixed.params[keep], aligned.params)
        np.testing.assert_array_equal(mixed.boxes[keep], aligned.boxes)

