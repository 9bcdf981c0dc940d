"""The NumPy backend (the float64 reference) pinned to closed forms and to tests/naive.py."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.special import erf
from scipy.stats import multivariate_normal, norm

import gaussheat_gpu as gh
from naive import naive_render, naive_support_mask
from strategies import kernel_dicts, render_cases


def ref(kernels, shape, **options):
    return gh.render(kernels, shape, backend="numpy", dtype="float64", **options)


def max_rel_err(actual, expected):
    """max |actual - expected| over max |expected|; images below float64's normal range
    (values ~1e-308, where relative precision runs out) are compared against that floor."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max() if expected.size else 0.0
    diff = np.abs(np.asarray(actual, dtype=np.float64) - expected).max() if expected.size else 0.0
    return diff / max(scale, np.finfo(np.float64).tiny)


def test_rotated_anisotropic_pdf_matches_scipy_multivariate_normal():
    x, y, sx, sy, theta = [30.3, 12.0, 50.0], [20.7, 35.5, 5.0], [4.0, 9.0, 2.5], [11.0, 3.0, 6.0], [0.4, -1.2, 2.9]
    amplitude = [1.0, 2.5, 0.7]
    heat = ref(gh.Kernels(x, y, sx, sy, theta, amplitude), (48, 64), truncate=None)
    yy, xx = np.mgrid[0:48, 0:64]
    grid = np.dstack([xx, yy]).astype(np.float64)
    expected = np.zeros((48, 64))
    for i in range(3):
        c, s = math.cos(theta[i]), math.sin(theta[i])
        rot = np.array([[c, -s], [s, c]])
        cov = rot @ np.diag([sx[i] ** 2, sy[i] ** 2]) @ rot.T
        expected += amplitude[i] * multivariate_normal(mean=[x[i], y[i]], cov=cov).pdf(grid)
    assert max_rel_err(heat, expected) < 1e-12


def test_seed_formula_probabilistic_or_of_norm_pdf_products():
    # The asker's formula: I = 1 - (1 - P1)(1 - P2) with P = norm.pdf(y) * norm.pdf(x).
    height = width = 96
    k1 = dict(mu_x=48.0, mu_y=48.0, sx=6.0, sy=6.0)
    k2 = dict(mu_x=50.0, mu_y=45.0, sx=10.0, sy=20.0)
    rows, cols = np.mgrid[0:height, 0:width]

    def p(k):
        return norm.pdf(rows, loc=k["mu_y"], scale=k["sy"]) * norm.pdf(cols, loc=k["mu_x"], scale=k["sx"])

    expected = 1.0 - (1.0 - p(k1)) * (1.0 - p(k2))
    kernels = gh.Kernels(x=[k1["mu_x"], k2["mu_x"]], y=[k1["mu_y"], k2["mu_y"]],
                         sigma_x=[k1["sx"], k2["sx"]], sigma_y=[k1["sy"], k2["sy"]])
    heat = ref(kernels, (height, width), combine="por", truncate=None)
    assert max_rel_err(heat, expected) < 1e-12


def test_stack_overflow_accepted_answer_grid():
    # The accepted answer: 100x100 linspace grid on [-3, 3]^2, two unit Gaussians, summed pdfs.
    x = np.linspace(-3, 3, 100)
    y = np.linspace(-3, 3, 100)
    xx, yy = np.meshgrid(x, y)
    xxyy = np.c_[xx.ravel(), yy.ravel()]
    zz = multivariate_normal(mean=(-1, -1), cov=np.eye(2)).pdf(xxyy) + \
        multivariate_normal(mean=(1, 1), cov=np.eye(2)).pdf(xxyy)
    expected = zz.reshape((100, 100))
    kernels = gh.Kernels(x=[-1, 1], y=[-1, 1], sigma_x=1.0)
    heat = ref(kernels, (100, 100), extent=(-3, 3, -3, 3), truncate=None)
    assert max_rel_err(heat, expected) < 1e-12


def test_integral_is_erf_difference_per_pixel_cell():
    kernels = gh.Kernels(x=[10.3], y=[7.8], sigma_x=[1.7], sigma_y=[0.9], amplitude=[3.0])
    heat = ref(kernels, (16, 24), normalize="integral", truncate=None)
    rows, cols = np.mgrid[0:16, 0:24]

    def mass(centre, mu, s):
        return 0.5 * (erf((centre + 0.5 - mu) / (s * np.sqrt(2))) - erf((centre - 0.5 - mu) / (s * np.sqrt(2))))

    expected = 3.0 * mass(cols, 10.3, 1.7) * mass(rows, 7.8, 0.9)
    assert max_rel_err(heat, expected) < 1e-12


