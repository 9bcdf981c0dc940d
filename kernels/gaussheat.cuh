// gaussheat_gpu device code: planning on the device, tile binning, per-kernel values, combine
// operators and the per-pixel loop of the CuPy backend.
//
// Compiled by NVRTC for the CuPy backend (as the preamble of an ElementwiseKernel) and, in the
// tests, by a host C++ compiler, so that the same code is checked pixel by pixel against the
// NumPy reference on machines without a GPU.
//
// Tables (row-major, one row per caller's kernel k; gaussheat_gpu/backends/cupy/planning.py
// allocates them and tests/test_cuda_sources.py checks the layout against planning.py):
//   params (GH_N_PARAMS float64)  the host plan's coefficients (planning.py's P_* columns), bit for
//                                 bit where planning.py requires it (the plan kernel is compiled
//                                 with --fmad=false): the float64 evaluation reads them.
//   fast   (GH_N_FAST float32)    the float32 evaluation's coefficients: the centre split into an
//                                 integer pixel (in `ibox`) and a fraction, the whitening matrix M
//                                 with q = |M (u, w)|^2 in the kernel's own frame, scale, shift/2.
//   ibox   (GH_N_IBOX int32)      support box (inclusive, clipped to the image), image, the integer
//                                 part of the centre.
//
// Variant switches are compile-time macros set in the preamble by the backend (see
// gaussheat_gpu/cuda_sources.py): GH_COMBINE, GH_NORMALIZE, GH_EVAL64 for the render kernel.
//
// In CuPy's generated module this header is the preamble, after `typedef <output type> T;`: the
// template parameters named T below hide that typedef, so the functions never depend on it.

#ifndef GAUSSHEAT_CUH
#define GAUSSHEAT_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GH_DEVICE __device__ __forceinline__
#define GH_NO_UNROLL _Pragma("unroll 1")
#else
#define GH_NO_UNROLL
#include <cmath>
#define GH_DEVICE inline
using std::ceil;
using std::cos;
using std::erf;
using std::erfc;
using std::exp;
using std::fabs;
using std::floor;
using std::fmax;
using std::fmin;
using std::rint;
using std::sin;
using std::sqrt;
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

// ibox columns: the first five are planning.py's B_* columns (as int32), then the centre's integer part.
#define GH_I_CENTRE_COL 5
#define GH_I_CENTRE_ROW 6
#define GH_N_IBOX 8

// fast columns (float32): two float4 loads per visit. M is the whitening matrix scaled by
// sqrt(log2(e)/2), so that a value is SCALE * exp2(-|M d|^2); SCALE holds exp(shift/2) (count).
#define GH_F_FRAC_COL 0
#define GH_F_FRAC_ROW 1
#define GH_F_M00 2
#define GH_F_M01 3
#define GH_F_M10 4
#define GH_F_M11 5
#define GH_F_SCALE 6
#define GH_N_FAST 8
#define GH_SQRT_HALF_LOG2E 0.84932180028801904272

// Per-kernel summary row (int64), reduced by a column-wise min on the device and read by the host
// in the call's one synchronisation.
#define GH_S_ERROR 0     // check * n_kernels + k for the first failed check (image, integral, por), else max
#define GH_S_NEEDS64 1   // -1: the float32 evaluation cannot hold this kernel's numbers
#define GH_S_ROTATED 2   // -1: a kept kernel with B != 0
#define GH_N_SUMMARY 3
#define GH_NO_ERROR 9223372036854775807LL

// Square tiles of the render kernel: one 256-thread block per tile, a warp = two tile rows.
#define GH_TILE_SHIFT 4
#define GH_TILE 16
#define GH_TILE_PIXELS 256

// Codes of planning.COMBINES and planning.NORMALIZES, in that order.
#define GH_COMBINE_SUM 0
#define GH_COMBINE_MAX 1
#define GH_COMBINE_POR 2
#define GH_NORMALIZE_PDF 0
#define GH_NORMALIZE_PEAK 1
#define GH_NORMALIZE_INTEGRAL 2
#define GH_NORMALIZE_COUNT 3

