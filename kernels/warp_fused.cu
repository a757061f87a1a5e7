// gpualign CUDA kernels: fused Transform + spline sampling warp, and surface evaluation.
//
// Loaded by gpualign/_backend/_kernels.py through cupy.RawModule (NVRTC); the loader
// inlines gpualign_warp.cuh in place of the #include below so that CuPy's on-disk
// kernel cache is keyed on the full source. The per-pixel maths lives in the header
// and is tested on the host against SciPy (tests/warp/test_kernels_host.py).
//
// Launch geometry (both kernels): 2-D blocks, e.g. (32, 8, 1); grid.x covers the
// output columns, grid.y may be smaller than needed (at most 65535): each thread
// strides over rows by gridDim.y * blockDim.y. All pixel indices are 64-bit.
//
// Entry points (extern "C", no name mangling):
//   gpualign_warp_fused_o0 .. gpualign_warp_fused_o5
//       (const float* src, long long src_h, long long src_w, const double* params,
//        float* out, unsigned char* footprint, float* jac,
//        long long out_w, long long row0, long long row1, double cval)
//     src: prefiltered C-contiguous float32 image [src_h, src_w];
//     params: GA_P_SIZE float64 values (see gpualign_warp.cuh / pack_transform);
//     out, footprint, jac: C-contiguous [row1 - row0, out_w] blocks of the output
//     rows [row0, row1); footprint and jac may be NULL (not written).
//   gpualign_surface_eval
//       (const double* params, long long x0, long long x1, long long row0,
//        long long row1, int distortion_only, double* sx, double* sy)
//     sx, sy: C-contiguous [row1 - row0, x1 - x0] float64; the full mapping T(x, y)
//     or, with distortion_only != 0, the surfaces (Dx, Dy).
#include "gpualign_warp.cuh"

template <int ORDER>
__device__ GA_INLINE void gpualign_warp_fused_impl(
    const float* __restrict__ src, long long src_h, long long src_w,
    const double* __restrict__ params, float* __restrict__ out,
    unsigned char* __restrict__ footprint, float* __restrict__ jac, long long out_w,
    long long row0, long long row1, double cval) {
    const long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= out_w) return;
    const long long nrows = row1 - row0;
    const long long rstep = (long long)gridDim.y * blockDim.y;
    const bool want_jac = jac != 0;
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < nrows;
         r += rstep) {
        const long long i = r * out_w + x;
        float value, j = 0.0f;
        unsigned char inside;
        gpualign::warp_pixel<ORDER>(src, src_h, src_w, params, (double)x, (double)(row0 + r),
                                    cval, want_jac, &value, &inside, &j);
        out[i] = value;
        if (footprint) footprint[i] = inside;
        if (want_jac) jac[i] = j;
    }
}

#define GPUALIGN_WARP_ENTRY(K)                                                              \
    extern "C" __global__ void gpualign_warp_fused_o##K(                                    \
        const float* __restrict__ src, long long src_h, long long src_w,                    \
        const double* __restrict__ params, float* __restrict__ out,                         \
        unsigned char* __restrict__ footprint, float* __restrict__ jac, long long out_w,    \
        long long row0, long long row1, double cval) {                                      \
        gpualign_warp_fused_impl<K>(src, src_h, src_w, params, out, footprint, jac, out_w, \
                                    row0, row1, cval);                                      \
    }

GPUALIGN_WARP_ENTRY(0)
GPUALIGN_WARP_ENTRY(1)
GPUALIGN_WARP_ENTRY(2)
GPUALIGN_WARP_ENTRY(3)
GPUALIGN_WARP_ENTRY(4)
GPUALIGN_WARP_ENTRY(5)

extern "C" __global__ void gpualign_surface_eval(const double* __restrict__ params,
                                                 long long x0, long long x1, long long row0,
                                                 long long row1, int distortion_only,
                                                 double* __restrict__ sx,
                                                 double* __restrict__ sy) {
    const long long ncols = x1 - x0;
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= ncols) return;
    const long long nrows = row1 - row0;
    const long long rstep = (long long)gridDim.y * blockDim.y;
    const double x = (double)(x0 + c);
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < nrows;
         r += rstep) {
        const long long i = r * ncols + c;
        const double y = (double)(row0 + r);
        double a, b;
        if (distortion_only) {
            gpualign::distortion_point(params, x, y, &a, &b);
        } else {
            gpualign::transform_point(params, x, y, &a, &b);
        }
        sx[i] = a;
        sy[i] = b;
    }
}
