"""``render(truncate=array)``: one truncate per kernel, DESIGN.md's box rule applied per kernel.

The random cross-backend cases (tests/strategies.py) also draw per-kernel truncates; these tests pin
the meaning (each kernel boxed as if rendered alone with its own value), the errors, and that the
compiled planner reads the array with the array code's bits.
"""

import math
import zlib

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu._xp import to_host
from gaussheat_gpu.planning import check_truncate, make_grid, make_plan
from naive import naive_render, naive_support_mask
from strategies import allowed_error, kernel_dicts


def random_kernels(n, seed, rotated=True):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, n) if rotated else 0.0
    return gh.Kernels(rng.uniform(-5, 45, n), rng.uniform(-5, 35, n), rng.uniform(0.5, 6, n),
                      rng.uniform(0.5, 6, n), theta, rng.uniform(0.2, 1.0, n), rng.integers(0, 2, n))


@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("normalize", ["pdf", "peak", "count"])
def test_each_kernel_is_boxed_by_its_own_truncate(backend, combine, normalize):
    # The combination of single-kernel renders, each with its own scalar truncate, written out by
    # the naive reference: what the array must mean (50 sigmas: wider than the image).
    n = 40
    kernels = random_kernels(n, seed=zlib.crc32(f"{combine}-{normalize}".encode()))
    truncate = np.random.default_rng(1).choice([0.7, 1.5, 2.2, 3.0, 50.0], n)
    truncate[kernels.image == 1] = np.minimum(truncate[kernels.image == 1], 3.0)  # image 1: all truncated
    shape = (2, 30, 40)
    expected = np.array(naive_render(kernel_dicts(kernels), shape, combine, normalize, list(truncate))).reshape(shape)
    inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, list(truncate))).reshape(shape)
    assert 0 < inside.mean() < 1
    for dtype in ("float32", "float64"):
        actual = to_host(gh.render(kernels, shape, combine=combine, normalize=normalize, truncate=truncate,
                                   dtype=dtype, backend=backend))
        assert np.abs(actual - expected).max() <= allowed_error(expected, dtype)
        assert not actual[~inside].any()  # nothing outside the boxes


def test_array_of_one_value_renders_like_the_scalar(backend):
    kernels = random_kernels(25, seed=3)
    for t in (0.8, 3.0):
        scalar = to_host(gh.render(kernels, (2, 30, 40), truncate=t, backend=backend, dtype="float64"))
        array = to_host(gh.render(kernels, (2, 30, 40), truncate=np.full(25, t), backend=backend, dtype="float64"))
        np.testing.assert_array_equal(array, scalar)
    exact = to_host(gh.render(kernels, (2, 30, 40), truncate=None, backend=backend, dtype="float64"))
    np.testing.assert_array_equal(  # boxes wider than the image clip to it, like None's
        to_host(gh.render(kernels, (2, 30, 40), truncate=[1e6] * 25, backend=backend, dtype="float64")), exact)


def test_boxes_follow_the_rule_per_kernel():
    # Kernel i at column 10.5 with sigma 1: half-width t_i, columns ceil(10.5 - t) .. floor(10.5 + t).
    t = np.array([0.4, 0.5, 1.0, 2.49, 2.5, 100.0])
    kernels = gh.Kernels(x=10.5, y=np.full(6, 3.0), sigma_x=1.0)
    for compiled in (False, True):
        plan = make_plan(kernels, make_grid((7, 30)), truncate=t, compiled=compiled)
        assert plan.kernel_index.tolist() == [1, 2, 3, 4, 5]  # t = 0.4 holds no pixel centre
        assert plan.boxes[:, :2].tolist() == [[10, 11], [10, 11], [9, 12], [8, 13], [0, 29]]


