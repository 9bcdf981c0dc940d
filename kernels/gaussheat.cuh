// gaussheat_gpu device code: per-kernel values, combine operators and the per-pixel loop.
//
// Compiled by NVRTC for the CuPy backend (as the preamble of an ElementwiseKernel) and, in the
// tests, by a host C++ compiler, so that the same code is checked pixel by pixel against the
// NumPy reference on machines without a GPU.
//
// Layout of the plan (mirrors gaussheat_gpu/planning.py; tests/test_cuda_sources.py checks it):
// params is (n_kernels, GH_N_PARAMS) float64, boxes is (n_kernels, GH_N_BOX) int64, row-major.
//
// In CuPy's generated module this header is the preamble, after `typedef <output type> T;`: the
// template parameters named T below hide that typedef, so the functions never depend on it.

#ifndef GAUSSHEAT_CUH
#define GAUSSHEAT_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GH_DEVICE __device__ __forceinline__
#else
#include <cmath>
#define GH_DEVICE inline
using std::erf;
using std::erfc;
using std::exp;
using std::fabs;
#endif

#define GH_P_CX 0
#define GH_P_CY 1
#define GH_P_A 2
#define GH_P_B 3
#define GH_P_C 4
#define GH_P_SIGMA_COL 5
#define GH_P_SIGMA_ROW 6
#define GH_P_SCALE 7
#define GH_P_SHIFT_COL 8
#define GH_P_SHIFT_ROW 9
#define GH_N_PARAMS 10

#define GH_B_COL0 0
#define GH_B_COL1 1
#define GH_B_ROW0 2
#define GH_B_ROW1 3
#define GH_B_IMAGE 4
#define GH_N_BOX 5

// Codes of planning.COMBINES and planning.NORMALIZES, in that order.
#define GH_COMBINE_SUM 0
#define GH_COMBINE_MAX 1
#define GH_COMBINE_POR 2
#define GH_NORMALIZE_PDF 0
#define GH_NORMALIZE_PEAK 1
#define GH_NORMALIZE_INTEGRAL 2
#define GH_NORMALIZE_COUNT 3

// Float32 outputs take the exponential in float32 (fast expf) of an argument formed in float64:
// far in a tail (q ~ 100) the float32 rounding of q alone would cost ~1e-5 of relative precision.
GH_DEVICE float gh_exp(float x) { return expf(x); }
GH_DEVICE double gh_exp(double x) { return exp(x); }

// Normal(0, sigma) mass of the unit cell centred `offset` pixels from the mean. Mirrored to the
// positive side and taken as an erfc difference there, so far tails keep relative precision.
GH_DEVICE double gh_cell_mass(double offset, double sigma) {
    const double sqrt_half = 0.70710678118654752440;
    double d = fabs(offset);
    double lo = (d - 0.5) / sigma * sqrt_half;
    double hi = (d + 0.5) / sigma * sqrt_half;
    return lo >= 0.0 ? 0.5 * (erfc(lo) - erfc(hi)) : 0.5 * (erf(hi) - erf(lo));
}

template <typename T>
GH_DEVICE T gh_combine(T current, T value, int combine) {
    if (combine == GH_COMBINE_SUM) return current + value;
    if (combine == GH_COMBINE_MAX) return current > value ? current : value;
    return current + value * (T(1) - current);  // por: 1 - prod(1 - v) without cancellation
}

// Unnormalised g = exp(-(q - shift)/2) of kernel p at pixel offsets (u, w), in precision T.
template <typename T>
GH_DEVICE T gh_gaussian(const double* p, double u, double w) {
    double q = p[GH_P_A] * u * u + 2.0 * p[GH_P_B] * u * w + p[GH_P_C] * w * w;
    // Same operation order as the NumPy reference (q - shift_col - shift_row).
    return gh_exp(T(-0.5 * (q - p[GH_P_SHIFT_COL] - p[GH_P_SHIFT_ROW])));
}

