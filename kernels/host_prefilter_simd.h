// AVX2 B-spline prefilter of 4 * V lines at once, for the host warp (host_warp.cpp);
// and the one-pass addition of a transform's linear part (add_linear_avx2).
//
// The lines are the lanes of a float64 buffer c[i][lane] (sample i of every lane
// contiguous), as in host_warp.cpp's filter_lines, and every lane goes through the
// operations of filter_lines for one line in the same order (gain, mirror-sum start
// of the causal pass, causal pass, anticausal start and pass, per pole), in IEEE
// double with no fused multiply-add (the "avx2" target does not enable FMA and the
// library is built with -ffp-contract=off). Vector lanes never mix, so the values
// equal the scalar path's, and scipy.ndimage.spline_filter1d's (mode="mirror",
// float32 output), bit for bit (tests/warp/test_host_warp.py).
//
// What differs from the scalar path is only the memory traffic: the number of lanes
// is a compile-time constant (the arithmetic runs on V vectors held in registers),
// the gain is applied while the float32 samples are loaded, each recursion carries
// its previous value in registers instead of reloading it, and for columns the last
// anticausal pass stores float32 straight into the image. Rows (lanes = image rows)
// are loaded and stored through 4x4 transposes.
#pragma once

#ifdef GA_HAVE_AVX2_PATH
#include <immintrin.h>

#include <cmath>

namespace gpualign_simd {

// Filter 4 * V lines of n >= 2 samples of a float32 image in place through the
// float64 buffer `c` (n * 4 * V doubles, 32-byte aligned): line l starts at
// base + l * lane_step and has n samples `step` apart. Columns: step = w,
// lane_step = 1; rows: step = 1, lane_step = w.
template <int V>
__attribute__((target("avx2"))) void filter_block_avx2(float* base, long long n,
                                                       long long step, long long lane_step,
                                                       const double* poles, int npoles,
                                                       double gain, double* c) {
    constexpr int L = 4 * V;  // lanes
    const bool rows = step == 1;
    const __m256d g = _mm256_set1_pd(gain);
    // Load (and multiply by the gain: the scalar path's copy, then c *= gain).
    if (!rows) {
        for (long long i = 0; i < n; ++i) {
            const float* src = base + i * step;
            double* ci = c + i * L;
            for (int v = 0; v < V; ++v)
                _mm256_store_pd(ci + 4 * v,
                                _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(src + 4 * v)), g));
        }
    } else {
        long long i = 0;
        for (; i + 4 <= n; i += 4) {
            for (int v = 0; v < V; ++v) {
                const float* r = base + (long long)(4 * v) * lane_step + i;
                __m128 r0 = _mm_loadu_ps(r);
                __m128 r1 = _mm_loadu_ps(r + lane_step);
                __m128 r2 = _mm_loadu_ps(r + 2 * lane_step);
                __m128 r3 = _mm_loadu_ps(r + 3 * lane_step);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r0: sample i of the four lines, ...
                double* ci = c + i * L + 4 * v;
                _mm256_store_pd(ci, _mm256_mul_pd(_mm256_cvtps_pd(r0), g));
                _mm256_store_pd(ci + L, _mm256_mul_pd(_mm256_cvtps_pd(r1), g));
                _mm256_store_pd(ci + 2 * L, _mm256_mul_pd(_mm256_cvtps_pd(r2), g));
                _mm256_store_pd(ci + 3 * L, _mm256_mul_pd(_mm256_cvtps_pd(r3), g));
            }
        }
        for (; i < n; ++i)
            for (int l = 0; l < L; ++l) c[i * L + l] = (double)base[l * lane_step + i] * gain;
    }
    double* first = c;
    double* last = c + (n - 1) * L;
    for (int p = 0; p < npoles; ++p) {
        const double zs = poles[p];
        const __m256d z = _mm256_set1_pd(zs);
        const bool store_now = !rows && p == npoles - 1;
        // Causal start: the mirror-extended sum (init_causal_mirror).
        const double z_n_1s = std::pow(zs, (double)(n - 1));
        const __m256d z_n_1 = _mm256_set1_pd(z_n_1s);
        __m256d acc[V];
        for (int v = 0; v < V; ++v)
            acc[v] = _mm256_add_pd(_mm256_load_pd(first + 4 * v),
                                   _mm256_mul_pd(z_n_1, _mm256_load_pd(last + 4 * v)));
        double z_i = zs;
        for (long long i = 1; i < n - 1; ++i) {
            const double* ci = c + i * L;
            const double* cm = c + (n - 1 - i) * L;
            const __m256d zi = _mm256_set1_pd(z_i);
            for (int v = 0; v < V; ++v) {
                const __m256d t = _mm256_add_pd(
                    _mm256_load_pd(ci + 4 * v),
                    _mm256_mul_pd(z_n_1, _mm256_load_pd(cm + 4 * v)));
                acc[v] = _mm256_add_pd(acc[v], _mm256_mul_pd(zi, t));
            }
            z_i *= zs;
        }
        const __m256d den = _mm256_set1_pd(1 - z_n_1s * z_n_1s);
        __m256d prev[V];
        for (int v = 0; v < V; ++v) {
            prev[v] = _mm256_div_pd(acc[v], den);
            _mm256_store_pd(first + 4 * v, prev[v]);
        }
        // Causal pass.
        for (long long i = 1; i < n; ++i) {
            double* ci = c + i * L;
            for (int v = 0; v < V; ++v) {
                prev[v] = _mm256_add_pd(_mm256_load_pd(ci + 4 * v), _mm256_mul_pd(z, prev[v]));
                _mm256_store_pd(ci + 4 * v, prev[v]);
            }
        }
        // Anticausal start and pass (init_anticausal_mirror): prev holds sample n-1.
        const __m256d zz1 = _mm256_set1_pd(zs * zs - 1);
        const double* pen = c + (n - 2) * L;
        __m256d next[V];
        for (int v = 0; v < V; ++v) {
            next[v] = _mm256_div_pd(
                _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(z, _mm256_load_pd(pen + 4 * v)),
                                            prev[v]),
                              z),
                zz1);
            _mm256_store_pd(last + 4 * v, next[v]);
            if (store_now)
                _mm_storeu_ps(base + (n - 1) * step + 4 * v, _mm256_cvtpd_ps(next[v]));
        }
        for (long long i = n - 2; i >= 0; --i) {
            double* ci = c + i * L;
            for (int v = 0; v < V; ++v) {
                next[v] = _mm256_mul_pd(z, _mm256_sub_pd(next[v], _mm256_load_pd(ci + 4 * v)));
                if (store_now)
                    _mm_storeu_ps(base + i * step + 4 * v, _mm256_cvtpd_ps(next[v]));
                else
                    _mm256_store_pd(ci + 4 * v, next[v]);
            }
        }
    }
    if (!rows) return;
    // Rows: back to float32 through 4x4 transposes.
    long long i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int v = 0; v < V; ++v) {
            const double* ci = c + i * L + 4 * v;
            __m128 r0 = _mm256_cvtpd_ps(_mm256_load_pd(ci));
            __m128 r1 = _mm256_cvtpd_ps(_mm256_load_pd(ci + L));
            __m128 r2 = _mm256_cvtpd_ps(_mm256_load_pd(ci + 2 * L));
            __m128 r3 = _mm256_cvtpd_ps(_mm256_load_pd(ci + 3 * L));
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r0: samples i..i+3 of line 4v, ...
            float* r = base + (long long)(4 * v) * lane_step + i;
            _mm_storeu_ps(r, r0);
            _mm_storeu_ps(r + lane_step, r1);
            _mm_storeu_ps(r + 2 * lane_step, r2);
            _mm_storeu_ps(r + 3 * lane_step, r3);
        }
    }
    for (; i < n; ++i)
        for (int l = 0; l < L; ++l) base[l * lane_step + i] = (float)c[i * L + l];
}