// Limits of the float32 evaluation: past them a kernel is evaluated in float64 (GH_S_NEEDS64).
#define GH_FAST_MAX_CENTRE 8388608.0  // 2^23: integer centres and pixel offsets exact in float32
#define GH_FAST_MAX_COEF 1e18         // whitening coefficients and scales far from float32's range ends
#define GH_FAST_MIN_COEF 1e-18
#define GH_FAST_MAX_SCALE 1e30
#define GH_FAST_MIN_SCALE 1e-30
#define GH_MAX_ROTATED_REACH2 1e12     // planning.MAX_ROTATED_REACH squared
#define GH_LATTICE_GAP 600.0           // planning.LATTICE_GAP
#define GH_FAST_MAX_SHIFT 16.0        // count: SCALE carries exp(shift/2); q and shift both large lose digits

// Float32 outputs evaluated in float64 take the exponential in float32 (fast expf) of an argument
// formed in float64: far in a tail (q ~ 100) the float32 rounding of q alone would cost ~1e-5.
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

// Float64 evaluation of kernel p at pixel (row, col); count_sum is the kernel's sum of g (count
// mode only). The scale multiplies in float64 and rounds once to T (a float32 SCALE may overflow).
template <typename T>
GH_DEVICE T gh_kernel_value(const double* p, int row, int col, int normalize, double count_sum) {
    double u = double(col) - p[GH_P_CX];
    double w = double(row) - p[GH_P_CY];
    if (normalize == GH_NORMALIZE_INTEGRAL) {
        return T(p[GH_P_SCALE] * gh_cell_mass(u, p[GH_P_SIGMA_COL]) * gh_cell_mass(w, p[GH_P_SIGMA_ROW]));
    }
    double value = p[GH_P_SCALE] * double(gh_gaussian<T>(p, u, w));
    if (normalize == GH_NORMALIZE_COUNT) value = value / count_sum;
    return T(value);
}

// The float32 evaluation (gh_render_pixel, EVAL64 false) forms u, w relative to the integer-split
// centre (exact integer differences, one rounding for the fraction) and the quadratic as |M d|^2 in
// the kernel's own frame: every operand is float32, no float64 instruction runs.

// -- planning -------------------------------------------------------------------------------------

// Inclusive pixel range ceil(c - r) .. floor(c + r) clipped to [0, size - 1], as planning.support_range
// (same operations, so the same bits: the plan kernel is compiled with --fmad=false).
GH_DEVICE void gh_support_range(double centre, double radius, long long size, int* lo, int* hi) {
    *lo = int(fmin(fmax(ceil(centre - radius), 0.0), double(size)));
    *hi = int(fmin(fmax(floor(centre + radius), -1.0), double(size - 1)));
}

// Minimum of a*u^2 + 2b*u*w + c*w^2 (positive definite) over [u0, u1] x [w0, w1] (planning.py's
// _quadratic_min_on_rectangle).
GH_DEVICE double gh_quadratic_min(double a, double b, double c, double u0, double u1, double w0, double w1) {
    if (u0 <= 0 && u1 >= 0 && w0 <= 0 && w1 >= 0) return 0.0;
    double best = 0.0;
    for (int e = 0; e < 2; ++e) {
        double we = e == 0 ? w0 : w1;
        double u = fmin(fmax(-b * we / a, u0), u1);
        double on_row = a * u * u + 2 * b * u * we + c * we * we;
        best = e == 0 ? on_row : fmin(best, on_row);
        double ue = e == 0 ? u0 : u1;
        double w = fmin(fmax(-b * ue / c, w0), w1);
        best = fmin(best, a * ue * ue + 2 * b * ue * w + c * w * w);
    }
    return fmax(best, 0.0);
}

