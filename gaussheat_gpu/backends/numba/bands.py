"""Axis-aligned kernels in a row band: separable rows, one ``exp`` per row.

Each axis-aligned kernel is prepared once (:func:`prepare_separable`): its column factors (one
``exp``, or one ``erf`` difference for ``integral``, per column), normalised to a peak of 1 and
trimmed where they fall below 2**-60 of that peak, and its row scale; ``count`` kernels also get
their sum over the box, in float64. A row of the kernel is then its row factor times the kept
column factors, combined into the image along the row (a vectorised loop).

A band's first kernel, when it spans all the band's rows, writes them whole instead (zeros around
its values: one pass over the rows less); when the second kernel spans them too, both are written
in that one pass (:func:`set_pair_rows`), by the same operations in the same order as zero-filling
and combining twice.

Values whose magnitude falls below the kernel's flush threshold (:func:`.factors.flush_threshold`
of its largest value over its box: the output dtype's smallest normal number, or 2**-60 of that
value when it is smaller) are not written: columns whose product with the row factor would fall below it are trimmed, whole rows
below it skipped.
"""

from __future__ import annotations

from ...planning import B_COL0, B_COL1, B_ROW0, B_ROW1, P_B, P_SCALE
import numpy as np

from .cache import jit
from .factors import (COUNT, MAX, RELATIVE_FLUSH, SUM, col_factor, col_peak, flush_threshold, kernel_params, larger,
                      row_factor, row_peak, smaller)

@jit
def prepare_separable(params, boxes, k, normalize, col_offsets, column_factors, info):
    """Column factors of axis-aligned kernel ``k``, normalised to peak 1 and trimmed; its row scale.

    ``info[k]`` receives (row scale, first kept column, last kept column): the row factor of row
    ``r`` is ``row scale * factor(r)``, the pixel value ``row factor * column factor``.
    """
    p = kernel_params(params, k)
    c0, c1, r0, r1 = boxes[k, B_COL0], boxes[k, B_COL1], boxes[k, B_ROW0], boxes[k, B_ROW1]
    peak_col = col_peak(p, c0, c1, normalize)
    if not peak_col > 0.0:  # every column factor underflows float64: the kernel writes nothing
        info[k, 0], info[k, 1], info[k, 2] = 0.0, c1 + 1, c0 - 1
        return
    base = col_offsets[k] - c0
    col_sum = 0.0
    first, last = c1 + 1, c0 - 1
    for c in range(c0, c1 + 1):
        g = col_factor(p, c, normalize)
        col_sum += g
        if g >= peak_col * RELATIVE_FLUSH:  # the kept columns are contiguous (unimodal factor)
            first = smaller(first, c)
            last = c
        column_factors[base + c] = g / peak_col
    scale = p[P_SCALE]
    if normalize == COUNT:  # divide by the kernel's sum over its box, taken in float64
        row_sum = 0.0
        for r in range(r0, r1 + 1):
            row_sum += row_factor(p, r, normalize)
        scale = scale / (col_sum * row_sum)
    info[k, 0] = scale * peak_col
    info[k, 1] = first
    info[k, 2] = last


@jit(forceinline=True)
def kept_factors(k, boxes, info, col_offsets, column_factors):
    """First kept column of axis-aligned kernel ``k`` and its column factors from there (empty when
    ``prepare_separable`` kept none)."""
    first, last = np.int64(info[k, 1]), np.int64(info[k, 2])
    base = col_offsets[k] - boxes[k, B_COL0]
    return first, column_factors[base + first:base + larger(last, first - 1) + 1]


@jit(forceinline=True)
def spans_band(params, boxes, info, k, band_first, band_last):
    """Whether kernel ``k`` is axis-aligned, keeps some columns and its box spans every band row."""
    return (params[k, P_B] == 0.0 and info[k, 1] <= info[k, 2] and boxes[k, B_ROW0] <= band_first
            and boxes[k, B_ROW1] >= band_last)


@jit(forceinline=True)
def separable_row(p, r, factors, row_scale, peak_row, normalize, flush):
    """Row ``r`` of an axis-aligned kernel: ``(lo, hi, row_factor)``, its values being
    ``row_factor * factors[lo:hi + 1]``; ``lo > hi`` when the whole row is flushed.

    Only columns whose product with row_factor reaches ``flush`` are kept; factors are unimodal,
    so the ends are trimmed.
    """
    g = row_factor(p, r, normalize)
    value = row_scale * g
    lo, hi = np.int64(0), factors.size - 1
    if g < peak_row * RELATIVE_FLUSH or abs(value) < flush:
        return hi + 1, hi, value
    floor = flush / abs(value)
    if floor > RELATIVE_FLUSH:
        while lo <= hi and factors[lo] < floor:
            lo += 1
        while hi >= lo and factors[hi] < floor:
            hi -= 1
    return lo, hi, value


# The row loops below index views with their range variable only: an index like ``base + c`` keeps
# Numba's negative-index check in the loop and stops LLVM from vectorising it (3x slower). Each tests
# the combine mode inside one loop rather than choosing among a loop per mode: LLVM takes the test
# out of the loop (the same speed), and Numba types and lowers one loop, not three (the seed's cold
# first call 0.95x).

