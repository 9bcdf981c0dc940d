"""Random cases sized to reach every evaluation path, each path named in the test id.

The small random cases of tests/strategies.py stay below 40 pixels and 12 kernels; here each
case is drawn at the size that sends it down one path: 128- and 256-row bands, the dense product
(>= 2**20 pixels) and the cases it must not take (accumulate, batches), reused scratch memory
(>= 512 kernels), the chunked planner (> 4096 kernels), NumPy's window-by-window path over several
strips, sub-pixel sigmas, negative amplitudes under max, rotated isotropic kernels with integral.
Each test first checks that its case reaches the path, then compares every host backend with the
NumPy float64 reference (and that reference with a closed form where one exists).

Two tiers: a few examples per path in ``make test``, many more and larger ones behind the
``deep`` marker (``make test-deep``).
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaussheat_gpu as gh
from gaussheat_gpu.backends import numpy_backend
from gaussheat_gpu.planning import make_grid, make_plan
from naive import naive_render
from strategies import allowed_error, kernel_dicts, render_cases

numba_backend = pytest.importorskip("gaussheat_gpu.backends.numba")
from gaussheat_gpu.backends.numba import dense as numba_dense  # noqa: E402
from gaussheat_gpu.backends.numba import planning as numba_planning  # noqa: E402

FAST = settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
DEEP = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
COMBINES = st.sampled_from(["sum", "max", "por"])
NORMALIZES = st.sampled_from(["pdf", "peak", "integral", "count"])


def rows_for_band(target, n_images=1):
    """A height whose band is ``target`` rows for this machine's Numba thread count, or None."""
    for height in range(1024, 8193, 32):
        if numba_backend._band_height(n_images, height) == target:
            return height
    return None


def random_kernels(rng, n, shape, sigma, combine, normalize, rotated=True, n_images=1, margin=0.1):
    height, width = shape
    sigma_x = rng.uniform(*sigma, n)
    sigma_y = sigma_x if normalize == "integral" else rng.uniform(*sigma, n)
    theta = rng.uniform(-np.pi, np.pi, n) if rotated else np.zeros(n)
    if combine == "por":
        amplitude = rng.uniform(0, 1, n) * (np.minimum(1.0, 2 * np.pi * sigma_x * sigma_y) if normalize == "pdf" else 1)
    else:
        amplitude = rng.uniform(-1.0, 2.0, n)
    return gh.Kernels(rng.uniform(-margin * width, (1 + margin) * (width - 1), n),
                      rng.uniform(-margin * height, (1 + margin) * (height - 1), n),
                      sigma_x, sigma_y, theta, amplitude, rng.integers(0, n_images, n))


def check_host_backends(kernels, shape, options, accumulate=False):
    """Every host backend against the NumPy float64 reference, both dtypes, with and without out."""
    start = np.random.default_rng(1).uniform(0, 1, shape) if accumulate else None
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", out=None if start is None else start.copy(),
                         accumulate=accumulate, **options)
    for backend in ("numba", "numpy"):
        for dtype in ("float32", "float64"):
            out = np.full(shape, np.nan, dtype) if start is None else start.astype(dtype)
            actual = gh.render(kernels, shape, backend=backend, dtype=dtype, out=out, accumulate=accumulate, **options)
            err = np.abs(actual.astype(np.float64) - expected).max()
            assert err <= allowed_error(expected, dtype), (backend, dtype, err, np.abs(expected).max())
    return expected


def case_params(draw, rotated=True):
    combine, normalize = draw(COMBINES), draw(NORMALIZES)
    return combine, normalize, rotated and normalize != "integral" and draw(st.booleans())


# -- bands ------------------------------------------------------------------------------------------

def bands(draw, target, deep):
    height = rows_for_band(target)
    if height is None:
        pytest.skip(f"no height gives {target}-row bands with {numba_backend.numba.get_num_threads()} threads")
    combine, normalize, rotated = case_params(draw)
    shape = (height, draw(st.integers(8, 64 if deep else 24)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 300 if deep else 60))
    kernels = random_kernels(rng, n, shape, (0.3, 40.0), combine, normalize, rotated)
    options = dict(combine=combine, normalize=normalize, truncate=draw(st.sampled_from([None, 1.5, 3.0])))
    assert numba_backend._band_height(1, height) == target
    check_host_backends(kernels, shape, options, accumulate=draw(st.booleans()))


