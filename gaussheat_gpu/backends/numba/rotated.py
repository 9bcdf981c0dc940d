"""Rotated kernels in a row band: two multiplies a pixel, no ``exp``.

With ``u0`` the box's first column, ``g(u, w)`` is the row factor ``g(u0, w)`` times
``column(u) = exp(-(A (u^2 - u0^2)/2 + B (u - u0) w))``; one row down, ``column`` is multiplied by
``exp(-B (u - u0))`` (a vector over the row) and the row factor by a scalar step, so a pixel costs
two multiplies and no ``exp``, a visit three and the kernel's preparation three more. ``column``
starts stepped along the row. Every recurrence restarts from exact exps every ``RESTART`` steps,
which bounds its relative error to ~1000 float64 ulps (~1e-13, against the 1e-12 of DESIGN.md
section 3). Rows are combined over windows of whole ``LANES``-pixel blocks (lanes outside the box
hold column factor 0 and leave their pixel alone), so the vectorised loop never ends in its scalar
remainder. Kernels whose factors could leave float64's normal range over their box (narrow,
untruncated, far corners) fall back to one ``exp`` per pixel.

Values below the kernel's flush threshold (:func:`.factors.flush_threshold` of its value at the box
pixel nearest its centre) are written as 0.

:func:`rotated_block` and its helpers are inlined by LLVM (``forceinline=True``) into the band
renderer (:func:`.tiles.render_task`): as calls, their array arguments (7 scalars each, and a
reference count update each) would cost as much as a short row. Inlined in Numba's IR instead
(``inline="always"``), their bodies are typed and lowered again inside every caller: W6's cold
first call took 1.2x as long that way, for the same machine code.
"""

from __future__ import annotations

import math

import numpy as np

from ...planning import (B_COL0, B_COL1, B_ROW0, B_ROW1, P_A, P_B, P_C, P_CX, P_CY, P_SCALE, P_SHIFT_COL,
                         P_SHIFT_ROW)
from .cache import jit
from .factors import COUNT, MAX, RELATIVE_FLUSH, SUM, flush_threshold, kernel_params, larger, nearest, smaller

RESTART = 32  # recurrence steps between exact exp restarts
LANES = 8  # rotated rows are combined over windows of a multiple of this many pixels
# Rotated kernels are stepped only when every factor of the recurrences stays inside exp(+-this):
# normal in float64 with a margin of exp(100) for the kernel's scale.
SAFE_EXPONENT = 600.0
_SURELY_NORMAL = math.exp(40.0) / RELATIVE_FLUSH  # scale * exp(-40) above tiny / RELATIVE_FLUSH


@jit
def prepare_rotated(params, boxes, k, normalize, info, tiny):
    """``info[k]`` of rotated kernel ``k``: (scale, flush threshold, exp(-A), exp(-B), exp(-C)), the
    threshold negated when the recurrences are not safe (a sixth column cost W6 ~3% on two threads)."""
    p = kernel_params(params, k)
    c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
    safe = rotated_is_safe(p, c0, c1, r0, r1)
    scale = p[P_SCALE]
    if normalize == COUNT:
        if safe:
            scale = scale / _rotated_total(p, c0, c1, r0, r1)
        else:
            scale = scale / _exact_sum(p, c0, c1, r0, r1)
    info[k, 0] = scale
    # The flush threshold of its value at the box pixel nearest its centre, scale * exp(-exponent);
    # tiny without that exp when the value is surely above tiny / RELATIVE_FLUSH.
    exponent = _exponent(p, nearest(p[P_CX], c0, c1), nearest(p[P_CY], r0, r1))
    if exponent <= 40.0 and abs(scale) >= tiny * _SURELY_NORMAL:
        flush = tiny
    else:
        flush = flush_threshold(scale * math.exp(-exponent), tiny)
    info[k, 1] = flush if safe else -flush  # flush_threshold is > 0
    info[k, 2] = math.exp(-p[P_A])
    info[k, 3] = math.exp(-p[P_B])
    info[k, 4] = math.exp(-p[P_C])


@jit(forceinline=True)
def _exponent(p, col, r):
    """``-log g`` at pixel (col, r): ``(q - shift) / 2``."""
    u = col - p[P_CX]
    w = r - p[P_CY]
    return 0.5 * (p[P_A] * u * u + 2.0 * p[P_B] * u * w + p[P_C] * w * w - (p[P_SHIFT_COL] + p[P_SHIFT_ROW]))


@jit(forceinline=True)
def _value(p, col, r):
    """``g`` at pixel (col, r), one exp (``exp(-0.5 * (q - shift))``: negating is exact)."""
    return math.exp(-_exponent(p, col, r))


