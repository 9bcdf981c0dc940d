"""Per-kernel scalar formulas shared by the band, rotated and dense paths.

A kernel's row of ``params`` (columns named by :mod:`gaussheat_gpu.planning`) gives, for an
axis-aligned kernel, the 1-D factors whose product is its value (``factor``); ``row_peak`` and
``col_peak`` are their largest values over a box, the reference every flush threshold is relative to.

These are small and inlined by LLVM where they are called (Numba links a callee's code into its
caller's module, :mod:`.linking`), so they cost no call in the loops; inlining them in Numba's IR
instead (``inline="always"``) types their bodies again at every call site: the seed's first call
compiled for 4.3 s that way against 3.1 s.

``larger`` and ``smaller`` stand in for the builtins ``max`` and ``min`` of two numbers: Numba
compiles a builtin's implementation again for every set of compile options it is called under (an
entry point, a helper, an inlined helper...), these once per argument types.
"""

from __future__ import annotations

import math

from ...planning import (COMBINE_CODES, NORMALIZE_CODES, P_A, P_C, P_CX, P_CY, P_SHIFT_COL, P_SHIFT_ROW,
                         P_SIGMA_COL, P_SIGMA_ROW)
from .cache import jit

SUM = COMBINE_CODES["sum"]
MAX = COMBINE_CODES["max"]
INTEGRAL = NORMALIZE_CODES["integral"]
COUNT = NORMALIZE_CODES["count"]
_SQRT_HALF = math.sqrt(0.5)
RELATIVE_FLUSH = 2.0 ** -60  # factors and values below this fraction of their peak are dropped


@jit(forceinline=True)
def larger(a, b):
    """``max(a, b)`` as Numba's builtin forms it (``b`` when ``b > a``, else ``a``): this function is
    compiled once per argument types, the builtin once per calling function's compile options."""
    return b if b > a else a


@jit(forceinline=True)
def smaller(a, b):
    """``min(a, b)`` as Numba's builtin forms it (``b`` when ``b < a``, else ``a``)."""
    return b if b < a else a


@jit(forceinline=True)
def cell_mass(offset, sigma):
    """Normal(0, sigma) mass of the unit cell ``offset`` pixels from the mean (numpy_backend.cell_mass)."""
    d = abs(offset)
    lo = (d - 0.5) / sigma * _SQRT_HALF
    hi = (d + 0.5) / sigma * _SQRT_HALF
    if lo >= 0:  # both edges on one side: an erfc difference keeps the far tail's precision
        return 0.5 * (math.erfc(lo) - math.erfc(hi))
    return 0.5 * (math.erf(hi) - math.erf(lo))


@jit(forceinline=True)
def factor(offset, coef, shift, sigma, normalize):
    """One axis of a separable kernel at ``offset`` pixels from its centre."""
    if normalize == INTEGRAL:
        return cell_mass(offset, sigma)
    return math.exp(-0.5 * (coef * offset * offset - shift))


@jit(forceinline=True)
def nearest(centre, lo, hi):
    """The integer in [lo, hi] nearest ``centre`` (where a unimodal factor peaks)."""
    return smaller(larger(math.floor(centre + 0.5), lo), hi)


@jit(forceinline=True)
def kernel_params(params, k):
    """Row ``k`` of ``params`` as a tuple: ``params[k]`` would be a view, and every view increfs and
    decrefs its array with an atomic instruction on a cache line all threads share (11% of W6's
    samples sat in NRT_incref/NRT_decref)."""
    return (params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4], params[k, 5], params[k, 6],
            params[k, 7], params[k, 8], params[k, 9])


@jit(forceinline=True)
def col_factor(p, c, normalize):
    """Column factor of axis-aligned kernel ``p`` (a ``kernel_params`` tuple) at column ``c``."""
    return factor(c - p[P_CX], p[P_A], p[P_SHIFT_COL], p[P_SIGMA_COL], normalize)


@jit(forceinline=True)
def row_factor(p, r, normalize):
    """Row factor of axis-aligned kernel ``p`` at row ``r``."""
    return factor(r - p[P_CY], p[P_C], p[P_SHIFT_ROW], p[P_SIGMA_ROW], normalize)


@jit(forceinline=True)
def col_peak(p, c0, c1, normalize):
    """Largest column factor of an axis-aligned kernel over columns c0..c1 (nearest its centre)."""
    return col_factor(p, nearest(p[P_CX], c0, c1), normalize)


@jit(forceinline=True)
def row_peak(p, r0, r1, normalize):
    """Largest row factor of an axis-aligned kernel over rows r0..r1 (nearest its centre)."""
    return row_factor(p, nearest(p[P_CY], r0, r1), normalize)


@jit(forceinline=True)
def flush_threshold(peak, tiny):
    """Values below this are written as 0: ``tiny`` (the output dtype's smallest normal number:
    subnormals cost a microcode assist each), unless the kernel's ``peak`` is so small that this
    would drop more than ``RELATIVE_FLUSH`` of it; then that fraction of its peak, and never less
    than the smallest positive float64 (a kernel whose peak is 0 writes only zeros)."""
    return larger(smaller(tiny, abs(peak) * RELATIVE_FLUSH), 2.0 ** -1074)
