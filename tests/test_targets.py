"""gaussheat_gpu.targets against reference loops written from mmpose's, CenterNet's and CSRNet's
published formulas (bench/target_loops.py, also the W8-W10 baselines), on every backend; each documented quirk decision
is pinned here."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a package at the repository root, not installed
    sys.path.insert(0, str(ROOT))

from bench.target_loops import (blurred_deltas, centernet_targets, csrnet_sigmas, mmpose_dark,  # noqa: E402
                                mmpose_msra, mmpose_udp, radius_loop)
from gaussheat_gpu import Kernels, render  # noqa: E402
from gaussheat_gpu._xp import to_host  # noqa: E402
from gaussheat_gpu.targets import (adaptive_sigma, center_heatmaps, density_map, gaussian_radius,  # noqa: E402
                                   keypoint_heatmaps)

INPUT, HEATMAP = (192, 256), (48, 64)  # mmpose's most common top-down configuration (W, H)


def random_pose(seed, n=5, k=17, margin=12.0, size=HEATMAP, dtype=np.float32):
    """Keypoints in heatmap pixels, sub-pixel, some off the map, some invisible."""
    rng = np.random.default_rng(seed)
    width, height = size
    kp = np.stack([rng.uniform(-margin, width + margin, (n, k)), rng.uniform(-margin, height + margin, (n, k))], -1)
    visible = (rng.random((n, k)) < 0.85).astype(np.float32)
    return kp.astype(dtype), visible


def scale_to_input(kp_heatmap, factor):
    """Input-pixel keypoints whose heatmap coordinates (``kp / factor``) are ``kp_heatmap``."""
    return (kp_heatmap * factor).astype(kp_heatmap.dtype)


# -- keypoint_heatmaps --------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [1, 2, 3])
def test_msra_matches_mmpose_for_integer_sigma(backend, sigma):
    factor = np.float32(4.0)  # 192 / 48 and 256 / 64
    for seed in range(4):
        kp_hm, visible = random_pose(seed)
        kp = scale_to_input(kp_hm, factor)
        expected, expected_weights = mmpose_msra(HEATMAP, kp / factor, visible, float(sigma))
        heat, weights = keypoint_heatmaps(kp, HEATMAP, float(sigma), visible=visible, input_size=INPUT,
                                          backend=backend)
        heat, weights = to_host(heat), to_host(weights)
        assert heat.dtype == np.float32 and weights.dtype == np.float32
        assert np.abs(heat - expected).max() <= 1e-6
        # mmpose keeps weight 1 for a window ending exactly one pixel before the map (nothing drawn):
        mu = np.trunc(kp / factor + 0.5)
        quirk = ((mu + 3 * sigma + 1 == 0).any(axis=2)) & (visible >= 0.5)
        np.testing.assert_array_equal(weights[~quirk], expected_weights[~quirk])
        assert (weights[quirk] == 0).all()  # (mmpose: 1, unless the other axis is off the map too)


def test_msra_per_instance_sigma_and_sub_pixel_rounding():
    kp = np.array([[[10.5, 3.49], [-0.6, 20.0]], [[10.4, 3.6], [47.5, 63.5]]], dtype=np.float64)
    sigma = np.array([1.0, 2.0])
    visible = np.ones((2, 2))
    heat, weights = keypoint_heatmaps(kp, HEATMAP, sigma, visible=visible, backend="numpy")
    expected, expected_weights = mmpose_msra(HEATMAP, kp, visible, sigma)
    assert np.abs(heat - expected).max() <= 1e-6
    np.testing.assert_array_equal(weights, expected_weights)
    # int(kp + 0.5): 10.5 -> 11, 3.49 -> 3; -0.6 -> int(-0.1) = 0 (towards 0, as mmpose); 47.5 -> 48 (off the map)
    assert heat[0, 3, 11] == 1.0 and heat[1, 20, 0] == 1.0 and heat[0, 4, 10] == 1.0


def test_msra_quirk_non_integer_three_sigma_is_fixed():
    # sigma 1.5: mmpose's window is 10 px wide, starting at int(mu - 4.5); at (2, 2) int(-2.5) = -2
    # moves its peak to (3, 3). Here the window is |d| <= 4.5 and the peak stays on (2, 2).
    kp = np.array([[[2.0, 2.0], [20.0, 30.0]]])
    visible = np.ones((1, 2))
    heat, _ = keypoint_heatmaps(kp, HEATMAP, 1.5, visible=visible, backend="numpy")
    expected, _ = mmpose_msra(HEATMAP, kp, visible, 1.5)
    assert np.unravel_index(expected[0].argmax(), expected[0].shape) == (3, 3)
    assert np.unravel_index(heat[0].argmax(), heat[0].shape) == (2, 2) and heat[0, 2, 2] == 1.0
    # Away from the border the peak agrees; mmpose's window has one more column/row on the left/top.
    assert heat[1, 30, 20] == 1.0 == expected[1, 30, 20]
    assert expected[1, 30, 15] > 0 and heat[1, 30, 15] == 0  # distance 5 > 4.5
    inside = heat[1] > 0
    assert np.abs(heat[1][inside] - expected[1][inside]).max() <= 1e-6
    rows, cols = np.mgrid[0:64, 0:48]
    assert np.array_equal(inside, (np.abs(cols - 20) <= 4.5) & (np.abs(rows - 30) <= 4.5))


def test_msra_quirk_window_ending_before_the_map_gets_weight_zero():
    # sigma 2: x = -7.6 rounds to mu = int(-7.1) = -7, mmpose's window -13..-1 (right = 0): weight 1,
    # nothing drawn. x = -6.4 rounds to int(-5.9) = -5 and draws columns 0 and 1.
    kp = np.array([[[-7.6, 10.0], [-6.4, 10.0], [10.0, -7.6], [54.0, 10.0], [53.4, 10.0]]])
    heat, weights = keypoint_heatmaps(kp, HEATMAP, 2.0, backend="numpy")
    _, expected_weights = mmpose_msra(HEATMAP, kp, np.ones((1, 5)), 2.0)
    assert expected_weights.tolist() == [[1, 1, 1, 0, 1]]
    assert weights.tolist() == [[0, 1, 0, 0, 1]]
    assert not heat[0].any() and not heat[2].any() and not heat[3].any()
    assert heat[1, 10, 0] == np.float32(math.exp(-25 / 8)) and heat[4, 10, 47] > 0


def test_udp_matches_mmpose_where_both_windows_hold_the_pixel(backend):
    factor = ((np.array(INPUT) - 1) / (np.array(HEATMAP) - 1)).astype(np.float32)
    sigma = 2.0
    for seed in range(12):  # one instance: each channel holds one Gaussian (no max between windows)
        kp_hm, visible = random_pose(seed + 10, n=1)
        kp = scale_to_input(kp_hm, factor)
        hm = kp / factor
        expected, expected_weights = mmpose_udp(HEATMAP, hm, visible, sigma)
        heat, weights = keypoint_heatmaps(kp, HEATMAP, sigma, visible=visible, input_size=INPUT,
                                          convention="udp", backend=backend)
        heat, weights = to_host(heat), to_host(weights)
        both = (heat > 0) & (expected > 0)
        assert both.sum() > 500
        # mmpose adds the sub-pixel offset to the window centre in float32 (ulp 1e-6 at 8): ~1e-6.
        assert np.abs(heat[both] - expected[both]).max() <= 2e-6
        # Pixels in one window only lie beyond 3 sigma along an axis: below exp(-4.5).
        assert max(heat[~both].max(), expected[~both].max()) <= math.exp(-4.5) + 1e-7
        for (i, j) in zip(*np.nonzero(visible >= 0.5)):  # weights: the 3-sigma box holds a pixel
            x, y = hm[i, j].astype(np.float64)
            box = x + 6 >= 0 and x - 6 <= 47 and y + 6 >= 0 and y - 6 <= 63
            assert weights[i, j] == float(box)
        assert (weights[visible < 0.5] == 0).all() and (expected_weights[visible < 0.5] == 0).all()


def test_dark_matches_mmpose_over_the_whole_map(backend):
    factor = np.float32(4.0)
    for sigma in (2.0, 3.0):
        kp_hm, visible = random_pose(20, margin=4.0)
        kp = scale_to_input(kp_hm, factor)
        expected, expected_weights = mmpose_dark(HEATMAP, kp / factor, visible, sigma)
        heat, weights = keypoint_heatmaps(kp, HEATMAP, sigma, visible=visible, input_size=INPUT,
                                          convention="dark", backend=backend)
        heat = to_host(heat)
        assert np.abs(heat - expected).max() <= 1e-6
        assert (heat > 0).mean() > 0.5  # untruncated: far pixels are drawn too
        np.testing.assert_array_equal(to_host(weights), expected_weights)  # margin 4 < 3 sigma: no edge case


def test_exact_is_a_peak_one_gaussian_on_the_sub_pixel_centre(backend):
    kp = np.array([[[10.3, 20.8], [0.5, 0.5]], [[10.0, 21.0], [30.25, 40.75]]])
    heat = to_host(keypoint_heatmaps(kp, HEATMAP, 2.0, convention="exact", dtype="float64", backend=backend)[0])
    rows, cols = np.mgrid[0:64, 0:48]
    for j in range(2):
        expected = np.zeros((64, 48))
        for i in range(2):
            x, y = kp[i, j]
            g = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 8)
            box = (np.abs(cols - x) <= 6) & (np.abs(rows - y) <= 6)
            expected = np.maximum(expected, np.where(box, g, 0))
        assert np.abs(heat[j] - expected).max() <= 1e-12


def test_batch_equals_one_call_per_image(fast_backend):
    kp_hm, visible = random_pose(30, n=9)
    image = np.array([0, 2, 2, 1, 0, 2, 2, 0, 3])
    heat, weights = keypoint_heatmaps(kp_hm, HEATMAP, 2.0, visible=visible, image=image, n_images=5,
                                      backend=fast_backend)
    heat, weights = to_host(heat), to_host(weights)
    assert heat.shape == (5, 17, 64, 48) and weights.shape == (9, 17)
    for b in range(5):
        mine = image == b
        alone, alone_weights = keypoint_heatmaps(kp_hm[mine], HEATMAP, 2.0, visible=visible[mine], backend="numpy")
        assert np.abs(heat[b] - alone).max() <= 1e-6
        np.testing.assert_array_equal(weights[mine], alone_weights)
    assert not heat[4].any()


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_keypoint_dtypes(dtype):
    kp_hm, visible = random_pose(40)
    heat32 = keypoint_heatmaps(kp_hm, HEATMAP, 2.0, visible=visible, backend="numpy")[0]
    heat = keypoint_heatmaps(kp_hm, HEATMAP, 2.0, visible=visible, dtype=dtype, backend="numpy")[0]
    assert heat.dtype == np.dtype(dtype)
    np.testing.assert_allclose(heat.astype(np.float32), heat32, atol=1e-3 if dtype == "float16" else 1e-7)
    assert heat.max() == 1.0


def test_invisible_keypoints_may_be_nan_but_visible_ones_may_not():
    kp = np.array([[[np.nan, np.nan], [5.0, 5.0]]])
    heat, weights = keypoint_heatmaps(kp, HEATMAP, 2.0, visible=[[0, 1]], backend="numpy")
    assert weights.tolist() == [[0.0, 1.0]] and not heat[0].any() and heat[1, 5, 5] == 1.0
    with pytest.raises(ValueError, match=r"keypoints\[0, 0\] = \[nan, nan\] is not finite but visible"):
        keypoint_heatmaps(kp, HEATMAP, 2.0, backend="numpy")


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(keypoints=np.zeros((2, 3))), ValueError, r"keypoints must have shape \(N, K, 2\)"),
    (dict(convention="megvii"), ValueError, r"convention = 'megvii' is not one of"),
    (dict(sigma=[1.0, 2.0, 3.0]), ValueError, r"sigma has shape \(3,\)"),
    (dict(sigma=[1.0, -2.0]), ValueError, r"sigma\[1\] = -2.0 must be finite and > 0 \(instance 1"),
    (dict(visible=np.ones((2, 4))), ValueError, r"visible has shape \(2, 4\)"),
    (dict(image=[0, 3], n_images=2), ValueError, r"image\[1\] = 3 must lie in \[0, 1\]"),
    (dict(image=1.5), ValueError, r"image\[0\] = 1.5 is not an integer"),
    (dict(n_images=2), ValueError, r"n_images needs image="),
    (dict(heatmap_size=(48, 0)), ValueError, r"heatmap_size = \(48, 0\) must be"),
    (dict(dtype="int8"), ValueError, r"dtype = 'int8' is not supported"),
])
def test_keypoint_errors(kwargs, exc, pattern):
    args = dict(keypoints=np.ones((2, 3, 2)), heatmap_size=HEATMAP, sigma=2.0, backend="numpy")
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        keypoint_heatmaps(**args)


# -- gaussian_radius and center_heatmaps --------------------------------------------------------

def test_gaussian_radius_matches_the_published_formulas():
    rng = np.random.default_rng(0)
    h, w = rng.uniform(0, 200, 300), rng.uniform(0, 200, 300)
    for formula in ("cornernet", "centernet"):
        for overlap in (0.1, 0.3, 0.5, 0.7):
            expected = [radius_loop(a, b, overlap, formula) for a, b in zip(h, w)]
            np.testing.assert_allclose(gaussian_radius(h, w, overlap, formula), expected, rtol=1e-12, atol=1e-12)
    # Values computed from the published formulas: (h, w) -> int(radius).
    table = {(10, 10): (2, 0, 2), (32, 32): (8, 2, 7), (64, 64): (17, 5, 14), (20, 40): (7, 2, 5)}
    for (height, width), (original_07, fixed_07, fixed_03) in table.items():
        assert int(gaussian_radius(height, width, 0.7, "centernet")) == original_07
        assert int(gaussian_radius(height, width, 0.7, "cornernet")) == fixed_07
        assert int(gaussian_radius(height, width, 0.3)) == fixed_03


def test_cornernet_radius_is_where_the_binding_iou_case_reaches_min_overlap():
    rng = np.random.default_rng(1)
    for h, w in rng.uniform(2, 100, (50, 2)):
        for o in (0.3, 0.7):
            r = float(gaussian_radius(h, w, o))
            ious = [(w - r) * (h - r) / (w * h + (w + h) * r - r * r),  # one corner in, one out
                    (w - 2 * r) * (h - 2 * r) / (w * h),  # both inside
                    w * h / ((w + 2 * r) * (h + 2 * r))]  # both outside
            assert min(ious) == pytest.approx(o, rel=1e-9)
    # The original formula is the case-3 root scaled by 2 * a3 = 4 * overlap (its other roots are larger).
    h, w, o = 30.0, 50.0, 0.7
    b3, c3 = -2 * o * (h + w), (o - 1) * w * h
    case3 = (b3 + math.sqrt(b3 * b3 - 16 * o * c3)) / (8 * o)
    assert float(gaussian_radius(h, w, o, "centernet")) == pytest.approx(4 * o * case3, rel=1e-12)


def test_gaussian_radius_vectorises_and_refuses_bad_input():
    assert gaussian_radius(np.ones((2, 3)), 5.0).shape == (2, 3)
    with pytest.raises(ValueError, match="formula = 'mmdet'"):
        gaussian_radius(1, 1, formula="mmdet")
    with pytest.raises(ValueError, match=r"min_overlap = 1.0 must lie in \(0, 1\)"):
        gaussian_radius(1, 1, 1.0)
    with pytest.raises(ValueError, match=r"width\[1\] = -1.0 must be finite and >= 0"):
        gaussian_radius([1, 1], [1, -1])


def random_boxes(seed, m, size=(128, 128), classes=80):
    rng = np.random.default_rng(seed)
    width, height = size
    x1, y1 = rng.uniform(0, width - 2, m), rng.uniform(0, height - 2, m)
    x2 = np.minimum(x1 + rng.uniform(1, 60, m), width - 1)
    y2 = np.minimum(y1 + rng.uniform(1, 60, m), height - 1)
    return np.column_stack([x1, y1, x2, y2]), rng.integers(0, classes, m)


@pytest.mark.parametrize("formula, overlap", [("cornernet", 0.3), ("centernet", 0.7)])
def test_center_heatmaps_match_draw_umich_gaussian(backend, formula, overlap):
    boxes, labels = random_boxes(2, 60, classes=6)
    expected = centernet_targets(boxes, labels, 6, (128, 128), overlap, formula)
    heat = to_host(center_heatmaps(boxes, labels, 6, (128, 128), min_overlap=overlap, radius=formula, backend=backend))
    assert heat.dtype == np.float32
    assert np.abs(heat - expected).max() <= 1e-6
    np.testing.assert_array_equal(heat > 0, expected > 0)  # the same windows


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_centre_is_exactly_one_in_every_dtype(backend, dtype):
    boxes, labels = random_boxes(3, 200, classes=4)
    image = np.random.default_rng(3).integers(0, 3, 200)
    heat = to_host(center_heatmaps(boxes, labels, 4, (128, 128), image=image, dtype=dtype, backend=backend))
    assert heat.shape == (3, 4, 128, 128) and heat.dtype == np.dtype(dtype)
    centres = {(b, c, int(math.floor((y1 + y2) / 2)), int(math.floor((x1 + x2) / 2)))
               for (x1, y1, x2, y2), c, b in zip(boxes, labels, image)}
    assert set(zip(*np.nonzero(heat == 1))) == centres


def test_center_heatmaps_scale_batch_and_min_radius(fast_backend):
    boxes, labels = random_boxes(4, 40, size=(512, 512), classes=3)
    image = np.repeat([0, 1], 20)
    heat = to_host(center_heatmaps(boxes, labels, 3, (128, 128), image=image, input_size=(512, 512),
                                   min_radius=2, backend=fast_backend))
    for b in range(2):
        mine = image == b
        expected = centernet_targets(boxes[mine] / 4, labels[mine], 3, (128, 128), 0.3, "cornernet", min_radius=2)
        assert np.abs(heat[b] - expected).max() <= 1e-6


def test_center_heatmaps_explicit_radius_and_a_centre_off_the_map():
    heat = center_heatmaps(np.array([[10.0, 10.0, 14.0, 14.0], [-9.0, 4.0, 1.0, 6.0]]), [0, 0], 1, (32, 16),
                           radius=[1, 3], backend="numpy")[0]
    assert heat[12, 12] == 1.0 and heat[11, 11] == np.float32(math.exp(-2 / (2 * 0.5 ** 2)))
    assert (heat[10:15, 10:15] > 0).sum() == 9  # radius 1: a 3 x 3 window
    # The second centre, (-4, 5) with radius 3, reaches column -1 at most: nothing drawn.
    assert (heat > 0).sum() == 9
    heat = center_heatmaps(np.array([[-6.0, 4.0, 2.0, 6.0]]), [0], 1, (32, 16), radius=[3], backend="numpy")[0]
    # Centre floor(-2) = -2: columns -5..1, of which 0 and 1 are in the map.
    assert np.array_equal(np.nonzero(heat.any(axis=0))[0], [0, 1])


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(boxes=np.ones((2, 3))), r"boxes must have shape \(M, 4\)"),
    (dict(boxes=np.array([[0, 0, 5, 5], [4, 0, 3, 2.0]])), r"boxes\[1\] = \[4.0, 0.0, 3.0, 2.0\] has x2 < x1"),
    (dict(labels=[0, 5]), r"labels\[1\] = 5 is not a class in \[0, 2\]"),
    (dict(labels=[0.0, 1.0]), r"labels must be 2 integers"),
    (dict(radius=[1, 1.5]), r"radius\[1\] = 1.5 must be an integer >= 0"),
    (dict(num_classes=0), r"num_classes = 0 must be a positive integer"),
])
def test_center_errors(kwargs, pattern):
    args = dict(boxes=np.array([[0, 0, 5, 5], [1, 1, 3, 4.0]]), labels=[0, 1], num_classes=3,
                heatmap_size=(16, 16), backend="numpy")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        center_heatmaps(**args)


# -- density_map --------------------------------------------------------------------------------

def crowd(seed, n, shape=(60, 80)):
    rng = np.random.default_rng(seed)
    height, width = shape
    return np.column_stack([rng.integers(0, width, n), rng.integers(0, height, n)]).astype(np.float64)


@pytest.mark.parametrize("border, mode", [("constant", "constant"), ("reflect", "reflect")])
def test_density_equals_scipy_gaussian_filter_of_the_deltas(backend, border, mode):
    points = crowd(0, 40)
    sigma = np.random.default_rng(1).uniform(0.4, 25, 40)  # windows wider than the map: several reflections
    for truncate in (4.0, 2.0):
        expected = blurred_deltas(points, sigma, (60, 80), mode, truncate)
        for dtype, tolerance in (("float64", 1e-12), ("float32", 1e-6)):
            actual = to_host(density_map(points, (60, 80), sigma=sigma, border=border, truncate=truncate, dtype=dtype,
                                         backend=backend))
            assert np.abs(actual - expected).max() <= tolerance * expected.max()
    if border == "reflect":
        assert expected.sum() == pytest.approx(40, rel=1e-12)


def test_adaptive_sigma_is_csrnets_and_fixes_its_small_image_crash(backend):
    points = crowd(2, 50)
    expected_sigma = csrnet_sigmas(points, (60, 80))
    np.testing.assert_allclose(adaptive_sigma(points, None, (60, 80)), expected_sigma, rtol=1e-12)
    expected = blurred_deltas(points, expected_sigma, (60, 80), "constant")
    actual = to_host(density_map(points, (60, 80), sigma="adaptive", border="constant", dtype="float64",
                                 backend=backend))
    assert np.abs(actual - expected).max() <= 1e-12 * expected.max()
    # One head: CSRNet's mean(H, W) / 4. Two or three heads: CSRNet's k=4 query gives inf; here the
    # mean distance to the heads there are.
    assert adaptive_sigma(points[:1], None, (60, 80)).tolist() == [17.5]
    two = np.array([[0.0, 0.0], [6.0, 8.0]])
    assert adaptive_sigma(two, None, (60, 80)).tolist() == [3.0, 3.0]
    assert adaptive_sigma(two, None, (60, 80), lone_sigma=2.0).tolist() == [3.0, 3.0]
    assert adaptive_sigma(two[:1], None, (60, 80), lone_sigma=2.0).tolist() == [2.0]


def test_adaptive_sigma_looks_for_neighbours_in_the_same_image_only():
    points = crowd(3, 30)
    image = np.random.default_rng(3).integers(0, 4, 30)
    image[0] = 4  # alone in image 4
    sigma = adaptive_sigma(points, image, (60, 80))
    for b in range(5):
        mine = image == b
        mine_points = points[mine]
        if mine.sum() >= 4:
            expected = csrnet_sigmas(mine_points, (60, 80))
        elif mine.sum() == 1:
            expected = [17.5]
        else:
            dist = np.hypot(*(mine_points[:, None] - mine_points[None]).transpose(2, 0, 1))
            expected = 0.3 * dist.sum(axis=1) / (mine.sum() - 1)
        np.testing.assert_allclose(sigma[mine], expected, rtol=1e-12)


def test_count_border_keeps_every_head(backend):
    rng = np.random.default_rng(4)
    points = np.column_stack([rng.uniform(-2, 81, 300), rng.uniform(-2, 61, 300)])  # sub-pixel, some at edges
    image = rng.integers(0, 3, 300)
    density = to_host(density_map(points, (60, 80), sigma="adaptive", image=image, backend=backend))
    assert density.shape == (3, 60, 80) and density.dtype == np.float32
    for b in range(3):
        assert density[b].sum() == pytest.approx((image == b).sum(), rel=1e-5)
    reflected = to_host(density_map(points, (60, 80), sigma=6.0, image=image, border="reflect", backend=backend))
    assert reflected.sum() == pytest.approx(300, rel=1e-5)  # reflect keeps sub-pixel heads too


def test_count_border_is_the_constant_map_renormalised_per_head():
    points = np.array([[1.0, 1.0], [40.0, 30.0]])
    constant = density_map(points, (60, 80), sigma=3.0, border="constant", dtype="float64", backend="numpy")
    count = density_map(points, (60, 80), sigma=3.0, border="count", dtype="float64", backend="numpy")
    interior = np.zeros((60, 80), bool)
    interior[15:, 20:] = True
    np.testing.assert_allclose(count[interior], constant[interior], rtol=1e-12)  # the head inside: same values
    corner = constant[:15, :20]
    np.testing.assert_allclose(count[:15, :20], corner / corner.sum(), rtol=1e-12)
    assert count.sum() == pytest.approx(2.0, rel=1e-12) and constant.sum() < 1.5


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(points=np.ones((3, 3))), r"points must have shape \(N, 2\)"),
    (dict(points=np.array([[1.0, np.inf]])), r"points\[0\] = \[1.0, inf\] is not finite"),
    (dict(border="wrap"), r"border = 'wrap' is not one of"),
    (dict(sigma="scott"), r"sigma = 'scott'"),
    (dict(sigma=[1.0, 0.0]), r"sigma\[1\] = 0.0 must be finite and > 0 \(point 1"),
    (dict(sigma="adaptive", k=0), r"k = 0 must be an integer >= 1"),
    (dict(points=np.array([[3.0, 3.0]] * 5), sigma="adaptive"), r"point 0 at \[3.0, 3.0\] has its 3 nearest heads"),
    (dict(truncate=0.0), r"truncate = 0.0 must be"),
])
def test_density_errors(kwargs, pattern):
    args = dict(points=np.array([[1.0, 2.0], [5.0, 6.0]]), shape=(10, 10), backend="numpy")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        density_map(**args)


def test_empty_inputs_give_zero_maps():
    assert density_map(np.zeros((0, 2)), (4, 5), sigma="adaptive").shape == (4, 5)
    heat, weights = keypoint_heatmaps(np.zeros((0, 3, 2)), (5, 4), 2.0)
    assert heat.shape == (3, 4, 5) and weights.shape == (0, 3) and not heat.any()
    assert center_heatmaps(np.zeros((0, 4)), np.zeros(0, int), 2, (5, 4), image=np.zeros(0, int),
                           n_images=2).shape == (2, 2, 4, 5)


# -- arguments every helper takes: dtype, sizes, bad rows ------------------------------------------

HELPER_NAMES = ("keypoint_heatmaps", "center_heatmaps", "density_map")


def call_helper(helper, size=(12, 10), **options):
    """``helper`` on one small annotation; its sizes are ``size`` (W, H) unless ``options`` names them."""
    if helper == "density_map":
        shape = options.pop("shape", tuple(size)[::-1])
        return density_map(np.array([[4.0, 3.0]]), shape, sigma=1.0, backend="numpy", **options)
    heatmap_size = options.pop("heatmap_size", size)
    options.setdefault("input_size", size)
    if helper == "keypoint_heatmaps":
        return keypoint_heatmaps(np.array([[[4.0, 3.0]]]), heatmap_size, 1.0, backend="numpy", **options)[0]
    return center_heatmaps(np.array([[2.0, 2.0, 7.0, 6.0]]), [0], 1, heatmap_size, backend="numpy", **options)


def outcome(call):
    """A call's result dtype, or its error's type and message up to the list of dtypes it takes."""
    try:
        return call().dtype.name
    except (TypeError, ValueError) as error:
        return f"{type(error).__name__}: {str(error).split('; use ')[0]}"


@pytest.mark.parametrize("helper", HELPER_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "f4", np.float32, np.dtype("float32"), None, "float64", "f8", "d",
                                   float, np.float64, np.dtype("float64"), "=f8", "float16", "f2", np.float16,
                                   np.dtype("float16"), ">f4", "int8", np.int32, "complex64", "bogus", 3.5])
def test_helpers_take_the_dtype_spellings_render_takes(helper, dtype):
    kernels = Kernels(x=[1.0], y=[1.0], sigma_x=[1.0])
    by_render = outcome(lambda: render(kernels, (4, 5), dtype=dtype, backend="numpy"))
    by_helper = outcome(lambda: call_helper(helper, dtype=dtype))
    if by_render == "ValueError: dtype = 'float16' is not supported":  # the helpers' one addition
        assert by_helper == "float16"
    else:
        assert by_helper == by_render


@pytest.mark.parametrize("helper", HELPER_NAMES)
def test_helpers_name_the_dtypes_they_take(helper):
    with pytest.raises(ValueError, match=r"^dtype = 'int8' is not supported; use 'float16', 'float32' or 'float64'$"):
        call_helper(helper, dtype=np.int8)
    with pytest.raises(ValueError, match=r"^dtype = 'float64' in big-endian byte order \('>f8'\) is not supported"):
        call_helper(helper, dtype=">f8")
    with pytest.raises(TypeError, match=r"^dtype = 'bogus' is not a dtype; use 'float16', 'float32' or 'float64'$"):
        call_helper(helper, dtype="bogus")


@pytest.mark.parametrize("helper", HELPER_NAMES)
@pytest.mark.parametrize("size", [(np.int64(12), np.uint16(10)), np.array([12, 10]), (12.0, np.float32(10))])
def test_sizes_of_numpy_integers_or_whole_floats_are_taken(helper, size):
    expected = call_helper(helper)
    actual = call_helper(helper, size)
    assert actual.shape == expected.shape and actual.shape[-2:] == (10, 12) and np.array_equal(actual, expected)


@pytest.mark.parametrize("helper, argument", [("keypoint_heatmaps", "heatmap_size"), ("keypoint_heatmaps", "input_size"),
                                              ("center_heatmaps", "heatmap_size"), ("center_heatmaps", "input_size"),
                                              ("density_map", "shape")])
@pytest.mark.parametrize("value, error, message", [
    ((12.5, 10), ValueError, r" = \(12.5, 10\) must be \({order}\), two positive integers \(12.5 is not\)$"),
    ((12, 0), ValueError, r" = \(12, 0\) must be \({order}\), two positive integers \(0 is not\)$"),
    ((12, float("nan")), ValueError, r" = \(12, nan\) must be \({order}\), two positive integers \(nan is not\)$"),
    ((True, 10), TypeError, r" must be \({order}\), two positive integers, got \(True, 10\)$"),
    ((12, 10, 1), TypeError, r" must be \({order}\), two positive integers, got \(12, 10, 1\)$"),
    (12, TypeError, r" must be \({order}\), two positive integers, got 12$"),
])
def test_sizes_that_are_not_two_positive_integers_are_refused(helper, argument, value, error, message):
    order = "H, W" if argument == "shape" else "W, H"
    with pytest.raises(error, match="^" + argument + message.format(order=order)):
        call_helper(helper, **{argument: value})


def test_bad_values_and_rows_are_named_with_their_count():
    points = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, np.inf]])
    with pytest.raises(ValueError, match=r"^points\[1\] = \[nan, 0.0\] is not finite \(point 1; 2 bad in all\)$"):
        density_map(points, (10, 10), backend="numpy")
    boxes = np.array([[0.0, 0.0, 5.0, 5.0], [4.0, 0.0, 3.0, 2.0]])
    with pytest.raises(ValueError, match=r"^boxes\[1\] = \[4.0, 0.0, 3.0, 2.0\] has x2 < x1 or y2 < y1 \(box 1; 1 bad"):
        center_heatmaps(boxes, [0, 0], 1, (16, 16), backend="numpy")
    with pytest.raises(ValueError, match=r"^labels\[1\] = 5 is not a class in \[0, 2\] \(box 1; 2 bad in all\)$"):
        center_heatmaps(boxes[[0, 0, 0]], [0, 5, 7], 3, (16, 16), backend="numpy")


# -- array kinds: DLPack and torch ----------------------------------------------------------------

class DLPackOnly:
    """Exposes nothing but NumPy's own ``__dlpack__`` / ``__dlpack_device__``."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_any_dlpack_array_is_accepted():
    kp, visible = random_pose(50)
    heat, weights = keypoint_heatmaps(DLPackOnly(kp), HEATMAP, 2.0, visible=DLPackOnly(visible), backend="numpy")
    expected, expected_weights = keypoint_heatmaps(kp, HEATMAP, 2.0, visible=visible, backend="numpy")
    assert isinstance(heat, np.ndarray) and np.array_equal(heat, expected) and np.array_equal(weights, expected_weights)
    boxes, labels = random_boxes(5, 10, classes=2)
    np.testing.assert_array_equal(center_heatmaps(DLPackOnly(boxes), DLPackOnly(labels), 2, (128, 128)),
                                  center_heatmaps(boxes, labels, 2, (128, 128)))
    points = crowd(5, 20)
    np.testing.assert_array_equal(density_map(DLPackOnly(points), (60, 80)), density_map(points, (60, 80)))


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch", reason="torch is not installed (it is not a dependency)")
    kp, visible = random_pose(60)
    heat, weights = keypoint_heatmaps(torch.from_numpy(kp), HEATMAP, 2.0, visible=torch.from_numpy(visible),
                                      image=torch.tensor([0, 1, 1, 0, 2]), dtype="float16")
    expected, expected_weights = keypoint_heatmaps(kp, HEATMAP, 2.0, visible=visible, image=[0, 1, 1, 0, 2],
                                                   dtype="float16")
    assert isinstance(heat, torch.Tensor) and isinstance(weights, torch.Tensor)
    assert heat.dtype == torch.float16 and heat.device.type == "cpu"
    np.testing.assert_array_equal(heat.numpy(), expected)
    np.testing.assert_array_equal(weights.numpy(), expected_weights)
    boxes, labels = random_boxes(6, 30, classes=3)
    centres = center_heatmaps(torch.from_numpy(boxes), torch.from_numpy(labels), 3, (128, 128))
    assert isinstance(centres, torch.Tensor) and int((centres == 1).sum()) == len(
        {(c, int((y1 + y2) // 2), int((x1 + x2) // 2)) for (x1, y1, x2, y2), c in zip(boxes, labels)})
    density = density_map(torch.from_numpy(crowd(6, 30)), (60, 80), sigma="adaptive")
    assert isinstance(density, torch.Tensor) and float(density.sum()) == pytest.approx(30, rel=1e-5)


@pytest.mark.gpu
def test_cupy_in_cupy_out():
    import cupy

    kp, visible = random_pose(70)
    heat, weights = keypoint_heatmaps(cupy.asarray(kp), HEATMAP, 2.0, visible=cupy.asarray(visible))
    expected, expected_weights = keypoint_heatmaps(kp, HEATMAP, 2.0, visible=visible, backend="numpy")
    assert isinstance(heat, cupy.ndarray) and isinstance(weights, cupy.ndarray)
    assert np.abs(heat.get() - expected).max() <= 1e-6
    np.testing.assert_array_equal(weights.get(), expected_weights)
    density = density_map(cupy.asarray(crowd(7, 30)), (60, 80), sigma="adaptive", border="reflect")
    assert isinstance(density, cupy.ndarray) and float(density.sum()) == pytest.approx(30, rel=1e-5)
    boxes, labels = random_boxes(7, 40, classes=3)
    centres = center_heatmaps(cupy.asarray(boxes), cupy.asarray(labels), 3, (128, 128), dtype="float16")
    assert isinstance(centres, cupy.ndarray) and centres.dtype == np.float16
    np.testing.assert_array_equal((centres == 1).get(), center_heatmaps(boxes, labels, 3, (128, 128)) == 1)


@pytest.mark.gpu
def test_torch_on_the_gpu_in_torch_on_the_gpu_out():
    torch = pytest.importorskip("torch", reason="torch is not installed (it is not a dependency)")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    kp, visible = random_pose(80)
    heat, weights = keypoint_heatmaps(torch.from_numpy(kp).cuda(), HEATMAP, 2.0, visible=torch.from_numpy(visible).cuda())
    assert heat.device.type == "cuda" and weights.device.type == "cuda"
    expected, expected_weights = keypoint_heatmaps(kp, HEATMAP, 2.0, visible=visible, backend="numpy")
    assert np.abs(heat.cpu().numpy() - expected).max() <= 1e-6
    np.testing.assert_array_equal(weights.cpu().numpy(), expected_weights)


def test_docstring_examples_run():
    import doctest

    import gaussheat_gpu.targets

    result = doctest.testmod(gaussheat_gpu.targets)
    assert result.attempted > 20 and result.failed == 0
