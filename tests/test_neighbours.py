"""The compiled per-head passes of ``density_map``: nearest-neighbour distances and window sums,
against brute force, scipy's k-d tree and closed forms."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from gaussheat_gpu.backends.numba.neighbours import WIDE_WINDOW, mean_nearest_distances, window_sums
from gaussheat_gpu.targets import adaptive_sigma, density_map

ROOT = Path(__file__).resolve().parents[1]


def brute_force_means(points, image, k):
    """Mean distance to the k nearest other heads of the same image, from every pairwise distance
    (computed as a k-d tree computes it: the square root of the summed squares)."""
    means, counts = np.zeros(len(points)), np.zeros(len(points), dtype=np.int64)
    for i, (x, y) in enumerate(points):
        others = [math.sqrt((x - px) ** 2 + (y - py) ** 2) for j, (px, py) in enumerate(points) if j != i and image[j] == image[i]]
        nearest = sorted(others)[:k]
        counts[i] = len(nearest)
        means[i] = sum(nearest) / max(len(nearest), 1)
    return means, counts


def compiled_means(points, image, k):
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    image = np.asarray(image, dtype=np.int64)
    means, counts = np.empty(len(points)), np.empty(len(points), dtype=np.int64)
    n_images = int(image.max()) + 1 if len(image) else 1
    mean_nearest_distances(points[:, 0].copy(), points[:, 1].copy(), image, n_images, k, means, counts)
    return means, counts


coordinates = st.floats(-50, 150, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(coordinates, coordinates, st.integers(0, 3)), min_size=1, max_size=60),
       st.integers(1, 6), st.booleans())
def test_nearest_distances_equal_brute_force(rows, k, on_pixels):
    """Random heads in up to four images (whole pixels make ties and duplicates), any k."""
    points = np.array([(x, y) for x, y, _ in rows])
    if on_pixels:
        points = np.floor(points / 10)  # few distinct positions: duplicates and ties
    image = np.array([b for _, _, b in rows])
    means, counts = compiled_means(points, image, k)
    expected_means, expected_counts = brute_force_means(points, image, k)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_allclose(means, expected_means, rtol=1e-13, atol=1e-300)


def test_coordinates_whose_squares_overflow_are_searched_whole():
    """Spans past 1e154 overflow the cell size: one cell holds every head (a crash before), and
    distances whose squares overflow are infinite, as a k-d tree's are; adaptive_sigma then refuses
    the infinite sigma, naming the point."""
    for points in ([[1e155, 0.0], [0.0, 1e155], [5.0, 5.0]], [[1e300, 1.0], [-1e300, 2.0], [3.0, 4.0], [3.0, 8.0]],
                   [[1e308, 1.0], [-1e308, 2.0]]):
        points = np.array(points)
        means, counts = compiled_means(points, np.zeros(len(points), dtype=np.int64), 2)
        distances, _ = cKDTree(points).query(points, k=3)
        np.testing.assert_array_equal(counts, np.full(len(points), min(2, len(points) - 1)))
        np.testing.assert_allclose(means, distances[:, 1:].mean(axis=1), rtol=1e-13)
    with pytest.raises(ValueError, match=r"point 0 at \[1e\+300, 1.0\] is too far .* sigma is infinite"):
        density_map(np.array([[1e300, 1.0], [-1e300, 2.0]]), (8, 8), sigma="adaptive", backend="numpy")


@pytest.mark.parametrize("layout", ["uniform", "clustered", "line", "one-spot", "two-scales"])
def test_nearest_distances_equal_a_kd_tree_query(layout):
    """Layouts that stress the cell grid: a dense cluster in a sparse field, heads on a line (a
    bounding box of zero area), all heads at one position, a far outlier stretching the grid."""
    rng = np.random.default_rng(7)
    n = 3000
    points = {
        "uniform": rng.uniform(0, [1024, 768], (n, 2)),
        "clustered": np.concatenate([rng.normal(300, 3, (n - 100, 2)), rng.uniform(0, 1000, (100, 2))]),
        "line": np.column_stack([rng.uniform(0, 500, n), np.full(n, 7.0)]),
        "one-spot": np.full((n, 2), 3.5),
        "two-scales": np.concatenate([rng.uniform(0, 50, (n - 1, 2)), [[1e7, -1e7]]]),
    }[layout]
    k = 3
    means, counts = compiled_means(points, np.zeros(n, dtype=np.int64), k)
    distances, _ = cKDTree(points).query(points, k=k + 1)
    np.testing.assert_array_equal(counts, np.full(n, k))
    np.testing.assert_allclose(means, distances[:, 1:].sum(axis=1) / k, rtol=1e-13, atol=1e-300)


def test_adaptive_sigma_equals_csrnets_kd_tree_recipe_on_a_crowd():
    """2,000 whole-pixel heads (the W10 case): sigma = 0.3 x mean of the 3 nearest, as CSRNet."""
    rng = np.random.default_rng(10)
    pixels = rng.choice(1024 * 768, 2000, replace=False)
    points = np.column_stack([pixels % 1024, pixels // 1024]).astype(np.float64)
    distances, _ = cKDTree(points.copy()).query(points, k=4)
    expected = (distances[:, 1] + distances[:, 2] + distances[:, 3]) * 0.1
    np.testing.assert_allclose(adaptive_sigma(points, None, (768, 1024)), expected, rtol=1e-14)


def test_images_far_apart_in_numbering_are_searched_apart():
    """Images numbered sparsely (0 and 10**9) and identical coordinates in both: each head's
    neighbours come from its own image only."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, (50, 2))
    points = np.concatenate([a, a + 0.25])
    image = np.repeat([0, 10**9], 50)
    sigma = adaptive_sigma(points, image, (100, 100))
    np.testing.assert_allclose(sigma[:50], sigma[50:], rtol=1e-12)
    distances, _ = cKDTree(a).query(a, k=4)
    np.testing.assert_allclose(sigma[:50], 0.3 * distances[:, 1:].mean(axis=1), rtol=1e-13)


