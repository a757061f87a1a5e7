// gpualign per-pixel warp maths, shared by the CUDA kernels (warp_fused.cu) and
// by the host test shim (tests/warp/kernels_host_shim.cpp, compiled with g++).
//
// Everything here reproduces the reference warp of spec/DESIGN.md:
//   * the Transform (template pixel -> source pixel): affine + clipped polynomial
//     distortion, evaluated in double precision;
//   * scipy.ndimage.map_coordinates(prefiltered, [[sy], [sx]], order=k,
//     mode="mirror", prefilter=False) for k = 0..5, following scipy's
//     ni_interpolation.c / ni_splines.c operation for operation (coordinate
//     mirroring, start index, weights, summation order), on a C-contiguous
//     float32 image, with 64-bit indices;
//   * the footprint test -0.5 <= s <= N - 0.5 on both axes.
//
// No standard headers are needed under NVRTC (floor is a device builtin).
#ifndef GPUALIGN_WARP_CUH
#define GPUALIGN_WARP_CUH

#ifndef __CUDACC__
#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#endif

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

#if defined(__CUDACC__)
#define GA_INLINE __forceinline__
#define GA_UNROLL _Pragma("unroll")
#else
#define GA_INLINE inline
#define GA_UNROLL
#endif

// Layout of the flat float64 parameter block (see gpualign/_backend/_kernels.py,
// pack_transform). Coefficients are stored padded to 8 x 8 per axis:
// coeffs[k][i][j] at GA_P_COEFFS + k * 64 + i * 8 + j  (k = 0 -> x, 1 -> y).
#define GA_P_MATRIX 0   // m00 m01 m02 m10 m11 m12
#define GA_P_NORM 6     // cx cy hx hy
#define GA_P_CLIP 10    // umin umax vmin vmax
#define GA_P_NCOEF 14   // n = degree + 1 (0 -> no distortion), stored as a double
#define GA_P_COEFFS 16  // 2 * 8 * 8 doubles
#define GA_MAX_DEGREE 7
#define GA_COEF_STRIDE 8
#define GA_P_SIZE (GA_P_COEFFS + 2 * GA_COEF_STRIDE * GA_COEF_STRIDE)