@jit(forceinline=True)
def combine_separable_row(row, factors, value, combine):
    """row[i] <- combine(row[i], value * factors[i]).

    The caller trims ``factors`` so that no product falls below the flush threshold.
    """
    one = row.dtype.type(1)
    for i in range(row.size):
        s, v = row[i], value * factors[i]
        if combine == MAX:
            row[i] = larger(s, v)
        else:
            row[i] = s + v if combine == SUM else s + v * (one - s)


@jit(forceinline=True)
def zero_row(row):
    """row <- 0 (an explicit loop: Numba's slice assignment is several times slower)."""
    zero = row.dtype.type(0)
    for i in range(row.size):
        row[i] = zero


@jit(forceinline=True)
def set_values(values, factors, value, combine):
    """values <- combine(0, value * factors): 0 + v for sum and por (por's 0 + v * (1 - 0) is the
    same number), max(0, v) for max."""
    zero = values.dtype.type(0)
    for i in range(values.size):
        v = value * factors[i]
        values[i] = larger(zero, v) if combine == MAX else zero + v


@jit(forceinline=True)
def separable_kernel(image, params, boxes, k, col_offsets, column_factors, info, r_first, r_last, combine,
                     normalize, tiny):
    """Rows r_first..r_last of axis-aligned kernel ``k`` combined into ``image`` (2-D)."""
    first, factors = kept_factors(k, boxes, info, col_offsets, column_factors)
    if factors.size == 0:
        return
    p = kernel_params(params, k)
    row_scale = info[k, 0]
    peak_row = row_peak(p, boxes[k, B_ROW0], boxes[k, B_ROW1], normalize)
    flush = flush_threshold(row_scale * peak_row, tiny)
    for r in range(r_first, r_last + 1):
        lo, hi, value = separable_row(p, r, factors, row_scale, peak_row, normalize, flush)
        if lo <= hi:
            combine_separable_row(image[r, first + lo:first + hi + 1], factors[lo:hi + 1], image.dtype.type(value),
                                  combine)


@jit
def set_pair_rows(image, params, boxes, k1, k2, col_offsets, column_factors, info, band_first, band_last,
                  combine, normalize, tiny):
    """Rows band_first..band_last written by two axis-aligned kernels that span them, in one pass;
    by ``k1`` alone when ``k2`` is negative.

    Every pixel gets exactly what zero-filling and then ``combine_separable_row`` with ``k1`` and
    with ``k2`` would give, by the same operations in the same order (``combine(0, v)`` is written
    as ``0 + v`` or ``max(0, v)``).
    """
    one = image.dtype.type(1)
    zero = image.dtype.type(0)
    width = image.shape[1]
    single = k2 < 0
    if single:  # k2's values below are k1's, never used
        k2 = k1
    first1, f1 = kept_factors(k1, boxes, info, col_offsets, column_factors)
    first2, f2 = kept_factors(k2, boxes, info, col_offsets, column_factors)
    p1, p2 = kernel_params(params, k1), kernel_params(params, k2)
    peak1 = row_peak(p1, boxes[k1, B_ROW0], boxes[k1, B_ROW1], normalize)
    peak2 = row_peak(p2, boxes[k2, B_ROW0], boxes[k2, B_ROW1], normalize)
    flush1, flush2 = flush_threshold(info[k1, 0] * peak1, tiny), flush_threshold(info[k2, 0] * peak2, tiny)
    for r in range(band_first, band_last + 1):
        lo1, hi1, v1 = separable_row(p1, r, f1, info[k1, 0], peak1, normalize, flush1)
        lo2, hi2, v2 = (np.int64(1), np.int64(0), 0.0) if single else separable_row(p2, r, f2, info[k2, 0], peak2,
                                                                                     normalize, flush2)
        rf1, rf2 = image.dtype.type(v1), image.dtype.type(v2)
        # Kept columns [b, e) of each kernel (empty when its row is flushed).
        b1, e1 = (first1 + lo1, first1 + hi1 + 1) if lo1 <= hi1 else (width, width)
        b2, e2 = (first2 + lo2, first2 + hi2 + 1) if lo2 <= hi2 else (width, width)
        row = image[r]
        start = 0
        while start < width:
            stop = width
            for cut in (b1, e1, b2, e2):
                if start < cut < stop:
                    stop = cut
            out = row[start:stop]
            in1, in2 = b1 <= start < e1, b2 <= start < e2
            if in1 and in2:
                g1, g2 = f1[lo1 + start - b1:lo1 + stop - b1], f2[lo2 + start - b2:lo2 + stop - b2]
                for i in range(out.size):
                    v1, v2 = rf1 * g1[i], rf2 * g2[i]
                    if combine == MAX:
                        out[i] = larger(larger(zero, v1), v2)
                    else:
                        s = zero + v1
                        out[i] = s + v2 if combine == SUM else s + v2 * (one - s)
            elif in1 or in2:  # one kernel's values: one copy of the loops serves both
                g = f1[lo1 + start - b1:lo1 + stop - b1] if in1 else f2[lo2 + start - b2:lo2 + stop - b2]
                set_values(out, g, rf1 if in1 else rf2, combine)
            else:
                zero_row(out)
            start = stop
