"""Every error of DESIGN.md section 2: the exception type, a message naming argument, kernel and value,
and an ``out`` left untouched."""

import math

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu import backends, planning


def good_kernels(**changes):
    columns = dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], sigma_x=[1.0, 1.0, 1.0], sigma_y=None,
                   theta=0.0, amplitude=1.0, image=0)
    columns.update(changes)
    return columns


@pytest.mark.parametrize("name, values, pattern", [
    ("x", [1.0, np.nan, 3.0], r"x\[1\] = nan is not finite \(kernel 1\)"),
    ("y", [1.0, 2.0, np.inf], r"y\[2\] = inf is not finite \(kernel 2\)"),
    ("sigma_x", [1.0, 1.0, 0.0], r"sigma_x\[2\] = 0.0 must be > 0 \(kernel 2\)"),
    ("sigma_y", [1.0, -2.5, 1.0], r"sigma_y\[1\] = -2.5 must be > 0 \(kernel 1\)"),
    ("sigma_x", [1.0, -np.inf, 1.0], r"sigma_x\[1\] = -inf is not finite"),
    ("theta", [0.0, 0.0, np.nan], r"theta\[2\] = nan is not finite"),
    ("amplitude", [np.inf, 1.0, 1.0], r"amplitude\[0\] = inf is not finite"),
    ("image", [0, -1, 0], r"image\[1\] = -1 must be >= 0"),
    ("image", [0, 1.5, 0], r"image\[1\] = 1.5 is not an integer"),
])
def test_bad_kernel_values_name_argument_index_and_value(name, values, pattern):
    with pytest.raises(ValueError, match=pattern):
        gh.Kernels(**good_kernels(**{name: values}))


def test_mismatched_lengths_name_the_arguments():
    with pytest.raises(ValueError, match=r"mismatched lengths \(x: 3, y: 3, sigma_x: 2"):
        gh.Kernels(**good_kernels(sigma_x=[1.0, 2.0]))


@pytest.mark.parametrize("bad, exc", [([[1.0, 2.0]], TypeError), ("abc", TypeError), ([1 + 2j], TypeError)])
def test_non_numeric_or_2d_arguments_are_type_errors(bad, exc):
    with pytest.raises(exc, match="x"):
        gh.Kernels(**good_kernels(x=bad))


def render_into_poisoned_out(*, kernels=None, shape=(4, 5), backend="numpy", **options):
    """Call render with an ``out`` full of a sentinel; return the out after the expected failure."""
    out = np.full(shape, 7.0, dtype=np.float32)
    kernels = kernels if kernels is not None else gh.Kernels(**good_kernels())
    return out, lambda: gh.render(kernels, shape, backend=backend, out=out, **options)


@pytest.mark.parametrize("options, exc, pattern", [
    (dict(combine="avg"), ValueError, r"combine = 'avg' is not one of"),
    (dict(normalize="area"), ValueError, r"normalize = 'area' is not one of"),
    (dict(truncate=0), ValueError, r"truncate = 0.0 must be"),
    (dict(truncate=-1.0), ValueError, r"truncate = -1.0 must be"),
    (dict(truncate=math.nan), ValueError, r"truncate = nan must be"),
    (dict(truncate="4"), TypeError, r"truncate must be a number"),
    (dict(extent=(0, 0, 0, 1)), ValueError, r"x pixel spacing of 0.0"),
    (dict(extent=(0, 1, 0)), TypeError, r"extent must be 4 numbers"),
    (dict(extent=(0, 1, 0, math.inf)), ValueError, r"extent y1 = inf is not finite"),
    (dict(dtype="int32"), ValueError, r"dtype = 'int32' is not supported"),
    (dict(dtype="float64"), ValueError, r"out has dtype float32 but dtype = 'float64'"),
    (dict(backend="opencl"), ValueError, r"backend = 'opencl' is not one of"),
    (dict(kernels=gh.Kernels(**good_kernels(image=[0, 3, 0]))), ValueError,
     r"image\[1\] = 3 is out of range: the output holds 1 image"),
    (dict(combine="por", normalize="peak", kernels=gh.Kernels(**good_kernels(amplitude=[0.5, 1.5, 1.0]))),
     ValueError, r"kernel 1 has amplitude = 1.5"),
    (dict(combine="por", normalize="pdf", kernels=gh.Kernels(**good_kernels(sigma_x=[1.0, 1.0, 0.1]))),
     ValueError, r"kernel 2 has amplitude = 1.0 and peak value 15.9"),
    (dict(combine="por", normalize="count", kernels=gh.Kernels(**good_kernels(amplitude=[0.5, 0.5, -0.1]))),
     ValueError, r"kernel 2 has amplitude = -0.1"),
    (dict(normalize="integral", kernels=gh.Kernels(**good_kernels(sigma_y=[1.0, 2.0, 1.0], theta=[0, 0.1, 0]))),
     ValueError, r"kernel 1 has theta = 0.1"),
])
def test_bad_render_options_raise_and_leave_out_untouched(options, exc, pattern):
    out, call = render_into_poisoned_out(**options)
    with pytest.raises(exc, match=pattern):
        call()
    assert (out == 7.0).all()