def test_compiled_planner_reads_per_kernel_truncate_with_the_array_codes_bits():
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    n = 9000  # more than numba_planning.CHUNK: the parallel chunked pass packs the kept rows
    kernels = gh.Kernels(rng.uniform(-50, 150, n), rng.uniform(-50, 150, n), rng.uniform(0.1, 9, n),
                         rng.uniform(0.1, 9, n), rng.uniform(-3, 3, n), image=rng.integers(0, 2, n))
    truncate = np.where(rng.random(n) < 0.1, 1e3, rng.uniform(0.2, 5, n))
    grid = make_grid((2, 100, 120))
    array_plan = make_plan(kernels, grid, truncate=truncate, normalize="peak", compiled=False)
    compiled_plan = make_plan(kernels, grid, truncate=truncate, normalize="peak", compiled=True)
    assert 0 < array_plan.n_kernels < n
    for name in ("params", "boxes", "kernel_index"):
        np.testing.assert_array_equal(getattr(compiled_plan, name), getattr(array_plan, name), strict=True)


@pytest.mark.parametrize("truncate, exc, pattern", [
    ([1.0, 2.0], TypeError, r"one number per kernel \(3\), got dtype float64 and shape \(2,\)"),
    (np.ones((3, 1)), TypeError, r"truncate must be a number of sigmas, None, or one number per kernel"),
    ([1.0, -2.0, 1.0], ValueError, r"truncate\[1\] = -2.0 must be a finite number > 0 \(kernel 1\)"),
    ([1.0, 1.0, math.nan], ValueError, r"truncate\[2\] = nan must be a finite number > 0"),
    ([1.0, math.inf, 1.0], ValueError, r"truncate\[1\] = inf must be a finite number > 0"),
    ([0.0, 1.0, 1.0], ValueError, r"truncate\[0\] = 0.0 must be"),
    (["a", "b", "c"], TypeError, r"one number per kernel \(3\), got dtype <U1"),
    (True, TypeError, r"truncate must be a number"),
])
def test_bad_per_kernel_truncate_is_refused_before_anything_is_written(backend, truncate, exc, pattern):
    kernels = gh.Kernels(x=[1.0, 2.0, 3.0], y=1.0, sigma_x=1.0)
    module = gh.backends.get(backend)
    out = module.xp.full((4, 5), 7.0, dtype=np.float32)
    with pytest.raises(exc, match=pattern):
        gh.render(kernels, (4, 5), truncate=truncate, out=out, backend=backend)
    assert (to_host(out) == 7.0).all()


def test_check_truncate_keeps_scalars_scalar():
    assert check_truncate(None, 4) == math.inf
    assert check_truncate(np.float32(2.5), 4) == 2.5 and isinstance(check_truncate(3, 4), float)
    values = check_truncate(np.array([1, 2, 3], dtype=np.int32), 3)
    assert values.dtype == np.float64 and values.tolist() == [1.0, 2.0, 3.0]


def test_per_kernel_truncate_on_a_large_exact_sum(fast_backend):
    # Few wide axis-aligned kernels over a 1100 x 1000 image: the Numba backend's dense path, with
    # boxes that end inside the image for the truncated kernels.
    kernels = gh.Kernels(x=[100.0, 900.0, 500.0, 300.0], y=[200.0, 800.0, 550.0, 1000.0],
                         sigma_x=[300.0, 250.0, 400.0, 350.0], sigma_y=[350.0, 300.0, 250.0, 400.0])
    truncate = np.array([50.0, 2.5, 1.8, 50.0])  # each box still covers half the image
    shape = (1100, 1000)
    expected = gh.render(kernels, shape, truncate=truncate, backend="numpy", dtype="float64")
    exact = gh.render(kernels, shape, truncate=None, backend="numpy", dtype="float64")
    assert np.abs(exact - expected).max() > 1e-3 * exact.max()  # the truncated boxes end inside the image
    actual = to_host(gh.render(kernels, shape, truncate=truncate, backend=fast_backend))
    assert np.abs(actual - expected).max() <= allowed_error(expected, "float32")