// Value of kernel p at pixel (row, col); count_sum is the kernel's sum of g (count mode only).
template <typename T>
GH_DEVICE T gh_kernel_value(const double* p, long long row, long long col, int normalize, double count_sum) {
    double u = double(col) - p[GH_P_CX];
    double w = double(row) - p[GH_P_CY];
    if (normalize == GH_NORMALIZE_INTEGRAL) {
        return T(p[GH_P_SCALE] * gh_cell_mass(u, p[GH_P_SIGMA_COL]) * gh_cell_mass(w, p[GH_P_SIGMA_ROW]));
    }
    T value = T(p[GH_P_SCALE]) * gh_gaussian<T>(p, u, w);
    if (normalize == GH_NORMALIZE_COUNT) value = T(double(value) / count_sum);
    return value;
}

// One output pixel: `pixel` is the flat index into (n_images, height, width); `current` is the
// value to combine with (0, or the output's value when accumulating). Walks the CSR kernel list
// of the pixel's tile (tiles ordered image, tile row, tile column).
template <typename T>
GH_DEVICE T gh_render_pixel(long long pixel, T current, const double* params, const long long* boxes,
                            const long long* tile_offsets, const long long* kernel_ids, const double* count_sums,
                            long long height, long long width, long long tile_height, long long tile_width,
                            int combine, int normalize) {
    long long col = pixel % width;
    long long row = (pixel / width) % height;
    long long image = pixel / (width * height);
    long long tile_rows = (height + tile_height - 1) / tile_height;
    long long tile_cols = (width + tile_width - 1) / tile_width;
    long long tile = (image * tile_rows + row / tile_height) * tile_cols + col / tile_width;
    for (long long j = tile_offsets[tile]; j < tile_offsets[tile + 1]; ++j) {
        long long k = kernel_ids[j];
        const long long* box = boxes + k * GH_N_BOX;
        if (col < box[GH_B_COL0] || col > box[GH_B_COL1] || row < box[GH_B_ROW0] || row > box[GH_B_ROW1]) continue;
        // count_sums has one entry per kernel in count mode only (else a 1-element placeholder).
        double count_sum = normalize == GH_NORMALIZE_COUNT ? count_sums[k] : 1.0;
        T value = gh_kernel_value<T>(params + k * GH_N_PARAMS, row, col, normalize, count_sum);
        current = gh_combine<T>(current, value, combine);
    }
    return current;
}

// count: the float64 sum of g over kernel k's box. Separable for axis-aligned kernels.
GH_DEVICE double gh_count_sum(const double* params, const long long* boxes, long long k) {
    const double* p = params + k * GH_N_PARAMS;
    const long long* box = boxes + k * GH_N_BOX;
    if (p[GH_P_B] == 0.0) {
        double sum_cols = 0.0, sum_rows = 0.0;
        for (long long c = box[GH_B_COL0]; c <= box[GH_B_COL1]; ++c) {
            double u = double(c) - p[GH_P_CX];
            sum_cols += exp(-0.5 * (p[GH_P_A] * u * u - p[GH_P_SHIFT_COL]));
        }
        for (long long r = box[GH_B_ROW0]; r <= box[GH_B_ROW1]; ++r) {
            double w = double(r) - p[GH_P_CY];
            sum_rows += exp(-0.5 * (p[GH_P_C] * w * w - p[GH_P_SHIFT_ROW]));
        }
        return sum_cols * sum_rows;
    }
    double sum = 0.0;
    for (long long r = box[GH_B_ROW0]; r <= box[GH_B_ROW1]; ++r) {
        for (long long c = box[GH_B_COL0]; c <= box[GH_B_COL1]; ++c) {
            sum += gh_gaussian<double>(p, double(c) - p[GH_P_CX], double(r) - p[GH_P_CY]);
        }
    }
    return sum;
}

#endif  // GAUSSHEAT_CUH
