// gpualign host (CPU) warp primitives, compiled into libgpualign_host.so by the wheel
// build (kernels/hatch_build.py) and called through ctypes by gpualign/_backend/_host.py:
// the per-pixel spline sampling of gpualign_warp.cuh (what the CUDA kernels run) and
// the B-spline prefilter.
//
// sample_mirror<ORDER> follows scipy's ni_interpolation.c operation for operation
// (coordinate mirroring, first tap, weights, summation order), so the values equal
// scipy.ndimage.map_coordinates(img, coords, order, mode="mirror", prefilter=False,
// output=float32) bit for bit (tests/warp/test_host_warp.py); it only does less
// generic work per pixel.
//
// The prefilter is the recursive B-spline filter of Unser, Aldroubi & Eden (1991,
// IEEE PAMI 13, 277) with mirror boundaries, run as scipy.ndimage.spline_filter1d
// runs it (ni_splines.c): each line copied to float64, multiplied by the gain, then
// per pole a causal pass started from the full mirror sum and an anticausal pass,
// and cast back to float32, with the same operations in the same order, so that the
// result equals spline_filter1d(..., mode="mirror", output=float32) bit for bit.
// Lines are filtered as the lanes of blocks of 16 adjacent rows or columns (8 for
// long lines), whose float64 buffer stays in L2: each lane sees the same operation
// sequence as a lone line; the block only makes the reads contiguous and, on AVX2
// CPUs, runs four lanes per vector instruction (host_prefilter_simd.h).
//
// Build without value-changing optimisations: no -ffast-math (no flush-to-zero:
// the mirror sum runs through subnormal powers of the pole), and -ffp-contract=off
// so that no multiply-add is fused.
//
// Entry points (C linkage):
//   int ga_host_sample(const float* img, long long h, long long w,
//                      const double* coords, long long rows, long long cols,
//                      int order, float* out, long long out_stride)
//     img: C-contiguous float32 image [h, w] (the prefiltered coefficients);
//     coords: C-contiguous float64 [2, rows, cols], coords[0] = sy, coords[1] = sx;
//     out: float32 rows of `cols` values, `out_stride` elements apart.
//   Returns 0, or -1 for an order outside 0..5 (nothing written).
//   int ga_host_prefilter_rows(float* img, long long h, long long w,
//                              long long row0, long long row1, int order)
//   int ga_host_prefilter_cols(float* img, long long h, long long w,
//                              long long col0, long long col1, int order)
//     Filter rows [row0, row1) along axis 1, or columns [col0, col1) along axis 0,
//     of the C-contiguous float32 image in place, for spline order 2..5 (orders 0
//     and 1 need no filter: nothing is done). Return 0, -1 for a bad order or
//     range, -2 when memory for the float64 buffer cannot be had (nothing written).
//   int ga_host_add_linear(double* out, long long rows, long long cols,
//                          const double* ax, const double* by, int has_surface,
//                          double* bounds)
//     out[r, c] = (out[r, c] + ax[c]) + by[r] (has_surface), else ax[c] + by[r]: the
//     linear part of a Transform added to its surfaces as source_coords adds it
//     (same operations, same order), in one pass; bounds = {min, max} of the
//     results, both NaN when any result is NaN. Returns 0.
//   ga_host_abi() returns the version of this interface.
#include <cmath>
#include <cstdlib>

#include "gpualign_warp.cuh"
#include "host_simd.h"
#include "host_prefilter_simd.h"

