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
// Columns are filtered as lanes of a block of adjacent columns (each lane sees the
// same operation sequence as a lone column; the block only makes the reads
// contiguous).
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
//   ga_host_abi() returns the version of this interface.
#include <cmath>
#include <cstdlib>

#include "gpualign_warp.cuh"
#include "host_simd.h"

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

// Filter `lanes` interleaved lines of length n in place: c[i * lanes + l] is sample i
// of line l. Every lane goes through exactly the scalar sequence of one line.
void filter_lines(double* c, long long n, long long lanes, const double* poles,
                  int npoles) {
    if (n <= 1) return;  // scipy leaves lines of one sample alone
    double gain = 1.0;
    for (int p = 0; p < npoles; ++p) gain *= (1.0 - poles[p]) * (1.0 - 1.0 / poles[p]);
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

// Filter `lanes` lines of a float32 image in place through a float64 buffer: line l
// starts at base + l * lane_step and has n samples `step` apart (rows: step 1 and
// lane_step = width; columns: step = width and lane_step 1). Returns 0, or -2 when the buffer cannot be allocated (nothing
// written).
int filter_block(float* base, long long n, long long step, long long lanes,
                 long long lane_step, int order) {
    double poles[2];
    const int npoles = filter_poles(order, poles);
    if (n <= 0 || lanes <= 0) return 0;
    double* c = (double*)std::malloc(sizeof(double) * (size_t)(n * lanes));
    if (!c) return -2;
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
    std::free(c);
    return 0;
}

}  // namespace

extern "C" {

int ga_host_abi(void) { return 3; }

// 1 when sampling takes the AVX2 path of host_simd.h on this CPU, else 0.
int ga_host_simd(void) { return use_simd() ? 1 : 0; }

int ga_host_prefilter_rows(float* img, long long h, long long w, long long row0,
                           long long row1, int order) {
    if (order == 0 || order == 1) return 0;
    if (order < 0 || order > 5 || row0 < 0 || row1 > h || row0 > row1 || w < 0) return -1;
    // Rows are filtered ROW_LANES at a time as interleaved lanes, so that the
    // recursions of different rows overlap instead of waiting on one another.
    const long long ROW_LANES = 16;
    for (long long r0 = row0; r0 < row1; r0 += ROW_LANES) {
        const long long lanes = (row1 - r0) < ROW_LANES ? (row1 - r0) : ROW_LANES;
        const int rc = filter_block(img + r0 * w, w, 1, lanes, w, order);
        if (rc) return rc;
    }
    return 0;
}

int ga_host_prefilter_cols(float* img, long long h, long long w, long long col0,
                           long long col1, int order) {
    if (order == 0 || order == 1) return 0;
    if (order < 0 || order > 5 || col0 < 0 || col1 > w || col0 > col1 || h < 0) return -1;
    return filter_block(img + col0, h, w, col1 - col0, 1, order);
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
