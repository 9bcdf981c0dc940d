"""Hostile input on the host backends: every finite input renders a correct image or is refused
with a ValueError/TypeError/MemoryError naming the argument, kernel and value, before ``out`` is
touched; never a crash, NaN, inf or wrapped index. Each case is one reproducer of a failure seen
in the wild or planted on purpose."""

import copy
import math
import pickle

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu.planning import MAX_PIXELS, MIN_SIGMA_PIXELS
from strategies import allowed_error

HOST = ["numpy", "numba"]
SHAPE = (8, 10)


def poisoned(shape=SHAPE, dtype=np.float32):
    return np.full(shape, 7.0, dtype=dtype)


def refused(exc, pattern, kernels, backend, shape=SHAPE, **options):
    """Assert render raises ``exc`` matching ``pattern`` and leaves a poisoned ``out`` as it was."""
    out = poisoned(shape, options.pop("dtype", np.float32))
    before = out.copy()
    with pytest.raises(exc, match=pattern):
        gh.render(kernels, shape, backend=backend, out=out, **options)
    assert np.array_equal(out, before)


# -- 1. inputs that killed the process or wrote NaN: refused, naming the argument and kernel ------

@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("kernels, options, pattern", [
    (dict(x=5, y=4, sigma_x=1e155), {}, r"sigma_x\[0\] = 1e\+155 is 1e\+155 pixels \(kernel 0\)"),
    (dict(x=5, y=4, sigma_x=1e300, sigma_y=1.0), {}, r"sigma_x\[0\] = 1e\+300"),
    (dict(x=[5, 5], y=4, sigma_x=[1.0, 1e-160]), {}, r"sigma_x\[1\] = 1e-160 is 1e-160 pixels \(kernel 1\)"),
    (dict(x=5, y=4, sigma_x=1.0), dict(extent=(0, 1e-320, 0, 1e-320)), r"pixel spacing dx = 1\.11e-321"),
    (dict(x=1e300, y=1e300, sigma_x=1e300), dict(truncate=None), r"x\[0\] = 1e\+300 is 1e\+300 pixels from"),
    (dict(x=5, y=4, sigma_x=1.0), dict(extent=(-1e308, 0, 0, 15)), r"pixel spacing dx = 1\.11e\+307"),
    (dict(x=1e300, y=4, sigma_x=2.0), dict(normalize="count", truncate=None), r"x\[0\] = 1e\+300"),
    (dict(x=5e300, y=4e300, sigma_x=1e300), dict(extent=(0, 1e301, 0, 1e301)), r"pixel spacing dx = 1\.11e\+300"),
    (dict(x=5e-300, y=4e-300, sigma_x=1e-300), dict(extent=(0, 1e-299, 0, 1e-299)), r"pixel spacing dx = 1\.11e-300"),
    (dict(x=5e-90, y=4e-90, sigma_x=1e-90), dict(extent=(0, 1e-89, 0, 1e-89)),
     r"amplitude\[0\] = 1\.0 with sigma_x = 1e-90, sigma_y = 1e-90 peaks at .* = 1\.59e\+179 \(kernel 0\), beyond float32"),
    (dict(x=5e-90, y=4e-90, sigma_x=[1e-90, 1e-120]), dict(extent=(0, 9e-90, 0, 7e-90), normalize="peak"),
     r"sigma_x\[1\] = 1e-120 is 1e-30 pixels \(kernel 1\); .* and 1e-100 to 1e\+100 in the coordinates' units"),
    (dict(x=5, y=[4, 4, 1e60], sigma_x=1.0), {}, r"y\[2\] = 1e\+60 is 1e\+60 pixels from the first pixel centre"),
    (dict(x=5, y=4, sigma_x=1e-20), {}, r"peaks at .* = 1\.59e\+39 \(kernel 0\), beyond float32's largest value"),
    (dict(x=5, y=4, sigma_x=2.0, amplitude=1e39), dict(normalize="peak"), r"amplitude\[0\] = 1e\+39 peaks at 1e\+39"),
    (dict(x=5, y=4, sigma_x=1e-200), dict(combine="por"), r"sigma_x\[0\] = 1e-200"),
])
def test_out_of_range_kernels_are_refused_before_out_is_touched(backend, kernels, options, pattern):
    refused(ValueError, pattern, gh.Kernels(**kernels), backend, **options)


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("axis", ["x", "sigma"])
def test_both_sides_of_each_range_limit(backend, axis):
    # Just inside: a correct image (the closed form); just outside: refused.
    if axis == "x":
        inside = gh.Kernels(x=MAX_PIXELS, y=4.0, sigma_x=1e49)
        outside = gh.Kernels(x=MAX_PIXELS * 1.0000001, y=4.0, sigma_x=1e49)
        heat = gh.render(inside, SHAPE, backend=backend, dtype="float64", normalize="peak", truncate=None)
        c = np.arange(SHAPE[1])
        expected = np.exp(-0.5 * ((c - MAX_PIXELS) / 1e49) ** 2) * np.exp(-0.5 * ((np.arange(8) - 4) / 1e49) ** 2)[:, None]
    else:
        inside = gh.Kernels(x=5.0, y=4.0, sigma_x=MIN_SIGMA_PIXELS)
        outside = gh.Kernels(x=5.0, y=4.0, sigma_x=MIN_SIGMA_PIXELS * 0.999999)
        heat = gh.render(inside, SHAPE, backend=backend, dtype="float64", normalize="peak", truncate=None)
        expected = np.zeros(SHAPE)
        expected[4, 5] = 1.0
    np.testing.assert_allclose(heat, expected, rtol=1e-12, atol=0)
    refused(ValueError, "(pixels from the first pixel centre|must be 1e-50 to 1e\\+50 pixels)", outside, backend,
            normalize="peak", truncate=None)


