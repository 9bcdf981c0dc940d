"""The Numba backend's dense product (``gaussheat_gpu.backends.numba.dense``) against float64 matmul.

Odd shapes cross the panel and row-block edges; kernel counts around multiples of 16 cross the
zero padding of the 16-kernel groups. The output is pre-filled with NaN so that a pixel left
unwritten fails the test. The render-level tests of the dense path are in tests/test_numba.py.
"""

import numpy as np
import pytest

pytest.importorskip("numba")
from gaussheat_gpu.backends.numba import dense  # noqa: E402
from gaussheat_gpu.backends.numba.dense import DENSE_PANEL, dense_product  # noqa: E402

TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_kernels", [1, 15, 16, 17, 33, 64])
@pytest.mark.parametrize("shape", [(1, 1), (7, DENSE_PANEL + 1), (45, 1000), (100, 3 * DENSE_PANEL + 1)])
def test_dense_product_is_the_matrix_product(dtype, n_kernels, shape):
    rng = np.random.default_rng(n_kernels * 1000 + shape[1])
    height, width = shape
    rows = rng.random((n_kernels, height)).astype(dtype)
    cols = rng.random((n_kernels, width)).astype(dtype)
    rows[rng.random(rows.shape) < 0.1] = 0  # trimmed factors are zeros
    out = np.full(shape, np.nan, dtype=dtype)
    dense_product(rows, cols, out)
    expected = rows.astype(np.float64).T @ cols.astype(np.float64)
    assert np.isfinite(out).all()
    assert np.abs(out - expected).max() <= TOLERANCE[np.dtype(dtype)] * np.abs(expected).max()


def test_each_kernel_lands_on_its_own_rows_and_columns():
    # One nonzero factor per kernel: a wrong panel stride or row transpose moves the spikes.
    n_kernels, height, width = 20, 40, 2 * DENSE_PANEL + 3
    rows = np.zeros((n_kernels, height))
    cols = np.zeros((n_kernels, width))
    for k in range(n_kernels):
        rows[k, 2 * k] = k + 1.0
        cols[k, 50 * k + 7] = 1.0
    out = np.full((height, width), np.nan)
    dense_product(rows, cols, out)
    expected = np.zeros((height, width))
    for k in range(n_kernels):
        expected[2 * k, 50 * k + 7] = k + 1.0
    np.testing.assert_array_equal(out, expected)


def test_no_kernels_writes_zeros():
    out = np.full((3, 5), np.nan, dtype=np.float32)
    dense_product(np.zeros((0, 3), np.float32), np.zeros((0, 5), np.float32), out)
    assert not out.any() and np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_kernels, height, width", [(1, 1024, 1024), (17, 700, 3 * DENSE_PANEL + 1), (64, 1100, 999)])
def test_scratch_bytes_is_what_the_dense_path_holds_at_its_peak(dtype, n_kernels, height, width):
    # The factors and the zero-padded copies of them (packed_factors), alive together; the backend's
    # memory check (call_bytes) counts these.
    import gaussheat_gpu as gh
    from gaussheat_gpu.backends import numba as numba_backend
    from gaussheat_gpu.planning import COMBINE_CODES, make_grid, make_plan

    rows, cols = np.ones((n_kernels, height), dtype), np.ones((n_kernels, width), dtype)
    row_packed, packed = dense.packed_factors(rows, cols, dense._panel_width(np.dtype(dtype).itemsize))
    held = rows.nbytes + cols.nbytes + row_packed.nbytes + packed.nbytes
    assert dense.scratch_bytes(n_kernels, height, width, np.dtype(dtype).itemsize) == held
    rng = np.random.default_rng(n_kernels)
    kernels = gh.Kernels(x=rng.uniform(0.4, 0.6, n_kernels) * width, y=rng.uniform(0.4, 0.6, n_kernels) * height,
                         sigma_x=width / 2.0, sigma_y=height / 2.0)
    plan = make_plan(kernels, make_grid((height, width)), truncate=None, dtype=dtype)
    if height * width >= dense.DENSE_MIN_PIXELS:
        assert dense.dense_pays(plan, COMBINE_CODES["sum"])
        assert numba_backend.call_bytes(plan, exact=True) == held <= numba_backend.call_bytes(plan)