# -- dense product and the cases that must not take it ------------------------------------------------

def dense(draw, variant, deep):
    combine, normalize, _ = case_params(draw, rotated=False)
    n_images = 2 if variant == "batch" else 1
    side = 1024
    shape = (n_images, side, side) if n_images > 1 else (side, side)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 8 if deep else 3))
    columns = dict(x=rng.uniform(0, side, n), y=rng.uniform(0, side, n), sigma_x=rng.uniform(150, 600, n),
                   amplitude=rng.uniform(0.2, 1.0, n), image=rng.integers(0, n_images, n))
    columns["sigma_y"] = columns["sigma_x"] if normalize == "integral" else rng.uniform(150, 600, n)
    kernels = gh.Kernels(**columns)
    options = dict(combine="sum", normalize=normalize, truncate=None)
    plan = make_plan(kernels, make_grid(shape), accumulate=variant == "accumulate", truncate=None, normalize=normalize)
    assert numba_dense.dense_pays(plan, numba_dense.SUM) == (variant == "plain")
    one_image = gh.Kernels(**dict(columns, image=0))  # the same kernels would take it on one image, fresh
    assert numba_dense.dense_pays(make_plan(one_image, make_grid((side, side)), truncate=None), numba_dense.SUM)
    check_host_backends(kernels, shape, options, accumulate=variant == "accumulate")


# -- reused scratch and the chunked planner -----------------------------------------------------------