namespace gpualign {

typedef long long index_t;

// Largest |coordinate| handled; beyond it (or NaN) sampling returns 0, where scipy's
// own float -> npy_intp casts are undefined behaviour anyway.
#define GA_MAX_ABS_COORD 4.0e15

// ---------------------------------------------------------------------------
// Boundary handling, scipy 'mirror' (d c b | a b c d | c b a).
// ---------------------------------------------------------------------------

// Continuous coordinate -> [0, len - 1] (or (len - 1, len), as scipy does),
// exactly as map_coordinate() in ni_interpolation.c for NI_EXTEND_MIRROR.
__host__ __device__ GA_INLINE double mirror_coordinate(double in, index_t len) {
    if (in < 0.0) {
        if (len <= 1) return 0.0;
        const index_t sz2 = 2 * len - 2;
        in = (double)(sz2 * (index_t)(-in / (double)sz2)) + in;
        in = in <= (double)(1 - len) ? in + (double)sz2 : -in;
    } else if (in > (double)(len - 1)) {
        if (len <= 1) return 0.0;
        const index_t sz2 = 2 * len - 2;
        in -= (double)(sz2 * (index_t)(in / (double)sz2));
        if (in >= (double)len) in = (double)sz2 - in;
    }
    return in;
}

// Integer tap index -> [0, len - 1], as the edge_offsets loop of NI_GeometricTransform.
__host__ __device__ GA_INLINE index_t mirror_index(index_t idx, index_t len) {
    if (len <= 1) return 0;
    const index_t s2 = 2 * len - 2;
    if (idx < 0) {
        idx = s2 * (-idx / s2) + idx;
        idx = idx <= 1 - len ? idx + s2 : -idx;
    } else if (idx >= len) {
        idx -= s2 * (idx / s2);
        if (idx >= len) idx = s2 - idx;
    }
    return idx;
}

// ---------------------------------------------------------------------------
// B-spline weights (get_spline_interpolation_weights in ni_splines.c).
// ---------------------------------------------------------------------------

// First tap of the (order + 1)-point filter for mirrored coordinate cc.
// Odd orders start at floor(cc) - order/2, even orders (incl. 0) at
// floor(cc + 0.5) - order/2 (order 0 rounds half up).
__host__ __device__ GA_INLINE index_t spline_start(double cc, int order) {
    return (index_t)floor((order & 1) ? cc : cc + 0.5) - order / 2;
}

// Weights w[0..order] for coordinate x; w[order] = 1 - sum(others) as in scipy.
// Order 0 sets w[0] = 1 (scipy skips the multiplication for order 0).
__host__ __device__ GA_INLINE void spline_weights(double x, int order, double* w) {
    double y, z, t;
    x -= floor((order & 1) ? x : x + 0.5);
    y = x;
    z = 1.0 - x;
    switch (order) {
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
        default:  // order 0
            w[0] = 1.0;
            return;
    }
    w[order] = 1.0;
    for (int i = 0; i < order; ++i) w[order] -= w[i];
}

// ---------------------------------------------------------------------------
// 2-D sampling of a C-contiguous float32 image img[h, w] at (sy, sx).
// ---------------------------------------------------------------------------

// Equals map_coordinates(img, [[sy], [sx]], order=ORDER, mode="mirror",
// prefilter=False) computed in double; the caller casts to float32.
template <int ORDER>
__host__ __device__ GA_INLINE double sample_mirror(const float* img, index_t h, index_t w,
                                                   double sy, double sx) {
    if (!(sy > -GA_MAX_ABS_COORD && sy < GA_MAX_ABS_COORD && sx > -GA_MAX_ABS_COORD &&
          sx < GA_MAX_ABS_COORD)) {
        return 0.0;
    }
    const double cy = mirror_coordinate(sy, h);
    const double cx = mirror_coordinate(sx, w);
    const index_t y0 = spline_start(cy, ORDER);
    const index_t x0 = spline_start(cx, ORDER);
    if (ORDER == 0) {
        return (double)img[mirror_index(y0, h) * w + mirror_index(x0, w)];
    }
    double wy[ORDER + 1], wx[ORDER + 1];
    index_t xi[ORDER + 1];
    spline_weights(cy, ORDER, wy);
    spline_weights(cx, ORDER, wx);
    const bool xedge = x0 < 0 || x0 + ORDER >= w;
GA_UNROLL
    for (int k = 0; k <= ORDER; ++k) xi[k] = xedge ? mirror_index(x0 + k, w) : x0 + k;
    const bool yedge = y0 < 0 || y0 + ORDER >= h;
    double t = 0.0;
GA_UNROLL
    for (int j = 0; j <= ORDER; ++j) {
        const index_t row = yedge ? mirror_index(y0 + j, h) : y0 + j;
        const float* r = img + row * w;
GA_UNROLL
        for (int k = 0; k <= ORDER; ++k) {
            // scipy: coeff = value; coeff *= w_y; coeff *= w_x; t += coeff
            t += (double)r[xi[k]] * wy[j] * wx[k];
        }
    }
    return t;
}

// Run-time order dispatch (host tests, generic callers).
__host__ __device__ GA_INLINE double sample_mirror_order(const float* img, index_t h, index_t w,
                                                         double sy, double sx, int order) {
    switch (order) {
        case 0: return sample_mirror<0>(img, h, w, sy, sx);
        case 1: return sample_mirror<1>(img, h, w, sy, sx);
        case 2: return sample_mirror<2>(img, h, w, sy, sx);
        case 3: return sample_mirror<3>(img, h, w, sy, sx);
        case 4: return sample_mirror<4>(img, h, w, sy, sx);
        default: return sample_mirror<5>(img, h, w, sy, sx);
    }
}

// ---------------------------------------------------------------------------
// Transform: template pixel (x, y) -> source pixel (sx, sy).
// ---------------------------------------------------------------------------

// NaN-propagating clip (np.clip semantics).
__host__ __device__ GA_INLINE double clip_value(double a, double lo, double hi) {
    return a < lo ? lo : (a > hi ? hi : a);
}

// D(u, v) = sum_{i,j<n} c[i][j] u^i v^j by Horner in v (inner) and u (outer).
__host__ __device__ GA_INLINE double poly_eval(const double* c, int n, double u, double v) {
    double acc = 0.0;
    for (int i = n - 1; i >= 0; --i) {
        double pv = 0.0;
        for (int j = n - 1; j >= 0; --j) pv = pv * v + c[i * GA_COEF_STRIDE + j];
        acc = acc * u + pv;
    }
    return acc;
}

// D, dD/du and dD/dv together (Horner with derivatives).
__host__ __device__ GA_INLINE void poly_eval_grad(const double* c, int n, double u, double v,
                                                  double* d, double* du, double* dv) {
    double acc = 0.0, acc_u = 0.0, acc_v = 0.0;
    for (int i = n - 1; i >= 0; --i) {
        double pv = 0.0, pdv = 0.0;
        for (int j = n - 1; j >= 0; --j) {
            pdv = pdv * v + pv;
            pv = pv * v + c[i * GA_COEF_STRIDE + j];
        }
        acc_u = acc_u * u + acc;
        acc = acc * u + pv;
        acc_v = acc_v * u + pdv;
    }
    *d = acc;
    *du = acc_u;
    *dv = acc_v;
}

// Number of coefficients per axis n = degree + 1 stored in the block (0 = none).
__host__ __device__ GA_INLINE int transform_ncoef(const double* p) {
    const int n = (int)p[GA_P_NCOEF];
    return n < 0 ? 0 : (n > GA_MAX_DEGREE + 1 ? GA_MAX_DEGREE + 1 : n);
}

// (sx, sy) = T(x, y) per spec/DESIGN.md.
__host__ __device__ GA_INLINE void transform_point(const double* p, double x, double y,
                                                   double* sx, double* sy) {
    double ax = p[GA_P_MATRIX + 0] * x + p[GA_P_MATRIX + 1] * y + p[GA_P_MATRIX + 2];
    double ay = p[GA_P_MATRIX + 3] * x + p[GA_P_MATRIX + 4] * y + p[GA_P_MATRIX + 5];
    const int n = transform_ncoef(p);
    if (n > 0) {
        const double u = clip_value((x - p[GA_P_NORM + 0]) / p[GA_P_NORM + 2],
                                    p[GA_P_CLIP + 0], p[GA_P_CLIP + 1]);
        const double v = clip_value((y - p[GA_P_NORM + 1]) / p[GA_P_NORM + 3],
                                    p[GA_P_CLIP + 2], p[GA_P_CLIP + 3]);
        ax += poly_eval(p + GA_P_COEFFS, n, u, v);
        ay += poly_eval(p + GA_P_COEFFS + GA_COEF_STRIDE * GA_COEF_STRIDE, n, u, v);
    }
    *sx = ax;
    *sy = ay;
}

// Distortion only: (Dx, Dy) at template pixel (x, y).
__host__ __device__ GA_INLINE void distortion_point(const double* p, double x, double y,
                                                    double* dx, double* dy) {
    const int n = transform_ncoef(p);
    if (n == 0) {
        *dx = 0.0;
        *dy = 0.0;
        return;
    }
    const double u = clip_value((x - p[GA_P_NORM + 0]) / p[GA_P_NORM + 2], p[GA_P_CLIP + 0],
                                p[GA_P_CLIP + 1]);
    const double v = clip_value((y - p[GA_P_NORM + 1]) / p[GA_P_NORM + 3], p[GA_P_CLIP + 2],
                                p[GA_P_CLIP + 3]);
    *dx = poly_eval(p + GA_P_COEFFS, n, u, v);
    *dy = poly_eval(p + GA_P_COEFFS + GA_COEF_STRIDE * GA_COEF_STRIDE, n, u, v);
}

// det d(sx, sy)/d(x, y). Where u (v) is clipped, du/dx (dv/dy) is 0.
__host__ __device__ GA_INLINE double transform_jacobian(const double* p, double x, double y) {
    double a = p[GA_P_MATRIX + 0], b = p[GA_P_MATRIX + 1];
    double c = p[GA_P_MATRIX + 3], d = p[GA_P_MATRIX + 4];
    const int n = transform_ncoef(p);
    if (n > 0) {
        const double hx = p[GA_P_NORM + 2], hy = p[GA_P_NORM + 3];
        const double ur = (x - p[GA_P_NORM + 0]) / hx;
        const double vr = (y - p[GA_P_NORM + 1]) / hy;
        const double u = clip_value(ur, p[GA_P_CLIP + 0], p[GA_P_CLIP + 1]);
        const double v = clip_value(vr, p[GA_P_CLIP + 2], p[GA_P_CLIP + 3]);
        const double dudx = (ur < p[GA_P_CLIP + 0] || ur > p[GA_P_CLIP + 1]) ? 0.0 : 1.0 / hx;
        const double dvdy = (vr < p[GA_P_CLIP + 2] || vr > p[GA_P_CLIP + 3]) ? 0.0 : 1.0 / hy;
        double f, fu, fv, g, gu, gv;
        poly_eval_grad(p + GA_P_COEFFS, n, u, v, &f, &fu, &fv);
        poly_eval_grad(p + GA_P_COEFFS + GA_COEF_STRIDE * GA_COEF_STRIDE, n, u, v, &g, &gu, &gv);
        a += fu * dudx;
        b += fv * dvdy;
        c += gu * dudx;
        d += gv * dvdy;
    }
    return a * d - b * c;
}

// ---------------------------------------------------------------------------
// Footprint and the whole per-pixel warp.
// ---------------------------------------------------------------------------

// -0.5 <= sx <= w - 0.5 and -0.5 <= sy <= h - 0.5 (false for NaN).
__host__ __device__ GA_INLINE bool footprint_inside(double sy, double sx, index_t h, index_t w) {
    return sx >= -0.5 && sx <= (double)w - 0.5 && sy >= -0.5 && sy <= (double)h - 0.5;
}

// One output pixel: value (float32 of the double sample, or cval outside), footprint,
// and optionally the Jacobian determinant (want_jac).
template <int ORDER>
__host__ __device__ GA_INLINE void warp_pixel(const float* src, index_t h, index_t w,
                                              const double* p, double x, double y, double cval,
                                              bool want_jac, float* value,
                                              unsigned char* inside, float* jac) {
    double sx, sy;
    transform_point(p, x, y, &sx, &sy);
    const bool in = footprint_inside(sy, sx, h, w);
    *value = in ? (float)sample_mirror<ORDER>(src, h, w, sy, sx) : (float)cval;
    *inside = in ? 1 : 0;
    if (want_jac) *jac = (float)transform_jacobian(p, x, y);
}

}  // namespace gpualign

#endif  // GPUALIGN_WARP_CUH
