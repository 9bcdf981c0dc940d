"""A tiny, readable float64 reference: DESIGN.md section 2 written out pixel by pixel.

It shares no code with the library (no planning, no backend), so agreeing with it means the
planning step and the backends compute what the contract says. Slow on purpose: keep images small.
"""

import math


def naive_render(kernels, shape, combine="sum", normalize="pdf", truncate=4.0, extent=None, initial=None):
    """Render like ``gaussheat_gpu.render(..., dtype="float64")`` with plain Python loops.

    ``kernels`` is a list of dicts with keys x, y, sigma_x, sigma_y, theta, amplitude, image.
    ``truncate`` may also be a sequence of one value per kernel.
    ``initial`` (nested lists / array) plays the role of ``out`` with ``accumulate=True``.
    Returns a nested list of shape ``(n_images, H, W)``.
    """
    height, width = shape[-2], shape[-1]
    n_images = math.prod(shape[:-2])
    x0, x1, y0, y1 = extent if extent is not None else (0.0, width - 1.0, 0.0, height - 1.0)
    dx = (x1 - x0) / (width - 1) if width > 1 else 1.0
    dy = (y1 - y0) / (height - 1) if height > 1 else 1.0

    if initial is None:
        img = [[[0.0] * width for _ in range(height)] for _ in range(n_images)]
    else:
        img = [[[float(v) for v in row] for row in image] for image in initial]

    for i, k in enumerate(kernels):
        pixels = list(_support(k, width, height, x0, dx, y0, dy, _truncate_of(truncate, i)))
        values = {(r, c): _value(k, x0 + c * dx, y0 + r * dy, dx, dy, normalize) for r, c in pixels}
        if normalize == "count":  # values hold log g: shift by their maximum so the sum cannot underflow
            top = max(values.values(), default=0.0)
            g = {rc: math.exp(log_g - top) for rc, log_g in values.items()}
            total = sum(g.values())
            values = {rc: k["amplitude"] * v / total for rc, v in g.items()}
        image = img[k["image"]]
        for (r, c), v in values.items():
            s = image[r][c]
            if combine == "sum":
                image[r][c] = s + v
            elif combine == "max":
                image[r][c] = max(s, v)
            else:
                image[r][c] = s + v * (1.0 - s)
    return img


def _truncate_of(truncate, i):
    """Kernel i's truncate: ``truncate`` may be None, a number or one number per kernel."""
    if truncate is None or isinstance(truncate, (int, float)):
        return truncate
    return float(truncate[i])


def _covariance(k):
    c, s = math.cos(k["theta"]), math.sin(k["theta"])
    sx2, sy2 = k["sigma_x"] ** 2, k["sigma_y"] ** 2
    sxx = c * c * sx2 + s * s * sy2
    syy = s * s * sx2 + c * c * sy2
    sxy = c * s * (sx2 - sy2)
    return sxx, sxy, syy


def _support(k, width, height, x0, dx, y0, dy, truncate):
    if truncate is None:
        cols, rows = range(width), range(height)
    else:
        sxx, _, syy = _covariance(k)
        cx, cy = (k["x"] - x0) / dx, (k["y"] - y0) / dy
        rx, ry = truncate * math.sqrt(sxx) / abs(dx), truncate * math.sqrt(syy) / abs(dy)
        cols = range(max(math.ceil(cx - rx), 0), min(math.floor(cx + rx), width - 1) + 1)
        rows = range(max(math.ceil(cy - ry), 0), min(math.floor(cy + ry), height - 1) + 1)
    for r in rows:
        for c in cols:
            yield r, c


def _mass(lo, hi):
    """Standard normal probability of [lo, hi], from the tail it lies in (1 + erf(z) would cancel)."""
    r = math.sqrt(2.0)
    if lo >= 0:
        return 0.5 * (math.erfc(lo / r) - math.erfc(hi / r))
    if hi <= 0:
        return 0.5 * (math.erfc(-hi / r) - math.erfc(-lo / r))
    return 0.5 * (math.erf(hi / r) - math.erf(lo / r))


def _value(k, X, Y, dx, dy, normalize):
    """Per-kernel value at (X, Y); for count, log g = -q/2 (normalised by the caller)."""
    sxx, sxy, syy = _covariance(k)
    det = sxx * syy - sxy * sxy
    ddx, ddy = X - k["x"], Y - k["y"]
    q = (syy * ddx * ddx - 2 * sxy * ddx * ddy + sxx * ddy * ddy) / det
    if normalize == "count":
        return -q / 2
    g = math.exp(-q / 2)
    a = k["amplitude"]
    if normalize == "pdf":
        return a * g / (2 * math.pi * k["sigma_x"] * k["sigma_y"])
    if normalize == "peak":
        return a * g
    # integral: axis-aligned mass of the pixel cell
    hx, hy = abs(dx) / 2, abs(dy) / 2
    sx, sy = math.sqrt(sxx), math.sqrt(syy)
    mx = _mass((ddx - hx) / sx, (ddx + hx) / sx)
    my = _mass((ddy - hy) / sy, (ddy + hy) / sy)
    return a * mx * my


def naive_support_mask(kernels, shape, truncate=4.0, extent=None):
    """Boolean (n_images, H, W): pixels inside at least one kernel's support box."""
    height, width = shape[-2], shape[-1]
    n_images = math.prod(shape[:-2])
    x0, x1, y0, y1 = extent if extent is not None else (0.0, width - 1.0, 0.0, height - 1.0)
    dx = (x1 - x0) / (width - 1) if width > 1 else 1.0
    dy = (y1 - y0) / (height - 1) if height > 1 else 1.0
    mask = [[[False] * width for _ in range(height)] for _ in range(n_images)]
    for i, k in enumerate(kernels):
        for r, c in _support(k, width, height, x0, dx, y0, dy, _truncate_of(truncate, i)):
            mask[k["image"]][r][c] = True
    return mask
