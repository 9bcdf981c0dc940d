"""The dense-broadcast baseline of G1: every kernel evaluated on every pixel, in CuPy or PyTorch.

What a GPU user writes without a dedicated kernel: broadcast ``(images, kernels, H, W)`` blocks,
``exp``, zero the pixels outside each kernel's truncation box (a mask, so the work stays dense),
reduce over kernels. Written once against a tiny array-ops adapter, so the same code runs in CuPy,
PyTorch, and NumPy (which the smoke test uses to check it on the CPU).

Centres are split into an integer and a fractional part before the float32 subtraction: a float32
centre near x = 16000 is off by ~1e-3 px, which would cost 1e-3 of relative error; the split keeps
offsets exact to float32 rounding, as the library's planning does in float64.
"""

from __future__ import annotations

import math

import numpy as np

from bench.baselines import inverse_covariance, support_boxes

MAX_BLOCK_ELEMENTS = 1 << 26  # float32 elements per (images, kernels, H, W) block: 256 MiB


class Ops:
    """The handful of array operations the dense baseline needs, for one array library.

    Parameters
    ----------
    name : str
        ``"cupy"``, ``"torch"`` or ``"numpy"``.
    asarray : callable
        ``asarray(numpy_array)`` onto the device, keeping the dtype.
    zeros : callable
        ``zeros(shape)`` in float32 on the device.
    reduce_sum, reduce_max : callable
        ``f(a, axis)``.
    maximum : callable
        Element-wise maximum of two arrays.
    exp : callable
    """

    def __init__(self, name, asarray, zeros, reduce_sum, reduce_max, maximum, exp):
        self.name = name
        self.asarray = asarray
        self.zeros = zeros
        self.reduce_sum = reduce_sum
        self.reduce_max = reduce_max
        self.maximum = maximum
        self.exp = exp


def numpy_ops() -> Ops:
    """NumPy (host): for checking the baseline's code on a machine without a GPU."""
    return Ops("numpy", np.asarray, lambda shape: np.zeros(shape, np.float32), lambda a, axis: a.sum(axis),
               lambda a, axis: a.max(axis), np.maximum, np.exp)


def cupy_ops() -> Ops:
    """CuPy on its current device."""
    import cupy

    return Ops("cupy", cupy.asarray, lambda shape: cupy.zeros(shape, cupy.float32), lambda a, axis: a.sum(axis),
               lambda a, axis: a.max(axis), cupy.maximum, cupy.exp)


def torch_ops(device="cuda") -> Ops:
    """PyTorch on ``device``."""
    import torch

    return Ops("torch", lambda a: torch.as_tensor(a, device=device),
               lambda shape: torch.zeros(shape, dtype=torch.float32, device=device),
               lambda a, axis: a.sum(dim=axis), lambda a, axis: a.amax(dim=axis), torch.maximum, torch.exp)


def _padded_by_image(case):
    """Per-kernel float32 coefficients laid out as (images, max kernels per image), zero-padded.

    A padding slot has scale 0, so it adds 0 to a sum and cannot beat the background 0 of a max.
    """
    opts = case.options
    if opts["normalize"] not in ("pdf", "peak") or opts["combine"] not in ("sum", "max") or opts["extent"]:
        raise ValueError("the dense baseline covers pdf/peak, sum/max on the default pixel grid")
    k = case.kernels
    n_images = math.prod(case.shape[:-2])
    height, width = case.shape[-2:]
    a, b, c = inverse_covariance(case)
    scale = k.amplitude / (2 * np.pi * k.sigma_x * k.sigma_y) if opts["normalize"] == "pdf" else k.amplitude
    if opts["truncate"] is None:
        c0, r0 = np.zeros(len(k)), np.zeros(len(k))
        c1, r1 = np.full(len(k), width - 1.0), np.full(len(k), height - 1.0)
    else:
        c0, c1, r0, r1 = support_boxes(case)
    x_int, y_int = np.floor(k.x), np.floor(k.y)
    columns = dict(x_int=x_int, x_frac=k.x - x_int, y_int=y_int, y_frac=k.y - y_int, a=a, b2=2 * b, c=c,
                   scale=scale, c0=c0, c1=c1, r0=r0, r1=r1)
    counts = np.bincount(k.image, minlength=n_images)
    slots = int(counts.max()) if len(k) else 0
    order = np.argsort(k.image, kind="stable")
    slot = np.arange(len(k)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = {}
    for name, values in columns.items():
        grid = np.zeros((n_images, max(slots, 1)), np.float32)
        grid[k.image[order], slot] = values[order]
        padded[name] = grid
    return padded


def dense_broadcast(case, ops, max_block=MAX_BLOCK_ELEMENTS):
    """Render ``case`` densely with ``ops``: float32, every kernel on every pixel of its image.

    Parameters
    ----------
    case : Workload
        ``pdf`` or ``peak``, ``sum`` or ``max``, any ``truncate`` (applied as a box mask).
    ops : Ops
    max_block : int
        Largest ``(images, kernels, H, W)`` block evaluated at once, in elements.

    Returns
    -------
    array of ``case.shape``, float32, on ``ops``' device
    """
    return dense_prepare(case, ops, max_block)()


def dense_prepare(case, ops, max_block=MAX_BLOCK_ELEMENTS):
    """The coefficients moved to the device once; returns the zero-argument render call to time."""
    padded = _padded_by_image(case)
    n_images, slots = padded["scale"].shape
    height, width = case.shape[-2:]
    device = {name: ops.asarray(values) for name, values in padded.items()}
    cols = ops.asarray(np.arange(width, dtype=np.float32)).reshape(1, 1, 1, width)
    rows = ops.asarray(np.arange(height, dtype=np.float32)).reshape(1, 1, height, 1)
    per_image = height * width
    kernel_chunk = max(1, min(slots, max_block // per_image))
    image_chunk = max(1, min(n_images, max_block // (per_image * kernel_chunk)))
    truncated = case.options["truncate"] is not None
    combine_max = case.options["combine"] == "max"

    def call():
        out = ops.zeros((n_images, height, width))
        for i0 in range(0, n_images, image_chunk):
            i1 = min(n_images, i0 + image_chunk)
            for k0 in range(0, slots, kernel_chunk):
                k1 = min(slots, k0 + kernel_chunk)
                p = {name: v[i0:i1, k0:k1].reshape(i1 - i0, k1 - k0, 1, 1) for name, v in device.items()}
                u = (cols - p["x_int"]) - p["x_frac"]
                w = (rows - p["y_int"]) - p["y_frac"]
                values = p["scale"] * ops.exp(-0.5 * (p["a"] * u * u + p["b2"] * u * w + p["c"] * w * w))
                if truncated:
                    values = values * ((cols >= p["c0"]) & (cols <= p["c1"]) & (rows >= p["r0"]) & (rows <= p["r1"]))
                if combine_max:
                    out[i0:i1] = ops.maximum(out[i0:i1], ops.reduce_max(values, 1))
                else:
                    out[i0:i1] += ops.reduce_sum(values, 1)
        return out.reshape(case.shape)
    return call