@jit
def rotated_is_safe(p, c0, c1, r0, r1):
    """Whether every factor ``rotated_block`` forms stays within exp(+-SAFE_EXPONENT).

    With ``U`` and ``V`` the largest ``|u|`` and ``|w|`` over the box widened by one pixel,
    ``E1 = A U^2/2 + |B| U V`` bounds ``|A u^2/2 + B u w|`` and ``E2 = C V^2/2`` bounds ``C w^2/2``:
    row factors and values are within ``E1 + E2 + |shift|/2``, column factors (differences of two
    ``A u^2/2 + B u w``) within ``2 E1``; the steps are linear in ``u`` and ``w``.
    """
    a, b, c = p[P_A], p[P_B], p[P_C]
    big_u = larger(abs(c0 - p[P_CX]), abs(c1 - p[P_CX])) + 1.0
    big_w = larger(abs(r0 - p[P_CY]), abs(r1 - p[P_CY])) + 1.0
    e1 = 0.5 * a * big_u * big_u + abs(b) * big_u * big_w
    e2 = 0.5 * c * big_w * big_w
    worst = e1 + e2 + 0.5 * abs(p[P_SHIFT_COL] + p[P_SHIFT_ROW])
    for bound in (2.0 * e1, a * (big_u + 0.5) + abs(b) * big_w, abs(b) * (2.0 * big_u + 1.0),
                  abs(b) * big_u + c * (big_w + 0.5), a, c):
        worst = larger(worst, bound)
    return worst <= SAFE_EXPONENT


@jit(forceinline=True)
def _start_columns(a, b, u0, w, n, step_a, step_b, column, down):
    """For ``j < n``: ``column[j] = exp(-(A (u_j^2 - u0^2)/2 + B (u_j - u0) w))`` with ``u_j = u0 + j``,
    the column factor relative to the first column, and ``down[j] = exp(-B j)``, the factor that moves
    it one row down.

    Stepped along the row (``column`` by ``exp(-(A (u + 1/2) + B w))``, which itself steps by
    ``exp(-A)``; ``down`` by ``exp(-B)``), restarting from exact exps every ``RESTART`` columns; the
    first start needs one ``exp`` (``column[0] = down[0] = 1``).
    """
    j = 0
    while j < n:
        if j == 0:
            g = 1.0
            x = 1.0
        else:
            g = math.exp(-j * (a * (u0 + 0.5 * j) + b * w))
            x = math.exp(-b * j)
        ratio = math.exp(-(a * (u0 + j + 0.5) + b * w))
        for i in range(j, smaller(n, j + RESTART)):
            column[i] = g
            down[i] = x
            g *= ratio
            ratio *= step_a
            x *= step_b
        j += RESTART


@jit(forceinline=True)
def _start_rows(p, u0, w, n, step_a, step_b, column, down):
    """Exact start of a run of rows at ``w``: fills ``column``/``down`` (``_start_columns``) and
    returns the row factor ``g(u0, w)`` and its step one row down, ``exp(-(B u0 + C (w + 1/2)))``."""
    a, b, c = p[P_A], p[P_B], p[P_C]
    _start_columns(a, b, u0, w, n, step_a, step_b, column, down)
    row_factor = math.exp(-0.5 * (a * u0 * u0 + 2.0 * b * u0 * w + c * w * w - (p[P_SHIFT_COL] + p[P_SHIFT_ROW])))
    return row_factor, math.exp(-(b * u0 + c * (w + 0.5)))


@jit(forceinline=True)
def rotated_block(image, p, r_first, r_last, c0, c1, scale, steps, combine, flush, column, down, spare):
    """Combine ``scale * g`` of rotated kernel ``p`` into rows r_first..r_last, columns c0..c1 of
    ``image`` (2-D).

    With ``u0 = c0 - cx`` and ``w`` the row, ``g = exp(-(A u^2 + 2 B u w + C w^2 - shift)/2)`` is
    ``row(w) * column_w(u)``: ``row(w) = g(u0, w)`` and ``column_w`` relative to ``u0``
    (``_start_columns``). One row down, ``column`` is multiplied by ``down = exp(-B (u - u0))`` and
    ``row`` by a step ``exp(-(B u0 + C (w + 1/2)))`` that itself steps by ``exp(-C)``. So a pixel
    costs two multiplies, a visit three exps (``steps``, exp(-A), exp(-B), exp(-C), come from the
    kernel's preparation), and the relative error grows with the column and the row
    (~1000 ulps at most, before the exact restart every ``RESTART`` rows and columns).

    Rows are combined over a window of whole blocks of ``LANES`` pixels that holds the box, shifted
    left at the image's right edge: the vectorised loop then never ends in its scalar remainder
    (6 of a 14-pixel row's pixels otherwise). Lanes outside the box hold column factor 0 and leave
    their pixel alone. An image narrower than the window gets a window of exactly the box.

    Inlined, like the functions it calls: as calls they cost ~40% of W6 (each array argument
    travels as 7 scalars).
    """
    n = c1 - c0 + 1
    span = (n + LANES - 1) // LANES * LANES
    if span <= image.shape[1]:
        start = smaller(c0, image.shape[1] - span)
        for i in range(span):  # lanes outside the box stay 0 through every row
            column[i] = 0.0
            down[i] = 0.0
    else:
        start, span = c0, n
    lead = c0 - start
    u0 = c0 - p[P_CX]
    step_a, step_b, step_c = steps
    col = column[:span]
    dn = down[:span]
    for block in range(r_first, r_last + 1, RESTART):
        row_factor, row_step = _start_rows(p, u0, block - p[P_CY], n, step_a, step_b, column[lead:lead + n],
                                           down[lead:lead + n])
        stop = smaller(r_last + 1, block + RESTART)
        for r in range(block, stop, 2):
            row_factor2 = row_factor * row_step
            row_step *= step_c
            # An odd last row pairs with the spare row: the same loop, and no other to compile.
            row2 = image[r + 1, start:start + span] if r + 1 < stop else spare[:span]
            _combine_rotated_rows(image[r, start:start + span], row2, col, dn, scale * row_factor,
                                  scale * row_factor2, combine, flush)
            row_factor = row_factor2 * row_step
            row_step *= step_c