// Minimum of the exponent over the box's pixel centres, row by row (planning.py's _lattice_min): in each
// row q is a parabola in the column, lowest at one of the two columns around its vertex.
GH_DEVICE double gh_lattice_min(double cx, double cy, double a, double b, double c, int c0, int c1, int r0, int r1) {
    double best = 0.0;
    for (int row = r0; row <= r1; ++row) {
        double w = double(row) - cy;
        double vertex = cx - b * w / a;
        for (int side = 0; side < 2; ++side) {
            double col = side == 0 ? floor(vertex) : ceil(vertex);
            double u = fmin(fmax(col, double(c0)), double(c1)) - cx;
            double q = a * u * u + 2.0 * b * u * w + c * w * w;
            best = row == r0 && side == 0 ? q : fmin(best, q);
        }
    }
    return best;
}

// Whether a nonzero value's magnitude lies outside [lo, hi].
GH_DEVICE bool gh_outside(double value, double lo, double hi) {
    double m = fabs(value);
    return m != 0.0 && (m < lo || m > hi);
}

// Grid geometry and modes of one call, as the plan kernel reads them.
struct GhGrid {
    double x0, dx, y0, dy;
    long long height, width, n_images, tile_rows, tile_cols;
    int combine, normalize;
};

// Plan kernel k: planning.py's kernel_coefficients / support_range / checks for one kernel, plus the
// float32 coefficients, the count normaliser of axis-aligned kernels, its tile count and summary row.
GH_DEVICE void gh_plan_kernel(long long k, long long n, double x, double y, double sigma_x, double sigma_y,
                              double cos_t, double sin_t, double amplitude, long long image, double truncate,
                              const GhGrid& g, double* params, float* fast, int* ibox, long long* tiles,
                              long long* summary, double* count_sums) {
    // kernel_coefficients, operation for operation.
    double cos2 = cos_t * cos_t, sin2 = sin_t * sin_t, cos_sin = cos_t * sin_t;
    double sx2 = sigma_x * sigma_x, sy2 = sigma_y * sigma_y;
    double a = (cos2 / sx2 + sin2 / sy2) * (g.dx * g.dx);
    double b = cos_sin * (1.0 / sx2 - 1.0 / sy2) * (g.dx * g.dy);
    double c = (sin2 / sx2 + cos2 / sy2) * (g.dy * g.dy);
    double sigma_col = sqrt(cos2 * sx2 + sin2 * sy2) * (1.0 / fabs(g.dx));
    double sigma_row = sqrt(sin2 * sx2 + cos2 * sy2) * (1.0 / fabs(g.dy));
    double cx = (x - g.x0) / g.dx;
    double cy = (y - g.y0) / g.dy;
    const double two_pi = 6.283185307179586;  // 2.0 * math.pi, as the host multiplies it
    double scale = g.normalize == GH_NORMALIZE_PDF ? amplitude / (two_pi * sigma_x * sigma_y) : amplitude;

    int c0, c1, r0, r1;
    gh_support_range(cx, truncate * sigma_col, g.width, &c0, &c1);
    gh_support_range(cy, truncate * sigma_row, g.height, &r0, &r1);
    bool kept = c0 <= c1 && r0 <= r1;

    // Checks, first failure in planning.py's order: image, integral of a rotated kernel, por, the reach
    // of a rotated kernel's box (planning.check_rotated_reach).
    long long error = GH_NO_ERROR;
    if (kept && b != 0.0) {
        double half_gap = 0.5 * (a - c);
        double lam = 0.5 * (a + c) + sqrt(half_gap * half_gap + b * b);
        double du = fmax(fabs(double(c0) - cx), fabs(double(c1) - cx));
        double dw = fmax(fabs(double(r0) - cy), fabs(double(r1) - cy));
        if (!((du * du + dw * dw) * lam <= GH_MAX_ROTATED_REACH2)) error = 3 * n + k;
    }
    double peak = g.normalize <= GH_NORMALIZE_PEAK ? scale : amplitude;
    if (g.combine == GH_COMBINE_POR && (amplitude < 0 || peak > 1.0)) error = 2 * n + k;
    if (g.normalize == GH_NORMALIZE_INTEGRAL && b != 0.0) error = n + k;
    if (image < 0 || image >= g.n_images) error = k;

    double shift_col = 0.0, shift_row = 0.0, count_sum = 1.0;
    if (g.normalize == GH_NORMALIZE_COUNT && kept) {
        double u0 = double(c0) - cx, u1 = double(c1) - cx, w0 = double(r0) - cy, w1 = double(r1) - cy;
        if (b == 0.0) {
            double u_near = fmin(fmax(rint(cx), double(c0)), double(c1)) - cx;
            double w_near = fmin(fmax(rint(cy), double(r0)), double(r1)) - cy;
            shift_col = a * u_near * u_near;
            shift_row = c * w_near * w_near;
            double sum_cols = 0.0, sum_rows = 0.0;
            for (int col = c0; col <= c1; ++col) {
                double u = double(col) - cx;
                sum_cols += exp(-0.5 * (a * u * u - shift_col));
            }
            for (int row = r0; row <= r1; ++row) {
                double w = double(row) - cy;
                sum_rows += exp(-0.5 * (c * w * w - shift_row));
            }
            count_sum = sum_cols * sum_rows;
        } else {
            shift_col = gh_quadratic_min(a, b, c, u0, u1, w0, w1);
            // Thin kernels between pixel centres: the rectangle's minimum can lie far below every pixel's.
            double half_trace = 0.5 * (a + c);
            if (2.0 * sqrt(shift_col * half_trace) + half_trace > GH_LATTICE_GAP) {
                shift_col = gh_lattice_min(cx, cy, a, b, c, c0, c1, r0, r1);
            }
            count_sum = 0.0;  // summed by the count pass
        }
        count_sums[k] = count_sum;
    }

    double* p = params + k * GH_N_PARAMS;
    p[GH_P_CX] = cx;
    p[GH_P_CY] = cy;
    p[GH_P_A] = a;
    p[GH_P_B] = b;
    p[GH_P_C] = c;
    p[GH_P_SIGMA_COL] = sigma_col;
    p[GH_P_SIGMA_ROW] = sigma_row;
    p[GH_P_SCALE] = scale;
    p[GH_P_SHIFT_COL] = shift_col;
    p[GH_P_SHIFT_ROW] = shift_row;

    // Float32 coefficients: whitening matrix of the pixel-unit offsets (u dx, w dy) in the kernel frame.
    double m00 = cos_t * g.dx / sigma_x, m01 = sin_t * g.dy / sigma_x;
    double m10 = -sin_t * g.dx / sigma_y, m11 = cos_t * g.dy / sigma_y;
    bool centre_ok = fabs(cx) < GH_FAST_MAX_CENTRE && fabs(cy) < GH_FAST_MAX_CENTRE;
    double centre_col = centre_ok ? floor(cx) : 0.0, centre_row = centre_ok ? floor(cy) : 0.0;
    double shift = shift_col + shift_row;
    double fast_scale = scale * exp(0.5 * shift);
    if (g.normalize == GH_NORMALIZE_COUNT && b == 0.0) fast_scale = fast_scale / count_sum;
    bool needs64 = !centre_ok || shift > GH_FAST_MAX_SHIFT || gh_outside(m00, GH_FAST_MIN_COEF, GH_FAST_MAX_COEF) ||
                   gh_outside(m01, GH_FAST_MIN_COEF, GH_FAST_MAX_COEF) ||
                   gh_outside(m10, GH_FAST_MIN_COEF, GH_FAST_MAX_COEF) ||
                   gh_outside(m11, GH_FAST_MIN_COEF, GH_FAST_MAX_COEF) ||
                   gh_outside(fast_scale, GH_FAST_MIN_SCALE, GH_FAST_MAX_SCALE);
    float* f = fast + k * GH_N_FAST;
    f[GH_F_FRAC_COL] = float(cx - centre_col);
    f[GH_F_FRAC_ROW] = float(cy - centre_row);
    f[GH_F_M00] = float(m00 * GH_SQRT_HALF_LOG2E);
    f[GH_F_M01] = float(m01 * GH_SQRT_HALF_LOG2E);
    f[GH_F_M10] = float(m10 * GH_SQRT_HALF_LOG2E);
    f[GH_F_M11] = float(m11 * GH_SQRT_HALF_LOG2E);
    f[GH_F_SCALE] = float(fast_scale);
    f[7] = 0.0f;

    int* box = ibox + k * GH_N_IBOX;
    box[GH_B_COL0] = c0;
    box[GH_B_COL1] = c1;
    box[GH_B_ROW0] = r0;
    box[GH_B_ROW1] = r1;
    box[GH_B_IMAGE] = int(image);
    box[GH_I_CENTRE_COL] = int(centre_col);
    box[GH_I_CENTRE_ROW] = int(centre_row);
    box[7] = 0;

    tiles[k] = kept ? (long long)((r1 >> GH_TILE_SHIFT) - (r0 >> GH_TILE_SHIFT) + 1) *
                          ((c1 >> GH_TILE_SHIFT) - (c0 >> GH_TILE_SHIFT) + 1)
                    : 0;
    long long* s = summary + k * GH_N_SUMMARY;
    s[GH_S_ERROR] = error;
    s[GH_S_NEEDS64] = kept && needs64 ? -1 : 0;
    s[GH_S_ROTATED] = kept && b != 0.0 ? -1 : 0;
}