// out[r, c] = (out[r, c] + ax[c]) + by[r] (has_surface) or ax[c] + by[r], four
// columns at a time (the same two IEEE additions per value as the scalar loop), and
// bounds = {min, max} of the results, both NaN when any is NaN.
__attribute__((target("avx2"))) inline void add_linear_avx2(double* out, long long rows,
                                                            long long cols, const double* ax,
                                                            const double* by,
                                                            bool has_surface, double* bounds) {
    __m256d lo = _mm256_set1_pd(INFINITY), hi = _mm256_set1_pd(-INFINITY);
    __m256d nan = _mm256_setzero_pd();
    double slo = INFINITY, shi = -INFINITY;
    bool snan = false;
    for (long long r = 0; r < rows; ++r) {
        double* o = out + r * cols;
        const double b = by[r];
        const __m256d vb = _mm256_set1_pd(b);
        long long c = 0;
        for (; c + 4 <= cols; c += 4) {
            __m256d v = _mm256_loadu_pd(ax + c);
            if (has_surface) v = _mm256_add_pd(_mm256_loadu_pd(o + c), v);
            v = _mm256_add_pd(v, vb);
            _mm256_storeu_pd(o + c, v);
            lo = _mm256_min_pd(lo, v);
            hi = _mm256_max_pd(hi, v);
            nan = _mm256_or_pd(nan, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
        }
        for (; c < cols; ++c) {
            const double v = has_surface ? (o[c] + ax[c]) + b : ax[c] + b;
            o[c] = v;
            slo = v < slo ? v : slo;
            shi = v > shi ? v : shi;
            snan |= v != v;
        }
    }
    alignas(32) double l4[4], h4[4];
    _mm256_store_pd(l4, lo);
    _mm256_store_pd(h4, hi);
    for (int k = 0; k < 4; ++k) {
        slo = l4[k] < slo ? l4[k] : slo;
        shi = h4[k] > shi ? h4[k] : shi;
    }
    snan |= _mm256_movemask_pd(nan) != 0;
    bounds[0] = snan ? NAN : slo;
    bounds[1] = snan ? NAN : shi;
}

}  // namespace gpualign_simd
#endif
