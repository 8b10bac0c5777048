// CARAFE on CUDA: one thread per output element (grid-stride loops) through the per-element
// functions of carafe.h, which the CPU 'elementwise' operators (carafe_cpu.cc) also run.
// Called from the cuda_src of the jt.code operators in jseg/ops/carafe_kernel.py.
#ifndef JSEG_CARAFE_CUDA_CU
#define JSEG_CARAFE_CUDA_CU

#include "carafe.h"

namespace jseg_carafe {
template <class T, int KS, int SC>
__global__ void fwd_kernel(const T* __restrict__ f, const T* __restrict__ m, T* __restrict__ out,
                           idx_t total, idx_t C, idx_t h, idx_t w, idx_t G) {
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total; n += (idx_t)gridDim.x * blockDim.x)
        out[n] = fwd_element<T, KS, SC>(f, m, n, C, h, w, G);
}

template <class T, int KS, int SC>
__global__ void dfeat_kernel(const T* __restrict__ dout, const T* __restrict__ m, T* __restrict__ df,
                             idx_t total, idx_t C, idx_t h, idx_t w, idx_t G) {
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total; n += (idx_t)gridDim.x * blockDim.x)
        df[n] = dfeat_element<T, KS, SC>(dout, m, n, C, h, w, G);
}

template <class T, int KS, int SC>
__global__ void dmask_kernel(const T* __restrict__ dout, const T* __restrict__ f, T* __restrict__ dm,
                             idx_t total, idx_t C, idx_t h, idx_t w, idx_t G) {
    for (idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x; n < total; n += (idx_t)gridDim.x * blockDim.x)
        dm[n] = dmask_element<T, KS, SC>(dout, f, n, C, h, w, G);
}

constexpr int THREADS = 256;

inline int grid_for(long long total) {
    long long blocks = (total + THREADS - 1) / THREADS;
    return (int)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

// Host launchers, same arguments as the CPU functions of carafe_cpu.cc.
template <class T, int KS, int SC>
void forward_cuda(const T* f, const T* m, T* out, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * C * h * SC * w * SC;
    fwd_kernel<T, KS, SC><<<grid_for(total), THREADS>>>(f, m, out, total, C, h, w, G);
}

template <class T, int KS, int SC>
void grad_features_cuda(const T* dout, const T* m, T* df, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * C * h * w;
    dfeat_kernel<T, KS, SC><<<grid_for(total), THREADS>>>(dout, m, df, total, C, h, w, G);
}

template <class T, int KS, int SC>
void grad_masks_cuda(const T* dout, const T* f, T* dm, idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    const idx_t total = B * G * KS * KS * h * SC * w * SC;
    dmask_kernel<T, KS, SC><<<grid_for(total), THREADS>>>(dout, f, dm, total, C, h, w, G);
}
}  // namespace jseg_carafe

#endif  // JSEG_CARAFE_CUDA_CU