// Row k of a host plan (planning.py's int64 boxes): the int32 box table and the tile count.
GH_DEVICE void gh_plan_row(long long k, const long long* boxes, int* ibox, long long* tiles) {
    const long long* b = boxes + k * GH_N_BOX;
    int* box = ibox + k * GH_N_IBOX;
    for (int j = 0; j < GH_N_BOX; ++j) box[j] = int(b[j]);
    box[GH_I_CENTRE_COL] = 0;  // read by the float32 evaluation only
    box[GH_I_CENTRE_ROW] = 0;
    box[7] = 0;
    bool kept = b[GH_B_COL0] <= b[GH_B_COL1] && b[GH_B_ROW0] <= b[GH_B_ROW1];
    tiles[k] = kept ? ((b[GH_B_ROW1] >> GH_TILE_SHIFT) - (b[GH_B_ROW0] >> GH_TILE_SHIFT) + 1) *
                          ((b[GH_B_COL1] >> GH_TILE_SHIFT) - (b[GH_B_COL0] >> GH_TILE_SHIFT) + 1)
                    : 0;
}

// Count pass for rotated kernels: lane `lane` (of GH_COUNT_LANES) of kernel k sums g over the box
// pixels p = lane, lane + GH_COUNT_LANES, ... (row-major in the box); the bin pass adds the lanes in
// a fixed order, so the sum is the same on every run.
#define GH_COUNT_LANES 32
GH_DEVICE double gh_count_lane(const double* params, const int* ibox, long long k, int lane) {
    const double* p = params + k * GH_N_PARAMS;
    const int* box = ibox + k * GH_N_IBOX;
    if (p[GH_P_B] == 0.0 || box[GH_B_COL0] > box[GH_B_COL1] || box[GH_B_ROW0] > box[GH_B_ROW1]) return 0.0;
    long long width = box[GH_B_COL1] - box[GH_B_COL0] + 1;
    long long area = width * (box[GH_B_ROW1] - box[GH_B_ROW0] + 1);
    double sum = 0.0;
    for (long long pix = lane; pix < area; pix += GH_COUNT_LANES) {
        int row = box[GH_B_ROW0] + int(pix / width), col = box[GH_B_COL0] + int(pix % width);
        sum += gh_gaussian<double>(p, double(col) - p[GH_P_CX], double(row) - p[GH_P_CY]);
    }
    return sum;
}