def test_integral_sums_to_amplitude_on_large_image_with_extent():
    kernels = gh.Kernels(x=[0.1], y=[-0.2], sigma_x=[0.5], sigma_y=[0.8], amplitude=[2.0])
    heat = ref(kernels, (200, 200), normalize="integral", truncate=None, extent=(-10, 10, 10, -10))
    assert heat.sum() == pytest.approx(2.0, rel=1e-12)


def test_integral_rejects_rotated_anisotropic_but_accepts_rotated_isotropic():
    with pytest.raises(ValueError, match=r"kernel 1 .*theta"):
        ref(gh.Kernels(x=[3, 4], y=[3, 4], sigma_x=[1, 1], sigma_y=[1, 2], theta=[0, 0.3]), (8, 8),
            normalize="integral")
    rotated = ref(gh.Kernels(x=[3.2], y=[4.1], sigma_x=[1.5], theta=[0.7]), (8, 8), normalize="integral")
    plain = ref(gh.Kernels(x=[3.2], y=[4.1], sigma_x=[1.5]), (8, 8), normalize="integral")
    np.testing.assert_array_equal(rotated, plain)


@pytest.mark.parametrize("theta", [0.0, 0.6])
@pytest.mark.parametrize("truncate", [None, 2.0, 4.0])
def test_count_each_kernel_sums_to_its_amplitude_even_cut_by_the_border(theta, truncate):
    x = [0.0, 19.5, 10.0, -3.0]  # on the border, inside, half outside
    y = [0.0, 10.0, 14.7, 5.0]
    amplitude = [1.0, 2.5, 0.3, 4.0]
    total = 0.0
    for i in range(4):
        k = gh.Kernels(x=[x[i]], y=[y[i]], sigma_x=[3.0], sigma_y=[2.0], theta=[theta], amplitude=[amplitude[i]])
        s = ref(k, (15, 20), normalize="count", truncate=truncate).sum()
        assert s == pytest.approx(amplitude[i], rel=1e-13)
        total += s
    both = ref(gh.Kernels(x, y, 3.0, 2.0, theta, amplitude), (15, 20), normalize="count", truncate=truncate)
    assert both.sum() == pytest.approx(sum(amplitude), rel=1e-13)


def test_count_kernel_with_no_pixel_in_image_contributes_nothing():
    k = gh.Kernels(x=[-50.0, 5.0], y=[5.0, 5.0], sigma_x=2.0, amplitude=[7.0, 1.0])
    heat = ref(k, (10, 10), normalize="count", truncate=3.0)
    assert heat.sum() == pytest.approx(1.0, rel=1e-13)


def test_count_far_tail_kernel_keeps_its_mass_in_float32():
    # Only the far tail is visible: without the planner's shift g would underflow to 0 in float32.
    k = gh.Kernels(x=[-60.0], y=[5.0], sigma_x=2.0)
    heat = gh.render(k, (10, 10), normalize="count", truncate=None, backend="numpy", dtype="float32")
    assert heat.sum() == pytest.approx(1.0, rel=1e-5)
    assert heat[:, 0].sum() > 0.99  # the nearest column holds almost everything


@pytest.mark.parametrize("centre", [5.5, 5.5 + 1e-9, 5.5 - 1e-9])
def test_truncation_box_around_a_half_pixel_centre(centre):
    # t * sigma = 2 exactly: the box is ceil(c - 2) .. floor(c + 2).
    k = gh.Kernels(x=[centre], y=[4.0], sigma_x=[1.0], amplitude=[1.0])
    heat = ref(k, (9, 12), normalize="peak", truncate=2.0)
    cols = np.flatnonzero(heat[4])
    assert cols[0] == math.ceil(centre - 2) and cols[-1] == math.floor(centre + 2)
    rows = np.flatnonzero(heat[:, 5])
    assert (rows[0], rows[-1]) == (2, 6)  # box edges at exactly +-2 sigma are inside
    inside = heat[2:7, cols[0]:cols[-1] + 1]
    yy, xx = np.mgrid[2:7, cols[0]:cols[-1] + 1]
    np.testing.assert_allclose(inside, np.exp(-((xx - centre) ** 2 + (yy - 4.0) ** 2) / 2), rtol=1e-14)
    mask = np.zeros_like(heat, dtype=bool)
    mask[2:7, cols[0]:cols[-1] + 1] = True
    assert not heat[~mask].any()