@pytest.mark.parametrize("backend", HOST)
def test_extreme_but_supported_values_render_like_the_closed_form(backend):
    # sigma 2e-90 in caller units on a grid of spacing 1e-90, and the same at 1e90.
    extent = (0.0, 9e-90, 0.0, 7e-90)
    k = gh.Kernels(x=5.3e-90, y=3.6e-90, sigma_x=2e-90, sigma_y=1.5e-90, theta=0.4)
    heat = gh.render(k, SHAPE, extent=extent, normalize="peak", dtype="float64", truncate=None, backend=backend)
    cols, rows = np.meshgrid(np.arange(10) - 5.3, np.arange(8) - 3.6)
    c, s = math.cos(0.4), math.sin(0.4)
    u, w = c * cols + s * rows, -s * cols + c * rows
    expected = np.exp(-0.5 * ((u / 2) ** 2 + (w / 1.5) ** 2))
    np.testing.assert_allclose(heat, expected, rtol=1e-12)
    large = gh.Kernels(x=5.3e90, y=3.6e90, sigma_x=2e90, sigma_y=1.5e90, theta=0.4)
    heat = gh.render(large, SHAPE, extent=tuple(v * 1e180 for v in extent), normalize="peak", dtype="float64",
                     truncate=None, backend=backend)
    np.testing.assert_allclose(heat, expected, rtol=1e-12)


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_amplitude_and_tiny_sigma_write_zeros_not_nan(backend, dtype):
    k = gh.Kernels(x=[5.0, 2.0], y=[4.0, 2.0], sigma_x=[1e-30, 1.0], amplitude=[0.0, 0.0])
    for normalize in ("peak", "count", "integral"):
        heat = gh.render(k, SHAPE, backend=backend, dtype=dtype, normalize=normalize)
        assert np.isfinite(heat).all() and not heat.any()


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_count_of_thin_rotated_kernels_sums_to_the_amplitude(backend, dtype):
    # Every pixel centre lies hundreds of sigmas across a thin diagonal kernel: the exponent's
    # minimum over the box's rectangle is far below its minimum over pixel centres.
    rng = np.random.default_rng(11)
    n = 40
    k = gh.Kernels(rng.uniform(2, 8, n), rng.uniform(2, 6, n), rng.uniform(0.5, 5, n), 10 ** rng.uniform(-4, -2, n),
                   theta=rng.uniform(0, np.pi, n), amplitude=rng.uniform(0.5, 2, n), image=np.arange(n))
    shape = (n, *SHAPE)
    heat = gh.render(k, shape, backend=backend, dtype=dtype, normalize="count", truncate=None)
    assert np.isfinite(heat).all()
    np.testing.assert_allclose(heat.sum(axis=(1, 2), dtype=np.float64), k.amplitude, rtol=1e-5)


