"""Hypothesis strategies for random render cases, shared by the equality tests."""

import numpy as np
from hypothesis import strategies as st

import gaussheat_gpu as gh


@st.composite
def render_cases(draw, max_kernels=12, max_side=40, combine=None, normalize=None, per_kernel_truncate=True):
    """(kernels, shape, options): random kernels near a random small grid, every mode
    (``per_kernel_truncate=False``: truncate is None or one number)."""
    combine = combine or draw(st.sampled_from(["sum", "max", "por"]))
    normalize = normalize or draw(st.sampled_from(["pdf", "peak", "integral", "count"]))
    batch = draw(st.sampled_from([(), (2,), (2, 2)]))
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    shape = (*batch, height, width)
    n_images = int(np.prod(batch)) if batch else 1
    if draw(st.booleans()):
        extent = None
        x_lo, x_hi, y_lo, y_hi, unit_x, unit_y = 0.0, width - 1.0, 0.0, height - 1.0, 1.0, 1.0
    else:
        x0 = draw(st.floats(-5, 5))
        x1 = x0 + draw(st.sampled_from([-1, 1])) * draw(st.floats(0.5, 10))
        y0 = draw(st.floats(-5, 5))
        y1 = y0 + draw(st.sampled_from([-1, 1])) * draw(st.floats(0.5, 10))
        extent = (x0, x1, y0, y1)
        x_lo, x_hi, y_lo, y_hi = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        unit_x = (x_hi - x_lo) / max(width - 1, 1) or 1.0
        unit_y = (y_hi - y_lo) / max(height - 1, 1) or 1.0
    n = draw(st.integers(0, max_kernels))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    span_x, span_y = x_hi - x_lo + unit_x, y_hi - y_lo + unit_y
    x = rng.uniform(x_lo - 0.3 * span_x, x_hi + 0.3 * span_x, n)
    y = rng.uniform(y_lo - 0.3 * span_y, y_hi + 0.3 * span_y, n)
    unit = min(unit_x, unit_y)
    sigma_x = unit * rng.uniform(0.4, 8.0, n)
    sigma_y = unit * rng.uniform(0.4, 8.0, n)
    rotated = normalize != "integral" and draw(st.booleans())
    theta = rng.uniform(-np.pi, np.pi, n) if rotated else np.zeros(n)
    if combine == "por":
        amplitude = rng.uniform(0.0, 1.0, n)
        if normalize == "pdf":  # keep the peak a / (2 pi sx sy) <= 1
            amplitude *= np.minimum(1.0, 2 * np.pi * sigma_x * sigma_y)
    else:
        amplitude = rng.uniform(-1.0, 2.0, n) if combine == "sum" else rng.uniform(0.0, 2.0, n)
    image = rng.integers(0, n_images, n)
    kernels = gh.Kernels(x, y, sigma_x, sigma_y, theta, amplitude, image)
    truncate = draw(st.sampled_from([None, 1.0, 2.5, 4.0] + ["per-kernel"] * per_kernel_truncate))
    if truncate == "per-kernel":  # one value per kernel, some wider than any image here
        truncate = np.where(rng.random(n) < 0.2, 1e3, rng.uniform(0.3, 4.5, n))
    options = dict(combine=combine, normalize=normalize, truncate=truncate, extent=extent)
    return kernels, shape, options


def kernel_dicts(kernels):
    """Kernels as the list of dicts tests/naive.py takes."""
    cols = {k: v.tolist() for k, v in kernels.as_dict().items()}
    return [{k: cols[k][i] for k in cols} for i in range(len(kernels))]


TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
# float32 cannot carry five digits near its subnormal range (below ~1e-38): an image whose
# largest value is under this floor is compared absolutely, at the tolerance times the floor.
FLOAT32_FLOOR = 1e-30


def allowed_error(expected, dtype):
    """Largest |actual - expected| DESIGN.md section 3 allows for an output of ``dtype``."""
    dtype = np.dtype(dtype)
    scale = float(np.abs(expected).max()) if np.size(expected) else 0.0
    floor = FLOAT32_FLOOR if dtype == np.float32 else np.finfo(np.float64).tiny
    return TOLERANCE[dtype] * max(scale, floor)
