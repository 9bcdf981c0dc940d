"""Target generators as users run them today, written from the published formulas as per-item loops.

mmpose (``mmpose/codecs/utils/gaussian_heatmap.py``: MSRA, UDP, DARK), CenterNet (``draw_umich_gaussian``
and ``gaussian_radius``, original and CornerNet-corrected roots) and CSRNet (k-nearest-neighbour
sigma, a delta image blurred with ``scipy.ndimage.gaussian_filter`` per head). They share no code
with the library: tests/test_targets.py checks :mod:`gaussheat_gpu.targets` against them, and the
W8-W10 benchmarks time them as baselines (bench/baselines.py).
"""

import math

import numpy as np
import scipy.ndimage
import scipy.spatial


def mmpose_msra(heatmap_size, keypoints, visible, sigma):
    """MSRA heatmaps: integer centre int(kp + 0.5), window of 2*3sigma+1 pixels starting at
    int(mu - 3sigma), value 1 at the window centre, max over instances; mmpose's weight rule."""
    width, height = heatmap_size
    n, k = keypoints.shape[:2]
    heatmaps = np.zeros((k, height, width), np.float32)
    weights = visible.astype(np.float32).copy()
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,))
    for i in range(n):
        s = float(sigmas[i])
        radius = 3 * s
        size = 2 * radius + 1
        x = np.arange(0, size, 1, dtype=np.float32)
        y = x[:, None]
        x0 = y0 = size // 2
        gaussian = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s ** 2))
        for j in range(k):
            window = _window(keypoints[i, j], visible[i, j], radius, width, height, weights, (i, j))
            if window is not None:
                _max_into(heatmaps[j], gaussian, *window[1:])
    return heatmaps, weights


def mmpose_udp(heatmap_size, keypoints, visible, sigma):
    """UDP heatmaps: MSRA's window on the rounded centre, the Gaussian on the sub-pixel point."""
    width, height = heatmap_size
    n, k = keypoints.shape[:2]
    heatmaps = np.zeros((k, height, width), np.float32)
    weights = visible.astype(np.float32).copy()
    radius = 3 * sigma
    size = 2 * radius + 1
    x = np.arange(0, size, 1, dtype=np.float32)
    y = x[:, None]
    for i in range(n):
        for j in range(k):
            window = _window(keypoints[i, j], visible[i, j], radius, width, height, weights, (i, j))
            if window is None:
                continue
            mu = window[0]
            x0 = size // 2 + keypoints[i, j, 0] - mu[0]
            y0 = size // 2 + keypoints[i, j, 1] - mu[1]
            gaussian = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
            _max_into(heatmaps[j], gaussian, *window[1:])
    return heatmaps, weights


def _window(keypoint, visible, radius, width, height, weights, index):
    """mmpose's rounded centre and window ``(mu, left, top, right, bottom)``, or None (not drawn;
    the weight is zeroed when the window misses the map by mmpose's test)."""
    if visible < 0.5:
        return None
    mu = (keypoint + 0.5).astype(np.int64)
    left, top = (mu - radius).astype(np.int64)
    right, bottom = (mu + radius + 1).astype(np.int64)
    if left >= width or top >= height or right < 0 or bottom < 0:
        weights[index] = 0
        return None
    return mu, left, top, right, bottom


def _max_into(heatmap, gaussian, left, top, right, bottom):
    height, width = heatmap.shape
    g_x1, g_x2 = max(0, -left), min(width, right) - left
    g_y1, g_y2 = max(0, -top), min(height, bottom) - top
    h_x1, h_x2 = max(0, left), min(width, right)
    h_y1, h_y2 = max(0, top), min(height, bottom)
    region = heatmap[h_y1:h_y2, h_x1:h_x2]
    np.maximum(region, gaussian[g_y1:g_y2, g_x1:g_x2], out=region)