// Bin kernel k: write its tile keys and ids from `first` (its exclusive prefix of tile counts) and, in
// count mode, finish the normaliser of a rotated kernel from its count lanes.
GH_DEVICE void gh_bin_kernel(long long k, long long first, const int* ibox, long long tile_rows, long long tile_cols,
                             int* keys, int* ids, const double* lanes, int count_mode, const double* params,
                             float* fast, double* count_sums) {
    const int* box = ibox + k * GH_N_IBOX;
    if (box[GH_B_COL0] > box[GH_B_COL1] || box[GH_B_ROW0] > box[GH_B_ROW1]) return;
    if (count_mode && params[k * GH_N_PARAMS + GH_P_B] != 0.0) {
        double sum = 0.0;
        for (int lane = 0; lane < GH_COUNT_LANES; ++lane) sum += lanes[k * GH_COUNT_LANES + lane];
        count_sums[k] = sum;
        const double* p = params + k * GH_N_PARAMS;
        fast[k * GH_N_FAST + GH_F_SCALE] = float(p[GH_P_SCALE] * exp(0.5 * (p[GH_P_SHIFT_COL] + p[GH_P_SHIFT_ROW])) / sum);
    }
    long long entry = first;
    for (int tr = box[GH_B_ROW0] >> GH_TILE_SHIFT; tr <= box[GH_B_ROW1] >> GH_TILE_SHIFT; ++tr) {
        for (int tc = box[GH_B_COL0] >> GH_TILE_SHIFT; tc <= box[GH_B_COL1] >> GH_TILE_SHIFT; ++tc) {
            keys[entry] = int((box[GH_B_IMAGE] * tile_rows + tr) * tile_cols + tc);
            ids[entry] = int(k);
            ++entry;
        }
    }
}