namespace {

// Whether this CPU runs the AVX2 path of host_simd.h (checked once, at run time, so
// one build serves every x86-64 CPU); GA_HOST_SIMD=0 in the environment turns it off.
bool use_simd() {
#ifdef GA_HAVE_AVX2_PATH
    static const bool on = [] {
        const char* env = std::getenv("GA_HOST_SIMD");
        if (env && env[0] == '0') return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return on;
#else
    return false;
#endif
}

// Most bytes of float64 line buffer one block of the prefilter may use (it should
// stay in L2).
constexpr long long SIMD_BUFFER_BYTES = 768 << 10;

template <int ORDER>
void sample_rows(const float* img, long long h, long long w, const double* sy,
                 const double* sx, long long rows, long long cols, float* out,
                 long long out_stride) {
#ifdef GA_HAVE_AVX2_PATH
    if (ORDER > 0 && use_simd()) {
        for (long long r = 0; r < rows; ++r)
            gpualign_simd::sample_row_avx2<ORDER>(img, h, w, sy + r * cols, sx + r * cols,
                                                  cols, out + r * out_stride);
        return;
    }
#endif
    for (long long r = 0; r < rows; ++r) {
        const double* ry = sy + r * cols;
        const double* rx = sx + r * cols;
        float* o = out + r * out_stride;
        for (long long c = 0; c < cols; ++c) {
            o[c] = (float)gpualign::sample_mirror<ORDER>(img, h, w, ry[c], rx[c]);
        }
    }
}

// Poles of the B-spline prefilter (ni_splines.c get_filter_poles).
int filter_poles(int order, double* poles) {
    switch (order) {
        case 2: poles[0] = -0.171572875253809902396622551580603843; return 1;
        case 3: poles[0] = -0.267949192431122706472553658494127633; return 1;
        case 4:
            poles[0] = -0.361341225900220177092212841325675255;
            poles[1] = -0.013725429297339121360331226939128204;
            return 2;
        case 5:
            poles[0] = -0.430575347099973791851434783493520110;
            poles[1] = -0.043096288203264653822712376822550182;
            return 2;
        default: return 0;
    }
}

// The filter's gain, prod_p (1 - z_p) (1 - 1 / z_p) (ni_splines.c apply_filter).
double filter_gain(const double* poles, int npoles) {
    double gain = 1.0;
    for (int p = 0; p < npoles; ++p) gain *= (1.0 - poles[p]) * (1.0 - 1.0 / poles[p]);
    return gain;
}

// Filter `lanes` interleaved lines of length n in place: c[i * lanes + l] is sample i
// of line l. Every lane goes through exactly the scalar sequence of one line.
void filter_lines(double* c, long long n, long long lanes, const double* poles,
                  int npoles) {
    if (n <= 1) return;  // scipy leaves lines of one sample alone
    const double gain = filter_gain(poles, npoles);
    for (long long i = 0; i < n * lanes; ++i) c[i] *= gain;
    double* first = c;
    double* last = c + (n - 1) * lanes;
    for (int p = 0; p < npoles; ++p) {
        const double z = poles[p];
        // Causal start: the mirror-extended sum (init_causal_mirror).
        const double z_n_1 = std::pow(z, (double)(n - 1));
        for (long long l = 0; l < lanes; ++l) first[l] = first[l] + z_n_1 * last[l];
        double z_i = z;
        for (long long i = 1; i < n - 1; ++i) {
            const double* ci = c + i * lanes;
            const double* cm = c + (n - 1 - i) * lanes;
            for (long long l = 0; l < lanes; ++l) first[l] += z_i * (ci[l] + z_n_1 * cm[l]);
            z_i *= z;
        }
        for (long long l = 0; l < lanes; ++l) first[l] /= 1 - z_n_1 * z_n_1;
        for (long long i = 1; i < n; ++i) {
            double* ci = c + i * lanes;
            const double* cp = ci - lanes;
            for (long long l = 0; l < lanes; ++l) ci[l] += z * cp[l];
        }
        // Anticausal start and pass (init_anticausal_mirror).
        const double* pen = c + (n - 2) * lanes;
        for (long long l = 0; l < lanes; ++l) last[l] = (z * pen[l] + last[l]) * z / (z * z - 1);
        for (long long i = n - 2; i >= 0; --i) {
            double* ci = c + i * lanes;
            const double* cn = ci + lanes;
            for (long long l = 0; l < lanes; ++l) ci[l] = z * (cn[l] - ci[l]);
        }
    }
}

// Lanes per block of the prefilter: 16 (one 64-byte line of float32 columns), or 8
// when the float64 buffer of 16 long lines would not stay in L2.
long long block_lanes(long long n) {
    return n * 16 * (long long)sizeof(double) <= SIMD_BUFFER_BYTES ? 16 : 8;
}

// Filter `lanes` lines (at most block_lanes(n)) of a float32 image in place through
// the float64 buffer `c` of n * block_lanes(n) doubles, 64-byte aligned: line l
// starts at base + l * lane_step and has n samples `step` apart (rows: step 1 and
// lane_step = width; columns: step = width and lane_step 1).
void filter_block(float* base, long long n, long long step, long long lanes,
                  long long lane_step, const double* poles, int npoles, double* c) {
#ifdef GA_HAVE_AVX2_PATH
    if (n >= 2 && lanes >= 4 && use_simd()) {
        // Groups of 16, 8 and 4 lanes; any 1-3 left take the scalar path below.
        const double gain = filter_gain(poles, npoles);
        long long l0 = 0;
        for (int v = 4; v >= 1; v /= 2) {
            for (; l0 + 4 * v <= lanes; l0 += 4 * v) {
                float* b = base + l0 * lane_step;
                if (v == 4)
                    gpualign_simd::filter_block_avx2<4>(b, n, step, lane_step, poles, npoles,
                                                        gain, c);
                else if (v == 2)
                    gpualign_simd::filter_block_avx2<2>(b, n, step, lane_step, poles, npoles,
                                                        gain, c);
                else
                    gpualign_simd::filter_block_avx2<1>(b, n, step, lane_step, poles, npoles,
                                                        gain, c);
            }
        }
        if (l0 == lanes) return;
        base += l0 * lane_step;
        lanes -= l0;
    }
#endif
    // Copy in and out along the image's contiguous direction (only the memory order
    // of the copies differs; every value and operation is the same).
    if (step == 1) {
        for (long long l = 0; l < lanes; ++l)
            for (long long i = 0; i < n; ++i) c[i * lanes + l] = (double)base[l * lane_step + i];
    } else {
        for (long long i = 0; i < n; ++i)
            for (long long l = 0; l < lanes; ++l) c[i * lanes + l] = (double)base[l + i * step];
    }
    filter_lines(c, n, lanes, poles, npoles);
    if (step == 1) {
        for (long long l = 0; l < lanes; ++l)
            for (long long i = 0; i < n; ++i) base[l * lane_step + i] = (float)c[i * lanes + l];
    } else {
        for (long long i = 0; i < n; ++i)
            for (long long l = 0; l < lanes; ++l) base[l + i * step] = (float)c[i * lanes + l];
    }
}

// Filter lines [first, end) of the image, block_lanes(n) at a time, through one
// buffer. Returns 0, or -2 when the buffer cannot be allocated (nothing written).
int filter_range(float* img, long long n, long long step, long long lane_step,
                 long long first, long long end, int order) {
    double poles[2];
    const int npoles = filter_poles(order, poles);
    if (n <= 0 || end <= first) return 0;
    const long long per = block_lanes(n);
    const size_t bytes = ((size_t)(n * per) * sizeof(double) + 63) / 64 * 64;
    double* c = (double*)std::aligned_alloc(64, bytes);
    if (!c) return -2;
    for (long long l0 = first; l0 < end; l0 += per) {
        const long long lanes = (end - l0) < per ? (end - l0) : per;
        filter_block(img + l0 * lane_step, n, step, lanes, lane_step, poles, npoles, c);
    }
    std::free(c);
    return 0;
}

}  // namespace

extern "C" {

int ga_host_abi(void) { return 4; }

// 1 when sampling and the prefilter take the AVX2 paths (host_simd.h,
// host_prefilter_simd.h) on this CPU, else 0.
int ga_host_simd(void) { return use_simd() ? 1 : 0; }

int ga_host_prefilter_rows(float* img, long long h, long long w, long long row0,
                           long long row1, int order) {
    if (order == 0 || order == 1) return 0;
    if (order < 0 || order > 5 || row0 < 0 || row1 > h || row0 > row1 || w < 0) return -1;
    // Rows are filtered a block at a time as interleaved lanes, so that the
    // recursions of different rows overlap instead of waiting on one another.
    return filter_range(img, w, 1, w, row0, row1, order);
}

int ga_host_prefilter_cols(float* img, long long h, long long w, long long col0,
                           long long col1, int order) {
    if (order == 0 || order == 1) return 0;
    if (order < 0 || order > 5 || col0 < 0 || col1 > w || col0 > col1 || h < 0) return -1;
    return filter_range(img, h, w, 1, col0, col1, order);
}

int ga_host_add_linear(double* out, long long rows, long long cols, const double* ax,
                       const double* by, int has_surface, double* bounds) {
#ifdef GA_HAVE_AVX2_PATH
    if (use_simd()) {
        gpualign_simd::add_linear_avx2(out, rows, cols, ax, by, has_surface != 0, bounds);
        return 0;
    }
#endif
    double lo = INFINITY, hi = -INFINITY;
    bool nan = false;
    for (long long r = 0; r < rows; ++r) {
        double* o = out + r * cols;
        const double b = by[r];
        for (long long c = 0; c < cols; ++c) {
            const double v = has_surface ? (o[c] + ax[c]) + b : ax[c] + b;
            o[c] = v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            nan |= v != v;
        }
    }
    bounds[0] = nan ? NAN : lo;
    bounds[1] = nan ? NAN : hi;
    return 0;
}

int ga_host_sample(const float* img, long long h, long long w, const double* coords,
                   long long rows, long long cols, int order, float* out,
                   long long out_stride) {
    const double* sy = coords;
    const double* sx = coords + rows * cols;
    switch (order) {
        case 0: sample_rows<0>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        case 1: sample_rows<1>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        case 2: sample_rows<2>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        case 3: sample_rows<3>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        case 4: sample_rows<4>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        case 5: sample_rows<5>(img, h, w, sy, sx, rows, cols, out, out_stride); break;
        default: return -1;
    }
    return 0;
}

}  // extern "C"