def many(draw, n_min, deep):
    combine, normalize, rotated = case_params(draw)
    n_images = draw(st.sampled_from([1, 2]))
    shape = (n_images, draw(st.integers(16, 96 if deep else 48)), draw(st.integers(16, 96 if deep else 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(n_min, n_min + (3 * n_min if deep else 40)))
    # centres on the image, radii >= 0.5 pixel: every kernel keeps a pixel, but a random tenth
    # (in every chunk of the planner) is moved far off the image and dropped, so rows are packed
    kernels = random_kernels(rng, n, shape[1:], (0.5, 3.0), combine, normalize, rotated, n_images, margin=0.0)
    off = rng.random(n) < 0.1
    kernels = gh.Kernels(**{**kernels.as_dict(), "x": np.where(off, -1000.0, kernels.x)})
    options = dict(combine=combine, normalize=normalize, truncate=draw(st.sampled_from([1.0, 2.5, 4.0])))
    grid = make_grid(shape)
    compiled = make_plan(kernels, grid, compiled=True, **options)
    arrays = make_plan(kernels, grid, compiled=False, **options)
    assert len(kernels) >= n_min and compiled.n_kernels == np.count_nonzero(~off)  # the ones on the image kept
    np.testing.assert_array_equal(compiled.params, arrays.params)  # compiled planner: the array code's bits
    np.testing.assert_array_equal(compiled.boxes, arrays.boxes)
    check_host_backends(kernels, shape, options, accumulate=draw(st.booleans()))
    # a second, smaller call through the same reused memory
    check_host_backends(gh.Kernels(**{k: v[: n // 2] for k, v in kernels.as_dict().items()}), shape, options)


# -- NumPy's large windows, over several strips -------------------------------------------------------

def large_windows(draw, deep):
    side = draw(st.sampled_from([1100, 2048] if deep else [1100]))
    theta = draw(st.sampled_from([0.0, 0.6]))
    sx, sy = draw(st.floats(200, 800)), draw(st.floats(200, 800))
    cx, cy = draw(st.floats(0, side)), draw(st.floats(0, side))
    k = gh.Kernels(cx, cy, sx, sy, theta=theta)
    shape = (side, side)
    plan = make_plan(k, make_grid(shape), truncate=None)
    strips = -(-side // max(1, numpy_backend.CHUNK_ELEMENTS // side))
    assert plan.boxes[0, 1] - plan.boxes[0, 0] + 1 == side and strips >= 2  # whole image, several strips
    heat = gh.render(k, shape, backend="numpy", dtype="float64", normalize="peak", truncate=None)
    cols, rows = np.arange(side) - cx, (np.arange(side) - cy)[:, None]
    c, s = math.cos(theta), math.sin(theta)
    expected = np.exp(-0.5 * (((c * cols + s * rows) / sx) ** 2 + ((-s * cols + c * rows) / sy) ** 2))
    assert np.abs(heat - expected).max() <= 1e-12


# -- small kernels, negative amplitudes, rotated isotropic integrals ---------------------------------

def odd_kernels(draw, which, deep):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(4, 80 if deep else 30)), draw(st.integers(4, 80 if deep else 30)))
    n = draw(st.integers(1, 200 if deep else 30))
    height, width = shape
    x, y = rng.uniform(-2, width + 2, n), rng.uniform(-2, height + 2, n)
    if which == "sub-pixel-sigma":
        combine, normalize, _ = case_params(draw)
        kernels = random_kernels(rng, n, shape, (0.01, 0.4), combine, normalize)
    elif which == "negative-max":
        combine, normalize = "max", draw(st.sampled_from(["pdf", "peak", "integral", "count"]))
        kernels = gh.Kernels(x, y, rng.uniform(0.5, 5, n), theta=rng.uniform(0, 3, n) if normalize != "integral" else 0,
                             amplitude=rng.uniform(-2, 1, n))
    else:  # rotated isotropic with integral
        combine, normalize = draw(COMBINES), "integral"
        sigma = rng.uniform(0.3, 6, n)
        kernels = gh.Kernels(x, y, sigma, sigma, theta=rng.uniform(-np.pi, np.pi, n), amplitude=rng.uniform(0, 1, n))
    options = dict(combine=combine, normalize=normalize, truncate=draw(st.sampled_from([None, 2.0, 4.0])))
    expected = check_host_backends(kernels, shape, options, accumulate=draw(st.booleans()))
    if combine == "max":
        assert expected.min() >= 0.0


# -- the NumPy reference itself against the naive per-pixel loop, past tests/test_semantics.py's 14 px --

def naive_reference(draw, deep):
    kernels, shape, options = draw(render_cases(max_kernels=20 if deep else 8, max_side=48 if deep else 24))
    heat = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
    expected = np.array(naive_render(kernel_dicts(kernels), shape, **options)).reshape(shape)
    # relative to the sum of |values| at a pixel: opposite amplitudes may cancel
    magnitude = np.array(naive_render(kernel_dicts(gh.Kernels(**{**kernels.as_dict(),
                                                                 "amplitude": np.abs(kernels.amplitude)})),
                                      shape, **{**options, "combine": "sum"})).reshape(shape)
    assert np.abs(heat - expected).max(initial=0.0) <= 1e-12 * max(magnitude.max(initial=0.0), np.finfo(float).tiny)


PATHS = {
    "bands-256": lambda draw, deep: bands(draw, 256, deep),
    "bands-128": lambda draw, deep: bands(draw, 128, deep),
    "dense": lambda draw, deep: dense(draw, "plain", deep),
    "dense-not-when-accumulating": lambda draw, deep: dense(draw, "accumulate", deep),
    "dense-not-for-batches": lambda draw, deep: dense(draw, "batch", deep),
    "reused-scratch-512": lambda draw, deep: many(draw, numba_planning.WORKSPACE_MIN_KERNELS, deep),
    "chunked-planner-4097": lambda draw, deep: many(draw, numba_planning.CHUNK + 1, deep),
    "numpy-large-windows": large_windows,
    "sub-pixel-sigma": lambda draw, deep: odd_kernels(draw, "sub-pixel-sigma", deep),
    "negative-amplitudes-max": lambda draw, deep: odd_kernels(draw, "negative-max", deep),
    "rotated-isotropic-integral": lambda draw, deep: odd_kernels(draw, "rotated-isotropic", deep),
    "numpy-reference-vs-naive": naive_reference,
}


@pytest.mark.parametrize("path", PATHS)
@FAST
@given(data=st.data())
def test_path(path, data):
    PATHS[path](data.draw, deep=False)


@pytest.mark.deep
@pytest.mark.parametrize("path", PATHS)
@DEEP
@given(data=st.data())
def test_path_deep(path, data):
    PATHS[path](data.draw, deep=True)