// Entry j of the sorted tile list: its kernel id, and the CSR offsets of the tiles that start here.
GH_DEVICE void gh_finish_bins(long long j, long long n_entries, long long n_tiles, const long long* order,
                              const int* keys, const int* ids, int* kernel_ids, int* offsets) {
    long long e = order[j];
    kernel_ids[j] = ids[e];
    long long tile = keys[e];
    long long previous = j > 0 ? keys[order[j - 1]] : -1;
    for (long long t = previous + 1; t <= tile; ++t) offsets[t] = int(j);
    if (j == n_entries - 1) {
        for (long long t = tile + 1; t <= n_tiles; ++t) offsets[t] = int(n_entries);
    }
}

// -- rendering ------------------------------------------------------------------------------------

// Where thread `i` of the render kernel writes: tile i >> 8 (tiles ordered image, tile row, tile
// column), pixel i & 255 in it. Returns false for the pixels of edge tiles outside the image.
GH_DEVICE bool gh_tile_pixel(long long i, int tile_rows, int tile_cols, int height, int width, int* tile,
                             int* image, int* row, int* col) {
    int t = int(i >> 8), local = int(i & (GH_TILE_PIXELS - 1));
    int per_image = tile_rows * tile_cols;
    *image = t / per_image;
    int rest = t - *image * per_image;
    int tile_row = rest / tile_cols;
    *row = (tile_row << GH_TILE_SHIFT) + (local >> GH_TILE_SHIFT);
    *col = ((rest - tile_row * tile_cols) << GH_TILE_SHIFT) + (local & (GH_TILE - 1));
    *tile = t;
    return *row < height && *col < width;
}