@pytest.mark.parametrize("shape, exc, pattern", [
    ((4,), ValueError, r"at least 2 dimensions"),
    ((0, 5), ValueError, r"shape\[0\] = 0 must be > 0"),
    ((3, -1, 5), ValueError, r"shape\[1\] = -1 must be > 0"),
    ((4.0, 5), TypeError, r"shape\[0\] must be an int"),
    ("ab", TypeError, r"shape\[0\] must be an int"),
])
def test_bad_shapes(shape, exc, pattern):
    with pytest.raises(exc, match=pattern):
        gh.render(gh.Kernels(**good_kernels()), shape, backend="numpy")


@pytest.mark.parametrize("make_out, pattern", [
    (lambda: np.zeros((4, 6), np.float32), r"out has shape \(4, 6\) but shape = \(4, 5\)"),
    (lambda: np.zeros((5, 4), np.float32).T, r"C-contiguous"),
    (lambda: [[0.0] * 5] * 4, r"out must be a numpy.ndarray"),
])
def test_bad_out_arrays(make_out, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        gh.render(gh.Kernels(**good_kernels()), (4, 5), backend="numpy", out=make_out())


def test_read_only_out_is_refused():
    out = np.full((4, 5), 7.0, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        gh.render(gh.Kernels(**good_kernels()), (4, 5), backend="numpy", out=out)


def test_accumulate_needs_out():
    with pytest.raises(ValueError, match="accumulate=True .* pass out="):
        gh.render(gh.Kernels(**good_kernels()), (4, 5), backend="numpy", accumulate=True)


def test_an_unknown_data_check_is_a_bug_report_not_a_wrong_message():
    # Each known check has its own message; a code no check has (a device's result read back
    # wrong) must not be explained as a failed por range check.
    kernels = gh.Kernels(**good_kernels())
    grid = planning.make_grid((8, 8))
    with pytest.raises(RuntimeError, match=r"kernel 1 failed an unknown data check \(code 7\)"):
        planning.raise_for_bad_kernel(kernels, grid, "por", "pdf", 7, 1)
    with pytest.raises(ValueError, match=r"combine='por' needs every kernel value"):
        planning.raise_for_bad_kernel(kernels, grid, "por", "pdf", planning.CHECK_POR, 1)


def test_too_large_output_refused_before_allocation():
    with pytest.raises(MemoryError, match=r"shape \(1000000, 1000000\) .* needs 3725.29 GiB"):
        gh.render(gh.Kernels(**good_kernels()), (10**6, 10**6), backend="numpy")


def test_kernels_must_be_kernels_or_columns():
    with pytest.raises(TypeError, match="kernels must be a gaussheat_gpu.Kernels"):
        gh.render([(1, 2, 3)], (4, 5))


def test_unavailable_backend_says_why_and_how_to_install(monkeypatch):
    monkeypatch.setitem(backends._MODULES, "cupy", "gaussheat_gpu_no_such_module")
    monkeypatch.delitem(backends._loaded, "cupy", raising=False)
    monkeypatch.delitem(backends._reasons, "cupy", raising=False)
    with pytest.raises(gh.BackendUnavailable, match=r"backend 'cupy' cannot run here: cannot import it .*pip install 'gaussheat_gpu\[cuda12\]'"):
        gh.render(gh.Kernels(**good_kernels()), (4, 5), backend="cupy")


def test_environment_variable_with_unknown_backend(monkeypatch):
    monkeypatch.setenv("GAUSSHEAT_BACKEND", "fortran")
    with pytest.raises(ValueError, match="environment variable GAUSSHEAT_BACKEND = 'fortran'"):
        gh.render(gh.Kernels(**good_kernels()), (4, 5))


@pytest.mark.parametrize("table, pattern", [
    ({"x": [1], "y": [1]}, r"missing column\(s\) sigma_x"),
    ({"x": [1], "y": [1], "sigma": [1], "weight": [2]}, r"unknown column 'weight'"),
    ({"x": [1], "y": [1], "sigma": [1], "sigma_x": [2]}, r"either 'sigma' or 'sigma_x'"),
])
def test_bad_columns(table, pattern):
    with pytest.raises(ValueError, match=pattern):
        gh.Kernels.from_columns(table)


def test_from_array_checks_shape_and_names():
    with pytest.raises(ValueError, match="2-D"):
        gh.Kernels.from_array(np.zeros(3))
    with pytest.raises(ValueError, match="3 columns in the array but 2 names"):
        gh.Kernels.from_array(np.ones((2, 3)), columns=["x", "y"])