def direct_window_sums(centre, sigma, half):
    out = []
    for c, s, h in zip(centre, sigma, half):
        pixels = np.arange(math.ceil(c - h), math.floor(c + h) + 1, dtype=np.float64)
        out.append(math.fsum(np.exp(-((pixels - c) ** 2) / (2 * s * s))))
    return np.array(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e4, 1e4), st.floats(0.05, 3000), st.floats(0.0, 8.0)), min_size=1, max_size=20))
def test_window_sums_equal_the_direct_sum(heads):
    """Sub-pixel and whole-pixel centres, sigmas from 0.05 to 3,000, windows from one pixel to 8 sigma
    (up to 48,000 pixels: the recurrence's rounding must not grow with the window)."""
    centre = np.array([c for c, _, _ in heads])
    centre[::2] = np.round(centre[::2])
    sigma = np.array([s for _, s, _ in heads])
    half = np.array([t for _, _, t in heads]) * sigma
    sums = np.empty(len(heads))
    window_sums(centre, sigma, half, sums)
    np.testing.assert_allclose(sums, direct_window_sums(centre, sigma, half), rtol=2e-13)


def test_window_sums_of_very_wide_windows_use_the_integral():
    """Past WIDE_WINDOW pixels the erf form is used: within 1e-9 of the direct sum, and equal to
    sigma sqrt(2 pi) for a window of many sigmas."""
    centre, sigma = np.array([0.3, 1e6]), np.array([2e5, 1e7])
    half = np.array([3.0, 8.0]) * sigma
    assert (2 * half >= WIDE_WINDOW).all()
    sums = np.empty(2)
    window_sums(centre, sigma, half, sums)
    np.testing.assert_allclose(sums[0], direct_window_sums(centre[:1], sigma[:1], half[:1])[0], rtol=1e-9)
    assert sums[1] == pytest.approx(sigma[1] * math.sqrt(2 * math.pi) * math.erf(8 / math.sqrt(2)), rel=1e-9)


NO_JIT_SCRIPT = """
import json, numpy as np
from gaussheat_gpu.backends.numba.neighbours import mean_nearest_distances, window_sums
rng = np.random.default_rng(3)
points = np.floor(rng.uniform(0, 30, (80, 2)))
image = rng.integers(0, 2, 80)
result = {}
for k in (2, 3, 5):
    means, counts = np.empty(80), np.empty(80, dtype=np.int64)
    mean_nearest_distances(points[:, 0].copy(), points[:, 1].copy(), image, 2, k, means, counts)
    result[k] = [means.tolist(), counts.tolist()]
centre, sigma = rng.uniform(0, 30, 10), rng.uniform(0.5, 5, 10)
sums = np.empty(10)
window_sums(centre, sigma, 4 * sigma, sums)
result["sums"] = [centre.tolist(), sigma.tolist(), sums.tolist()]
result["points"], result["image"] = points.tolist(), image.tolist()
print(json.dumps(result))
"""


def test_python_bodies_without_jit_match_brute_force():
    """NUMBA_DISABLE_JIT=1 runs the functions' Python bodies: they compute what the compiled code does."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run([sys.executable, "-c", NO_JIT_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    points, image = np.array(result["points"]), np.array(result["image"])
    for k in (2, 3, 5):
        means, counts = result[str(k)]
        expected_means, expected_counts = brute_force_means(points, image, k)
        np.testing.assert_array_equal(counts, expected_counts)
        np.testing.assert_allclose(means, expected_means, rtol=1e-13)
    centre, sigma, sums = (np.array(v) for v in result["sums"])
    np.testing.assert_allclose(sums, direct_window_sums(centre, sigma, 4 * sigma), rtol=1e-13)


def test_density_map_says_why_when_numba_cannot_run(monkeypatch):
    """Where Numba cannot run (a child forked after OpenMP threads, a broken install), the compiled
    passes are refused with the registry's reason instead of being called."""
    from gaussheat_gpu import backends

    monkeypatch.setitem(backends._reasons, "numba", "forked after GNU OpenMP ran")
    monkeypatch.delitem(backends._loaded, "numba", raising=False)
    points = np.array([[3.0, 4.0], [10.0, 12.0], [20.0, 5.0]])
    with pytest.raises(backends.BackendUnavailable, match="forked after GNU OpenMP ran"):
        density_map(points, (32, 32), sigma="adaptive", backend="numpy")
    with pytest.raises(backends.BackendUnavailable, match="forked after GNU OpenMP ran"):
        density_map(points, (32, 32), sigma=2.0, border="constant", backend="numpy")
    assert density_map(points, (32, 32), sigma=2.0, border="count", backend="numpy").sum() == pytest.approx(3, rel=1e-5)