@jit
def _rotated_total(p, c0, c1, r0, r1):
    """Sum of ``g`` over the box, by the recurrences of ``rotated_block`` (for ``count``)."""
    n = c1 - c0 + 1
    column = np.empty(n)
    down = np.empty(n)
    u0 = c0 - p[P_CX]
    step_a = math.exp(-p[P_A])
    step_b = math.exp(-p[P_B])
    step_c = math.exp(-p[P_C])
    total = 0.0
    for block in range(r0, r1 + 1, RESTART):
        row_factor, row_step = _start_rows(p, u0, block - p[P_CY], n, step_a, step_b, column, down)
        for r in range(block, smaller(r1 + 1, block + RESTART)):
            row_total = 0.0
            for i in range(n):
                row_total += column[i]
                column[i] *= down[i]
            total += row_factor * row_total
            row_factor *= row_step
            row_step *= step_c
    return total


@jit
def _exact_sum(p, c0, c1, r0, r1):
    """Sum of ``g`` over the box with one exp per pixel (kernels the recurrences cannot step)."""
    total = 0.0
    for r in range(r0, r1 + 1):
        for col in range(c0, c1 + 1):
            total += _value(p, col, r)
    return total


@jit(forceinline=True)
def _combine_rotated_rows(row, row2, column, down, row_factor, row_factor2, combine, flush):
    """Combine ``row_factor * column`` into ``row`` and, one row down, ``row_factor2 * column * down``
    into ``row2``; leave ``column`` two rows down (``*= down**2``).

    Two rows a pass halve the per-row work around the vectorised loop (its slices and aliasing
    checks). Pixels whose column factor is 0 (the lanes of a window outside the kernel's box) keep
    their value bit for bit; in-box column factors are never 0 (``rotated_is_safe`` keeps them and
    ``down`` above exp(-600)). Products are formed in float64 and flushed to 0 below ``flush`` BEFORE
    the cast to the output dtype: a float64 -> float32 conversion that underflows costs a microcode
    assist per lane. Inlined: a call costs as much as a 14-pixel row (each array travels as 7
    arguments).
    """
    one = row.dtype.type(1)
    if combine == SUM:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = s + row.dtype.type(v if abs(v) >= flush else 0.0)
            t2 = s2 + row.dtype.type(v2 if abs(v2) >= flush else 0.0)
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d
    elif combine == MAX:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = larger(s, row.dtype.type(v if abs(v) >= flush else 0.0))
            t2 = larger(s2, row.dtype.type(v2 if abs(v2) >= flush else 0.0))
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d
    else:
        for i in range(row.size):
            c = column[i]
            d = down[i]
            c2 = c * d
            v = row_factor * c
            v2 = row_factor2 * c2
            s = row[i]
            s2 = row2[i]
            t = s + row.dtype.type(v if abs(v) >= flush else 0.0) * (one - s)
            t2 = s2 + row.dtype.type(v2 if abs(v2) >= flush else 0.0) * (one - s2)
            row[i] = t if c != 0.0 else s
            row2[i] = t2 if c != 0.0 else s2
            column[i] = c2 * d


@jit
def combine_exact_row(row, p, r, c0, c1, scale, combine, flush):
    """One exp per pixel: rotated kernels whose recurrences could underflow or overflow."""
    for col in range(c0, c1 + 1):
        v = scale * _value(p, col, r)
        vv = v if abs(v) >= flush else 0.0  # (not row[0] * 0: NaN where an accumulated row starts with inf)
        s = row[col]
        if combine == SUM:
            row[col] = s + vv
        elif combine == MAX:
            row[col] = larger(s, vv)
        else:
            row[col] = s + vv * (1 - s)