@pytest.mark.parametrize("backend", HOST)
def test_sigmas_below_the_pixel_land_on_the_nearest_pixel_centres(backend):
    k = gh.Kernels(x=[3.0, 6.2], y=[2.0, 5.0], sigma_x=[0.01, 0.05], sigma_y=[0.02, 0.01])
    heat = gh.render(k, SHAPE, backend=backend, normalize="peak", dtype="float64")
    assert heat[2, 3] == 1.0
    assert heat[5, 6] == pytest.approx(math.exp(-0.5 * (0.2 / 0.05) ** 2), rel=1e-12)
    assert np.count_nonzero(heat) == 2 + (heat[5, 7] > 0)


# -- 2. out=: dtypes, layouts and types checked before anything is written ----------------------

@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("dtype", ["int32", "bool", "float16", "complex64", ">f4", ">f8", "uint8", "longdouble"])
def test_out_of_an_unsupported_dtype_is_refused_untouched(backend, dtype):
    out = np.ones(SHAPE, dtype=dtype)
    before = out.copy()
    with pytest.raises(ValueError, match=r"out has dtype .*which render cannot write"):
        gh.render(gh.Kernels(5, 4, 2.0), SHAPE, backend=backend, out=out)
    assert np.array_equal(out, before) and out.dtype == np.dtype(dtype)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("make", [lambda: np.matrix(np.full(SHAPE, 7.0, np.float32)),
                                  lambda: np.ma.masked_array(np.full(SHAPE, 7.0, np.float32))],
                         ids=["matrix", "masked"])
def test_array_subclasses_that_reshape_differently_are_refused(backend, make):
    out = make()
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        gh.render(gh.Kernels(5, 4, 2.0), SHAPE, backend=backend, out=out)
    assert (np.asarray(out) == 7.0).all()


@pytest.mark.parametrize("backend", HOST)
def test_accumulate_must_be_a_bool(backend):
    out = poisoned()
    with pytest.raises(TypeError, match=r"accumulate must be True or False, got 'yes'"):
        gh.render(gh.Kernels(5, 4, 2.0), SHAPE, backend=backend, out=out, accumulate="yes")
    assert (out == 7.0).all()


# -- 3. Kernels: validation that holds, pickling, copies -----------------------------------------