// One output pixel of tile `tile`: combine `current` with every kernel of the tile's list whose box
// holds the pixel. COMBINE and NORMALIZE are compile-time constants; EVAL64 selects the float64
// evaluation (float64 outputs, integral, and kernels past the float32 limits).
// 16-byte halves of table rows, read with one 128-bit load each (the tables are 256-byte aligned, rows 32 bytes).
struct alignas(16) GhInt4 {
    int x, y, z, w;
};
struct alignas(16) GhFloat4 {
    float x, y, z, w;
};

template <typename T, int COMBINE, int NORMALIZE, bool EVAL64>
GH_DEVICE T gh_render_pixel(T current, int tile, int row, int col, const int* offsets, const int* kernel_ids,
                            const int* ibox, const float* fast, const double* params, const double* count_sums) {
    const int end = offsets[tile + 1];
    GH_NO_UNROLL
    for (int j = offsets[tile]; j < end; ++j) {
        int k = kernel_ids[j];
        const GhInt4 box = reinterpret_cast<const GhInt4*>(ibox)[2 * (long long)k];
        // One test for the four edges: no branch per edge.
        if ((col < box.x) | (col > box.y) | (row < box.z) | (row > box.w)) continue;
        T value;
        if (EVAL64) {
            double count_sum = NORMALIZE == GH_NORMALIZE_COUNT ? count_sums[k] : 1.0;
            value = gh_kernel_value<T>(params + (long long)k * GH_N_PARAMS, row, col, NORMALIZE, count_sum);
        } else {
            const GhInt4 centre = reinterpret_cast<const GhInt4*>(ibox)[2 * (long long)k + 1];
            const GhFloat4 a = reinterpret_cast<const GhFloat4*>(fast)[2 * (long long)k];
            const GhFloat4 b = reinterpret_cast<const GhFloat4*>(fast)[2 * (long long)k + 1];
            float u = float(col - centre.y) - a.x;  // centre.y, .z: the ibox columns GH_I_CENTRE_*
            float w = float(row - centre.z) - a.y;
            float z1 = a.z * u + a.w * w;
            float z2 = b.x * u + b.y * w;
            value = T(b.z * exp2f(-(z1 * z1 + z2 * z2)));
        }
        current = gh_combine<T>(current, value, COMBINE);
    }
    return current;
}

// Dense path (axis-aligned sums): factor i of the rank-K product out = rows @ cols, with rows (H, K)
// then cols (K, W) in one flat index. Zero outside each kernel's box, so the product has exactly the
// tiled path's support; the kernel's scale (and count normaliser) goes into its row factor.
template <typename T>
GH_DEVICE T gh_dense_factor(long long i, long long n, long long height, long long width, const double* params,
                            const int* ibox, int normalize, const double* count_sums) {
    bool is_row = i < height * n;
    long long j = is_row ? i : i - height * n;
    long long k = is_row ? j % n : j / width;
    int pixel = int(is_row ? j / n : j % width);
    const double* p = params + k * GH_N_PARAMS;
    const int* box = ibox + k * GH_N_IBOX;
    if (box[GH_B_COL0] > box[GH_B_COL1] || box[GH_B_ROW0] > box[GH_B_ROW1]) return T(0);
    if (is_row) {
        if (pixel < box[GH_B_ROW0] || pixel > box[GH_B_ROW1]) return T(0);
        double w = double(pixel) - p[GH_P_CY];
        double scale = normalize == GH_NORMALIZE_COUNT ? p[GH_P_SCALE] / count_sums[k] : p[GH_P_SCALE];
        return T(scale * exp(-0.5 * (p[GH_P_C] * w * w - p[GH_P_SHIFT_ROW])));
    }
    if (pixel < box[GH_B_COL0] || pixel > box[GH_B_COL1]) return T(0);
    double u = double(pixel) - p[GH_P_CX];
    return T(exp(-0.5 * (p[GH_P_A] * u * u - p[GH_P_SHIFT_COL])));
}

#endif  // GAUSSHEAT_CUH