def mmpose_dark(heatmap_size, keypoints, visible, sigma):
    """DARK (unbiased) heatmaps: the sub-pixel Gaussian over the whole map, max over instances."""
    width, height = heatmap_size
    n, k = keypoints.shape[:2]
    heatmaps = np.zeros((k, height, width), np.float32)
    weights = visible.astype(np.float32).copy()
    x = np.arange(0, width, 1, dtype=np.float32)
    y = np.arange(0, height, 1, dtype=np.float32)[:, None]
    radius = 3 * sigma
    for i in range(n):
        for j in range(k):
            if visible[i, j] < 0.5:
                continue
            mu = keypoints[i, j]
            left, top = mu - radius
            right, bottom = mu + radius + 1
            if left >= width or top >= height or right < 0 or bottom < 0:
                weights[i, j] = 0
                continue
            gaussian = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / (2 * sigma ** 2))
            np.maximum(gaussian, heatmaps[j], out=heatmaps[j])
    return heatmaps, weights


def radius_loop(height, width, min_overlap, formula):
    """CornerNet's three cases, one box at a time with math.sqrt ("cornernet": the corrected
    roots; "centernet": the original (b + sqrt(disc)) / 2 for every case)."""
    h, w, o = float(height), float(width), float(min_overlap)
    cases = [(1.0, h + w, w * h * (1 - o) / (1 + o)),
             (4.0, 2 * (h + w), (1 - o) * w * h),
             (4 * o, -2 * o * (h + w), (o - 1) * w * h)]
    roots = []
    for index, (a, b, c) in enumerate(cases):
        sq = math.sqrt(b * b - 4 * a * c)
        if formula == "centernet":
            roots.append((b + sq) / 2)
        elif index < 2:
            roots.append((b - sq) / (2 * a))
        else:
            roots.append((b + sq) / (2 * a))
    return min(roots)


def draw_umich_gaussian(heatmap, center, radius):
    """CenterNet's draw: a (2r+1)^2 float64 Gaussian, sigma (2r+1)/6, eps cut, np.maximum into
    the heatmap's slice around int(center)."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    m = (diameter - 1) / 2
    y, x = np.ogrid[-m:m + 1, -m:m + 1]
    gaussian = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    gaussian[gaussian < np.finfo(gaussian.dtype).eps * gaussian.max()] = 0
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    masked_heatmap = heatmap[y - top:y + bottom, x - left:x + right]
    masked_gaussian = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    if min(masked_gaussian.shape) > 0 and min(masked_heatmap.shape) > 0:
        np.maximum(masked_heatmap, masked_gaussian, out=masked_heatmap)


def centernet_targets(boxes, labels, num_classes, heatmap_size, min_overlap, formula, min_radius=0):
    """One image's class heatmaps, box by box (boxes in heatmap pixels)."""
    width, height = heatmap_size
    heatmaps = np.zeros((num_classes, height, width), np.float32)
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        radius = max(min_radius, int(radius_loop(y2 - y1, x2 - x1, min_overlap, formula)))
        draw_umich_gaussian(heatmaps[label], ((x1 + x2) / 2, (y1 + y2) / 2), radius)
    return heatmaps


def csrnet_sigmas(points, shape, k=3, beta=0.3):
    """CSRNet's adaptive sigma for one image: KDTree query of k + 1 (the point itself first)."""
    if len(points) == 1:
        return np.array([np.mean(shape) / 4])
    tree = scipy.spatial.KDTree(points.copy(), leafsize=2048)
    distances, _ = tree.query(points, k=k + 1)
    return beta * distances[:, 1:].mean(axis=1)


def blurred_deltas(points, sigmas, shape, mode, truncate=4.0, dtype=np.float64):
    """CSRNet's recipe: one delta image per head, gaussian_filter, summed (CSRNet: float32)."""
    density = np.zeros(shape, dtype=dtype)
    for (x, y), sigma in zip(points, sigmas):
        delta = np.zeros(shape, dtype=dtype)
        delta[int(y), int(x)] = 1.0
        density += scipy.ndimage.gaussian_filter(delta, sigma, mode=mode, truncate=truncate)
    return density