def test_truncation_box_uses_rotated_covariance_extent():
    # Rotated by 90 degrees, sigma_x becomes the row spread.
    k = gh.Kernels(x=[20.0], y=[20.0], sigma_x=[4.0], sigma_y=[1.0], theta=[math.pi / 2])
    heat = ref(k, (41, 41), normalize="peak", truncate=2.0)
    rows, cols = np.nonzero(heat)
    assert (rows.min(), rows.max()) == (12, 28)
    assert (cols.min(), cols.max()) == (18, 22)


def test_peak_is_amplitude_at_centre_and_max_takes_the_larger():
    k = gh.Kernels(x=[5.0, 6.0], y=[5.0, 5.0], sigma_x=1.0, amplitude=[0.8, 0.5])
    heat = ref(k, (11, 11), normalize="peak", combine="max")
    assert heat[5, 5] == pytest.approx(0.8, rel=1e-15)
    assert heat[5, 6] == pytest.approx(max(0.8 * math.exp(-0.5), 0.5), rel=1e-15)


def test_max_background_is_zero_even_for_negative_amplitudes():
    k = gh.Kernels(x=[5.0], y=[5.0], sigma_x=1.0, amplitude=[-2.0])
    heat = ref(k, (11, 11), normalize="peak", combine="max")
    assert (heat == 0).all()


def test_batched_images_receive_only_their_kernels():
    k = gh.Kernels(x=[3, 10, 6], y=[4, 4, 8], sigma_x=1.5, image=[0, 5, 2])
    heat = ref(k, (2, 3, 12, 14))
    assert heat.shape == (2, 3, 12, 14)
    flat = heat.reshape(6, 12, 14)
    single = ref(gh.Kernels(x=[10], y=[4], sigma_x=1.5), (12, 14))
    np.testing.assert_array_equal(flat[5], single)
    assert not flat[[1, 3, 4]].any()


@pytest.mark.parametrize("extent", [(0, 9, 0, 7), (9, 0, 7, 0), (-1, 1, 2, -2)])
def test_reversed_extent_flips_the_image(extent):
    k = gh.Kernels(x=[0.3, -0.5], y=[0.2, 1.1], sigma_x=[0.4, 0.7], sigma_y=[0.9, 0.3], theta=[0.0, 0.5])
    x0, x1, y0, y1 = extent
    heat = ref(k, (8, 10), extent=extent, truncate=None)
    flipped = ref(k, (8, 10), extent=(x1, x0, y1, y0), truncate=None)
    np.testing.assert_allclose(heat, flipped[::-1, ::-1], rtol=1e-13, atol=0)


def test_single_pixel_row_and_column():
    k = gh.Kernels(x=[0.0], y=[0.0], sigma_x=[1.0])
    assert ref(k, (1, 1), normalize="peak")[0, 0] == 1.0
    line = ref(k, (1, 5), normalize="peak", truncate=None)
    np.testing.assert_allclose(line[0], np.exp(-np.arange(5) ** 2 / 2), rtol=1e-15)


@settings(max_examples=150)
@given(render_cases(max_kernels=6, max_side=14))
def test_reference_backend_matches_the_naive_pixel_loop(case):
    kernels, shape, options = case
    heat = ref(kernels, shape, **options)
    expected = np.array(naive_render(kernel_dicts(kernels), shape, **options)).reshape(shape)
    assert max_rel_err(heat, expected) < 1e-12
    inside = np.array(naive_support_mask(kernel_dicts(kernels), shape, options["truncate"], options["extent"]))
    assert not heat[~inside.reshape(shape)].any()


@settings(max_examples=60)
@given(render_cases(max_kernels=5, max_side=10))
def test_accumulate_combines_with_existing_output(case):
    kernels, shape, options = case
    rng = np.random.default_rng(len(kernels))
    start = rng.uniform(0, 1, shape)
    out = start.copy()
    gh.render(kernels, shape, backend="numpy", out=out, accumulate=True, **options)
    initial = start.reshape(-1, shape[-2], shape[-1])
    expected = np.array(naive_render(kernel_dicts(kernels), shape, initial=initial, **options)).reshape(shape)
    assert max_rel_err(out, expected) < 1e-12
