// Host (g++) shim around gpualign's CUDA sources, loaded by tests/warp/test_kernels_host.py
// with ctypes. Build: g++ -std=c++17 -O2 -shared -fPIC -I<repo>/kernels this.cpp
//
// It compiles the real kernels/warp_fused.cu (and so gpualign_warp.cuh) as plain C++:
// __global__ becomes nothing and blockIdx/threadIdx/blockDim/gridDim are globals set
// by ga_launch_*, which run every thread of a grid sequentially. This is possible
// because the kernels use no shared memory, barriers or warp intrinsics.

struct ga_dim3 {
    unsigned int x, y, z;
};
static ga_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__

#include "warp_fused.cu"

namespace {

template <typename F>
void run_grid(unsigned gx, unsigned gy, unsigned bx, unsigned by, F kernel) {
    gridDim = {gx, gy, 1};
    blockDim = {bx, by, 1};
    for (unsigned byi = 0; byi < gy; ++byi)
        for (unsigned bxi = 0; bxi < gx; ++bxi)
            for (unsigned ty = 0; ty < by; ++ty)
                for (unsigned tx = 0; tx < bx; ++tx) {
                    blockIdx = {bxi, byi, 0};
                    threadIdx = {tx, ty, 0};
                    kernel();
                }
}

}  // namespace

extern "C" {

int ga_params_size(void) { return GA_P_SIZE; }
int ga_max_degree(void) { return GA_MAX_DEGREE; }

void ga_mirror_coordinate(const double* in, long long n, long long len, double* out) {
    for (long long i = 0; i < n; ++i) out[i] = gpualign::mirror_coordinate(in[i], len);
}

void ga_mirror_index(const long long* in, long long n, long long len, long long* out) {
    for (long long i = 0; i < n; ++i) out[i] = gpualign::mirror_index(in[i], len);
}

// start[i] and w[i * (order + 1) + k] for the mirrored coordinates cc[i].
void ga_spline_weights(const double* cc, long long n, int order, long long* start, double* w) {
    for (long long i = 0; i < n; ++i) {
        start[i] = gpualign::spline_start(cc[i], order);
        gpualign::spline_weights(cc[i], order, w + i * (order + 1));
    }
}

void ga_sample(const float* img, long long h, long long w, const double* sy, const double* sx,
               long long n, int order, double* out) {
    for (long long i = 0; i < n; ++i)
        out[i] = gpualign::sample_mirror_order(img, h, w, sy[i], sx[i], order);
}

void ga_transform(const double* p, const double* x, const double* y, long long n, double* sx,
                  double* sy) {
    for (long long i = 0; i < n; ++i) gpualign::transform_point(p, x[i], y[i], sx + i, sy + i);
}

void ga_distortion(const double* p, const double* x, const double* y, long long n, double* dx,
                   double* dy) {
    for (long long i = 0; i < n; ++i) gpualign::distortion_point(p, x[i], y[i], dx + i, dy + i);
}

void ga_jacobian(const double* p, const double* x, const double* y, long long n, double* jac) {
    for (long long i = 0; i < n; ++i) jac[i] = gpualign::transform_jacobian(p, x[i], y[i]);
}

void ga_inside(const double* sy, const double* sx, long long n, long long h, long long w,
               unsigned char* out) {
    for (long long i = 0; i < n; ++i) out[i] = gpualign::footprint_inside(sy[i], sx[i], h, w);
}

// Emulated launches of the real kernels, same argument lists as on the device.
void ga_launch_warp_fused(int order, unsigned gx, unsigned gy, unsigned bx, unsigned by,
                          const float* src, long long src_h, long long src_w,
                          const double* params, float* out, unsigned char* footprint,
                          float* jac, long long out_w, long long row0, long long row1,
                          double cval) {
    auto call = [&]() {
        switch (order) {
            case 0: gpualign_warp_fused_o0(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
            case 1: gpualign_warp_fused_o1(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
            case 2: gpualign_warp_fused_o2(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
            case 3: gpualign_warp_fused_o3(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
            case 4: gpualign_warp_fused_o4(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
            default: gpualign_warp_fused_o5(src, src_h, src_w, params, out, footprint, jac, out_w, row0, row1, cval); break;
        }
    };
    run_grid(gx, gy, bx, by, call);
}

void ga_launch_surface_eval(unsigned gx, unsigned gy, unsigned bx, unsigned by,
                            const double* params, long long x0, long long x1, long long row0,
                            long long row1, int distortion_only, double* sx, double* sy) {
    run_grid(gx, gy, bx, by, [&]() {
        gpualign_surface_eval(params, x0, x1, row0, row1, distortion_only, sx, sy);
    });
}

}  // extern "C"
