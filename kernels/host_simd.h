// AVX2 sampling of four output pixels at once, for the host warp (host_warp.cpp).
//
// Each lane runs the operations of gpualign::sample_mirror<ORDER> (gpualign_warp.cuh)
// for its pixel in the same order: the same B-spline weight expressions, the same
// product (value * w_y) * w_x per tap and the same tap-by-tap summation, in IEEE
// double with no fused multiply-add (the "avx2" target does not enable FMA, and the
// library is built with -ffp-contract=off). So every value is bit-identical to the
// scalar path, and to scipy.ndimage.map_coordinates (tests/warp/test_host_warp.py).
//
// Only groups of four pixels whose taps all lie inside the image take the vector
// path (there the mirrored coordinate equals the raw one); a group with an edge,
// mirror or non-finite coordinate goes through sample_mirror pixel by pixel.
// Order 3 (the default) loads each lane's four contiguous taps of a row and
// transposes them; the other orders gather, which needs 32-bit offsets (images under
// 2^31 pixels; larger ones use the scalar path for those orders).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GA_HAVE_AVX2_PATH 1
#include <immintrin.h>

namespace gpualign_simd {

typedef double v4d __attribute__((vector_size(32)));

__attribute__((target("avx2"))) static inline v4d vfloor(v4d x) {
    return (v4d)_mm256_floor_pd((__m256d)x);
}

// spline_weights of gpualign_warp.cuh, lane by lane, expression for expression.
template <int ORDER>
__attribute__((target("avx2"))) static inline void vweights(v4d x, v4d* w) {
    v4d y, z, t;
    x -= vfloor((ORDER & 1) ? x : x + 0.5);
    y = x;
    z = 1.0 - x;
    switch (ORDER) {
        case 1:
            w[0] = 1.0 - x;
            break;
        case 2:
            w[1] = 0.75 - x * x;
            y = 0.5 - x;
            w[0] = 0.5 * y * y;
            break;
        case 3:
            w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
            w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
            w[0] = z * z * z / 6.0;
            break;
        case 4:
            t = x * x;
            w[2] = t * (t * 0.25 - 0.625) + 115.0 / 192.0;
            y = 1.0 + x;
            w[1] = y * (y * (y * (5.0 - y) / 6.0 - 1.25) + 5.0 / 24.0) + 55.0 / 96.0;
            w[3] = z * (z * (z * (5.0 - z) / 6.0 - 1.25) + 5.0 / 24.0) + 55.0 / 96.0;
            y = 0.5 - x;
            t = y * y;
            w[0] = t * t / 24.0;
            break;
        case 5:
            t = y * y;
            w[2] = t * (t * (0.25 - y / 12.0) - 0.5) + 0.55;
            t = z * z;
            w[3] = t * (t * (0.25 - z / 12.0) - 0.5) + 0.55;
            y += 1.0;
            w[1] = y * (y * (y * (y * (y / 24.0 - 0.375) + 1.25) - 1.75) + 0.625) + 0.425;
            z += 1.0;
            w[4] = z * (z * (z * (z * (z / 24.0 - 0.375) + 1.25) - 1.75) + 0.625) + 0.425;
            y = 1.0 - x;
            t = y * y;
            w[0] = y * t * t / 120.0;
            break;
    }
    v4d last = {1.0, 1.0, 1.0, 1.0};
    for (int i = 0; i < ORDER; ++i) last -= w[i];
    w[ORDER] = last;
}

// One output row of `cols` pixels at source coordinates (ry, rx), orders 1..5.
template <int ORDER>
__attribute__((target("avx2"))) void sample_row_avx2(const float* img, long long h,
                                                     long long w, const double* ry,
                                                     const double* rx, long long cols,
                                                     float* o) {
    // Interior: first tap floor(c) - ORDER/2 >= 0 and last tap <= len - 1.
    const __m256d ylo = _mm256_set1_pd((double)(ORDER / 2));
    const __m256d xlo = _mm256_set1_pd((double)(ORDER / 2));
    const __m256d yhi = _mm256_set1_pd((double)(h - 1 - ORDER + ORDER / 2));
    const __m256d xhi = _mm256_set1_pd((double)(w - 1 - ORDER + ORDER / 2));
    const bool gather_ok = h * w < (1LL << 31);
    long long c = 0;
    if (ORDER == 3 || gather_ok) {
        for (; c + 4 <= cols; c += 4) {
            v4d sy, sx;
            __builtin_memcpy(&sy, ry + c, sizeof sy);
            __builtin_memcpy(&sx, rx + c, sizeof sx);
            const v4d fy = vfloor((ORDER & 1) ? sy : sy + 0.5);
            const v4d fx = vfloor((ORDER & 1) ? sx : sx + 0.5);
            const __m256d inside = _mm256_and_pd(
                _mm256_and_pd(_mm256_cmp_pd((__m256d)fy, ylo, _CMP_GE_OQ),
                              _mm256_cmp_pd((__m256d)fy, yhi, _CMP_LE_OQ)),
                _mm256_and_pd(_mm256_cmp_pd((__m256d)fx, xlo, _CMP_GE_OQ),
                              _mm256_cmp_pd((__m256d)fx, xhi, _CMP_LE_OQ)));
            if (_mm256_movemask_pd(inside) != 15) {
                for (int k = 0; k < 4; ++k)
                    o[c + k] = (float)gpualign::sample_mirror<ORDER>(img, h, w, ry[c + k],
                                                                     rx[c + k]);
                continue;
            }
            v4d wy[ORDER + 1], wx[ORDER + 1];
            vweights<ORDER>(sy, wy);
            vweights<ORDER>(sx, wx);
            // First taps, exact integers below 2^31 (checked above).
            const __m128i iy = _mm256_cvttpd_epi32((__m256d)(fy - (double)(ORDER / 2)));
            const __m128i ix = _mm256_cvttpd_epi32((__m256d)(fx - (double)(ORDER / 2)));
            v4d t = {0.0, 0.0, 0.0, 0.0};
            if (ORDER == 3) {
                alignas(16) int y4[4], x4[4];
                _mm_store_si128((__m128i*)y4, iy);
                _mm_store_si128((__m128i*)x4, ix);
                const float* p0 = img + (long long)y4[0] * w + x4[0];
                const float* p1 = img + (long long)y4[1] * w + x4[1];
                const float* p2 = img + (long long)y4[2] * w + x4[2];
                const float* p3 = img + (long long)y4[3] * w + x4[3];
                for (int j = 0; j <= ORDER; ++j) {
                    const long long off = (long long)j * w;
                    __m128 r0 = _mm_loadu_ps(p0 + off);
                    __m128 r1 = _mm_loadu_ps(p1 + off);
                    __m128 r2 = _mm_loadu_ps(p2 + off);
                    __m128 r3 = _mm_loadu_ps(p3 + off);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r0 = tap 0 of each lane, ...
                    t += (v4d)_mm256_cvtps_pd(r0) * wy[j] * wx[0];
                    t += (v4d)_mm256_cvtps_pd(r1) * wy[j] * wx[1];
                    t += (v4d)_mm256_cvtps_pd(r2) * wy[j] * wx[2];
                    t += (v4d)_mm256_cvtps_pd(r3) * wy[j] * wx[3];
                }
            } else {
                const __m128i step = _mm_set1_epi32((int)w);
                __m128i base = _mm_add_epi32(_mm_mullo_epi32(iy, step), ix);
                for (int j = 0; j <= ORDER; ++j) {
                    for (int k = 0; k <= ORDER; ++k) {
                        const v4d v = (v4d)_mm256_cvtps_pd(_mm_i32gather_ps(img + k, base, 4));
                        t += v * wy[j] * wx[k];
                    }
                    base = _mm_add_epi32(base, step);
                }
            }
            _mm_storeu_ps(o + c, _mm256_cvtpd_ps((__m256d)t));
        }
    }
    for (; c < cols; ++c)
        o[c] = (float)gpualign::sample_mirror<ORDER>(img, h, w, ry[c], rx[c]);
}

}  // namespace gpualign_simd
#endif
