// CUDA kernels of the 'gemm' strategy of the coupled attention (what runs between the cuBLAS
// products; see jseg/ops/offset_attention_gemm.py). Their per-thread arithmetic lives in
// offset_attention_gemm.h, which the CPU twins in offset_attention_gemm_cpu.cc run too.
#ifndef JSEG_OFFSET_ATTENTION_GEMM_CUDA_CU
#define JSEG_OFFSET_ATTENTION_GEMM_CUDA_CU

#include "offset_attention_gemm.h"

namespace jseg_oa_gemm {
// One block of CLS_LANES threads per class row k: lse over positions, then
// pc[k, :] = exp(at[k, :] - lse).
template <class T>
__global__ void cls_softmax_kernel(const T* __restrict__ at, T* __restrict__ pc, T* __restrict__ lse_cls, idx_t N) {
    __shared__ T sm[CLS_LANES], ss[CLS_LANES];
    const idx_t k = blockIdx.x;
    const int lane = threadIdx.x;
    const T* row = at + k * N;
    lse_lane(row, N, lane, sm[lane], ss[lane]);
    __syncthreads();
    for (int stride = CLS_LANES / 2; stride > 0; stride >>= 1) {
        if (lane < stride) lse_tree_step(sm, ss, lane, stride);
        __syncthreads();
    }
    const T lse = sm[0] + t_log(ss[0]);
    if (lane == 0) lse_cls[k] = lse;
    cls_exp_lane(row, pc + k * N, lse, N, lane);
}

// One thread per position: softmax over classes.
template <class T>
__global__ void pos_softmax_kernel(const T* __restrict__ at, T* __restrict__ pp, T* __restrict__ lse_pos,
                                   idx_t K, idx_t N) {
    const idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x;
    if (n < N) pos_softmax_columns<T, 1>(at, pp, lse_pos, K, N, n, 1);
}

// One thread per position: backward of both softmaxes.
template <class T>
__global__ void grad_kernel(const T* __restrict__ at, const T* __restrict__ dpc, const T* __restrict__ dpp,
                            const T* __restrict__ lse_cls, const T* __restrict__ lse_pos,
                            const T* __restrict__ dcls, T* __restrict__ pd, T* __restrict__ pp, idx_t K, idx_t N) {
    const idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x;
    if (n < N) grad_columns<T, 1>(at, dpc, dpp, lse_cls, lse_pos, dcls, pd, pp, K, N, n, 1);
}

constexpr int COLUMN_THREADS = 256;

// Host launchers; same arguments as stats_cpu / grad_cpu in offset_attention_gemm_cpu.cc.
template <class T>
void stats_cuda(const T* at, T* pc, T* pp, T* lse_cls, T* lse_pos, idx_t K, idx_t N) {
    cls_softmax_kernel<T><<<(unsigned)K, CLS_LANES>>>(at, pc, lse_cls, N);
    pos_softmax_kernel<T><<<(unsigned)((N + COLUMN_THREADS - 1) / COLUMN_THREADS), COLUMN_THREADS>>>(
        at, pp, lse_pos, K, N);
}

template <class T>
void grad_cuda(const T* at, const T* dpc, const T* dpp, const T* lse_cls, const T* lse_pos, const T* dcls,
               T* pd, T* pp, idx_t K, idx_t N) {
    grad_kernel<T><<<(unsigned)((N + COLUMN_THREADS - 1) / COLUMN_THREADS), COLUMN_THREADS>>>(
        at, dpc, dpp, lse_cls, lse_pos, dcls, pd, pp, K, N);
}
}  // namespace jseg_oa_gemm

#endif  // JSEG_OFFSET_ATTENTION_GEMM_CUDA_CU