def test_kernels_arrays_are_read_only():
    k = gh.Kernels(x=[1.0, 2.0], y=3.0, sigma_x=1.0)
    for name in ("x", "y", "sigma_x", "sigma_y", "theta", "amplitude", "image"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(k, name)[0] = -1
    with pytest.raises(ValueError, match="read-only"):
        k.as_dict()["sigma_x"][0] = -1.0
    with pytest.raises(AttributeError, match="immutable"):
        k.sigma_x = np.array([-1.0, -1.0])
    assert (k.sigma_x > 0).all()


@pytest.mark.parametrize("backend", HOST)
def test_kernels_pickle_and_copy_to_equal_renders(backend):
    rng = np.random.default_rng(2)
    k = gh.Kernels(rng.uniform(0, 10, 30), rng.uniform(0, 8, 30), rng.uniform(0.5, 3, 30), theta=rng.uniform(0, 3, 30),
                   image=rng.integers(0, 2, 30))
    expected = gh.render(k, (2, *SHAPE), backend=backend)
    for other in (pickle.loads(pickle.dumps(k)), copy.copy(k), copy.deepcopy(k)):
        assert len(other) == 30 and other.xp is np
        for name, values in k.as_dict().items():
            assert np.array_equal(other.as_dict()[name], values) and not other.as_dict()[name].flags.writeable
        assert np.array_equal(gh.render(other, (2, *SHAPE), backend=backend), expected)
    assert copy.deepcopy(k).x is not k.x


def test_masked_arrays_refused_when_something_is_masked_taken_when_not():
    with pytest.raises(TypeError, match=r"x is a masked array with x\[1\] masked \(kernel 1\)"):
        gh.Kernels(np.ma.array([1.0, 2.0], mask=[False, True]), 1.0, 1.0)
    k = gh.Kernels(np.ma.array([1.0, 2.0], mask=[False, False]), 1.0, 1.0)
    assert k.x.tolist() == [1.0, 2.0]


def test_repeated_and_mistyped_columns_are_refused():
    with pytest.raises(ValueError, match=r"repeated column name\(s\) 'x'"):
        gh.Kernels.from_array(np.ones((2, 4)), columns=["x", "y", "sigma", "x"])
    with pytest.raises(TypeError, match="columns must be a sequence of names"):
        gh.Kernels.from_array(np.ones((2, 3)), columns="xys")
    with pytest.raises(TypeError, match=r"from_columns needs a mapping .* got list"):
        gh.Kernels.from_columns([1, 2, 3])


@pytest.mark.parametrize("image, pattern", [(1e20, r"image\[0\] = 1e\+20 is too large"),
                                            (np.uint64(2**63 + 5), r"image\[0\] = 9223372036854775813 is too large"),
                                            (2**62, r"image\[0\] = 4611686018427387904 is out of range")])
def test_huge_image_indices_are_named_unwrapped(image, pattern):
    with pytest.raises(ValueError, match=pattern):
        gh.render(gh.Kernels(5, 4, 2.0, image=image), SHAPE, backend="numpy")


def test_device_array_without_cupy_is_a_type_error():
    class DeviceLike:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f8", "data": (0, False), "version": 3}

    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    with pytest.raises(TypeError, match="CuPy cannot be imported"):
        gh.Kernels(DeviceLike(), 1.0, 1.0)


# -- 4. names: case-folded strings, clear errors for everything else ------------------------------

def test_backend_names_are_case_folded_in_both_places(monkeypatch):
    assert gh.backends.get("NumPy").__name__.endswith("numpy_backend")
    monkeypatch.setenv("GAUSSHEAT_BACKEND", " NUMPY ")
    assert gh.backends.get("auto").__name__.endswith("numpy_backend")
    heat = gh.render(gh.Kernels(5, 4, 2.0), SHAPE, backend="NUMPY")
    assert heat.max() > 0


@pytest.mark.parametrize("option", ["backend", "normalize", "combine"])
@pytest.mark.parametrize("value", [["numpy"], np.array(["pdf"]), {"sum": 1}, 3])
def test_unhashable_or_non_string_names_are_type_errors(option, value):
    out = poisoned()
    with pytest.raises(TypeError, match=rf"{option} must be a string"):
        gh.render(gh.Kernels(5, 4, 2.0), SHAPE, out=out, **{option: value})
    assert (out == 7.0).all()


def test_integral_refusal_says_what_is_supported():
    k = gh.Kernels(5, 4, 2.0, 3.0, theta=math.pi / 2)
    with pytest.raises(ValueError, match=r"axis-aligned kernels only \(theta = 0, or sigma_x == sigma_y\), but kernel 0 "
                                         r"has theta = 1\.5707963267948966 \(cos\*sin = 6\.12e-17, not 0\)"):
        gh.render(k, SHAPE, normalize="integral", backend="numpy")


@pytest.mark.parametrize("backend", HOST)
def test_rotated_isotropic_kernels_integrate_like_axis_aligned_ones(backend):
    rotated = gh.Kernels(x=[3.3, 6.0], y=[2.0, 5.5], sigma_x=[1.2, 0.7], theta=[0.7, -2.0], amplitude=[1.0, 2.0])
    aligned = gh.Kernels(x=[3.3, 6.0], y=[2.0, 5.5], sigma_x=[1.2, 0.7], amplitude=[1.0, 2.0])
    a = gh.render(rotated, SHAPE, normalize="integral", backend=backend, dtype="float64")
    b = gh.render(aligned, SHAPE, normalize="integral", backend="numpy", dtype="float64")
    assert np.abs(a - b).max() <= allowed_error(b, "float64")


@pytest.mark.parametrize("backend", HOST)
def test_negative_amplitudes_with_max_keep_the_zero_background(backend):
    k = gh.Kernels(x=[4.0, 4.5, 8.0], y=[4.0, 4.0, 2.0], sigma_x=[2.0, 1.0, 1.5], amplitude=[-1.0, 0.5, -0.2])
    heat = gh.render(k, SHAPE, combine="max", normalize="peak", backend=backend, dtype="float64")
    cols, rows = np.meshgrid(np.arange(10.0), np.arange(8.0))
    second = 0.5 * np.exp(-0.5 * ((cols - 4.5) ** 2 + (rows - 4.0) ** 2))
    inside = (np.abs(cols - 4.5) <= 4) & (np.abs(rows - 4) <= 4)
    np.testing.assert_allclose(heat, np.where(inside, second, 0.0), rtol=1e-12, atol=0)
    assert heat.min() == 0.0


# -- 5. shapes near 2**63 and memory ----------------------------------------------------------------

@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("shape", [(2**62, 2**62), (2**63, 3), (2**40, 2**40, 8, 8)])
def test_shapes_near_2_63_are_memory_errors_on_every_backend(backend, shape):
    with pytest.raises(MemoryError, match=r"needs .* GiB \(output, plan and scratch\), but only"):
        gh.render(gh.Kernels(5, 4, 2.0), shape, backend=backend)


def test_scratch_memory_counts_in_the_check(monkeypatch):
    # A (n, 1, 1) batch: the output is small, the Numba backend's per-band lists are not.
    module = gh.backends.get("numba")
    n = 4_000_000
    from gaussheat_gpu.planning import make_grid, make_plan

    plan = make_plan(gh.Kernels(0.0, 0.0, 1.0), make_grid((n, 1, 1)))
    scratch = module.call_bytes(plan, exact=True)
    assert scratch >= 16 * n and module.call_bytes(plan) >= scratch
    monkeypatch.setattr(module, "free_memory", lambda: 4 * n + scratch // 2)  # room for the output alone
    with pytest.raises(MemoryError, match="output, plan and scratch"):
        gh.render(gh.Kernels(0.0, 0.0, 1.0), (n, 1, 1), backend="numba")
    monkeypatch.setattr(module, "free_memory", lambda: 4 * n + scratch + 2**20)
    assert gh.render(gh.Kernels(0.0, 0.0, 1.0), (n, 1, 1), backend="numba")[0, 0, 0] > 0


@pytest.mark.parametrize("backend", HOST)
def test_por_of_values_of_exactly_one_is_one_without_warnings(backend):
    k = gh.Kernels(x=[3.0, 3.0, 6.0], y=[2.0, 2.0, 5.0], sigma_x=[1.0, 2.0, 1.5], amplitude=[1.0, 0.5, 1.0])
    heat = gh.render(k, SHAPE, combine="por", normalize="peak", backend=backend, dtype="float64")
    assert heat[2, 3] == 1.0 and heat[5, 6] == 1.0 and np.isfinite(heat).all()
