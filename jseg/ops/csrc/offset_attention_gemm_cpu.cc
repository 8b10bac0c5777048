// CPU operators of the 'gemm' strategy of the coupled attention (see
// jseg/ops/offset_attention_gemm.py): the fast ones (stats_cpu, grad_cpu) and the CUDA kernels'
// twins (stats_twin, grad_twin), which run each CUDA thread's arithmetic of
// offset_attention_gemm_cuda.cu, thread after thread, so that the CPU tests check it.
#ifndef JSEG_OFFSET_ATTENTION_GEMM_CPU_CC
#define JSEG_OFFSET_ATTENTION_GEMM_CPU_CC

#include <algorithm>
#include <cmath>

#include "cpu_simd.h"
#include "offset_attention_gemm.h"

namespace jseg_oa_gemm {
constexpr int CH = jseg_simd::OA_COLUMNS;    // positions per loop iteration (the vectorised loop)
constexpr long long PAR_MIN_WORK = 1 << 16;   // elements of A below which one thread does it all

// Columns [n0, n0 + cnt), cnt <= CH, of the softmax over classes with one exp per element (the
// CUDA kernel's pos_softmax_columns takes two, to keep one thread's state in registers):
// pp[k, n] = exp(at[k, n] - mu[n]) / s[n] and lse_pos[n] = mu[n] + log(s[n]).
template <class T>
inline void pos_softmax_strip(const T* __restrict__ at, T* __restrict__ pp, T* __restrict__ lse_pos,
                              idx_t K, idx_t N, idx_t n0, int cnt) {
    T mu[CH], s[CH];
    for (int q = 0; q < cnt; q++) { mu[q] = at[n0 + q]; s[q] = T(0); }
    for (idx_t k = 1; k < K; k++) {
        const T* a = at + k * N + n0;
        for (int q = 0; q < cnt; q++) mu[q] = t_max(mu[q], a[q]);
    }
    for (idx_t k = 0; k < K; k++) {
        const T* a = at + k * N + n0;
        T* p = pp + k * N + n0;
        for (int q = 0; q < cnt; q++) { const T e = t_exp(a[q] - mu[q]); p[q] = e; s[q] += e; }
    }
    for (int q = 0; q < cnt; q++) { lse_pos[n0 + q] = mu[q] + t_log(s[q]); s[q] = T(1) / s[q]; }
    for (idx_t k = 0; k < K; k++) {
        T* p = pp + k * N + n0;
        for (int q = 0; q < cnt; q++) p[q] *= s[q];
    }
}

// at: A^T (K, N). Out: pc (K, N), pp (K, N), lse_cls (K,), lse_pos (N,). One exp per element of
// each softmax (the exponentials are stored, then scaled).
template <class T>
void stats_cpu(const T* at, T* pc_out, T* pp_out, T* lse_cls, T* lse_pos, idx_t K, idx_t N) {
    #pragma omp parallel if (K * N > PAR_MIN_WORK)
    {
        #pragma omp for schedule(static) nowait
        for (idx_t k = 0; k < K; k++) {
            const T* row = at + k * N;
            T* pc = pc_out + k * N;
            T m = row[0];
            for (idx_t n = 1; n < N; n++) m = t_max(m, row[n]);
            T s = T(0);
            for (idx_t n = 0; n < N; n++) { const T e = t_exp(row[n] - m); pc[n] = e; s += e; }
            lse_cls[k] = m + t_log(s);
            const T inv = T(1) / s;
            for (idx_t n = 0; n < N; n++) pc[n] *= inv;
        }
        #pragma omp for schedule(static)
        for (idx_t n0 = 0; n0 < N; n0 += CH)
            pos_softmax_strip<T>(at, pp_out, lse_pos, K, N, n0, (int)std::min<idx_t>(CH, N - n0));
    }
}

// at: A^T (K, N); dpc = G_cls E^T (K, N); dpp = W G_pos^T (K, N); lse_cls (K,); lse_pos (N,);
// dcls = rowdot(F_cls, G_cls) (K,). Out: pd = [P_cls; dA] (2K, N), pp = P_pos (K, N).
template <class T>
void grad_cpu(const T* at, const T* dpc, const T* dpp, const T* lse_cls, const T* lse_pos, const T* dcls,
              T* pd, T* pp, idx_t K, idx_t N) {
    #pragma omp parallel for schedule(static) if (K * N > PAR_MIN_WORK)
    for (idx_t n0 = 0; n0 < N; n0 += CH)
        grad_columns<T, CH>(at, dpc, dpp, lse_cls, lse_pos, dcls, pd, pp, K, N, n0,
                            (int)std::min<idx_t>(CH, N - n0));
}

// stats_cuda's arithmetic: cls_softmax_kernel (one block of CLS_LANES lanes per row, its shared
// memory and tree emulated here) and pos_softmax_kernel (one column per thread).
template <class T>
void stats_twin(const T* at, T* pc, T* pp, T* lse_cls, T* lse_pos, idx_t K, idx_t N) {
    #pragma omp parallel for schedule(static) if (K * N > PAR_MIN_WORK)
    for (idx_t k = 0; k < K; k++) {
        T sm[CLS_LANES], ss[CLS_LANES];
        const T* row = at + k * N;
        for (int lane = 0; lane < CLS_LANES; lane++) lse_lane(row, N, lane, sm[lane], ss[lane]);
        for (int stride = CLS_LANES / 2; stride > 0; stride >>= 1)
            for (int lane = 0; lane < stride; lane++) lse_tree_step(sm, ss, lane, stride);
        const T lse = sm[0] + t_log(ss[0]);
        lse_cls[k] = lse;
        for (int lane = 0; lane < CLS_LANES; lane++) cls_exp_lane(row, pc + k * N, lse, N, lane);
    }
    for (idx_t n = 0; n < N; n++) pos_softmax_columns<T, 1>(at, pp, lse_pos, K, N, n, 1);
}

// grad_cuda's arithmetic: grad_kernel, one column per thread.
template <class T>
void grad_twin(const T* at, const T* dpc, const T* dpp, const T* lse_cls, const T* lse_pos, const T* dcls,
               T* pd, T* pp, idx_t K, idx_t N) {
    for (idx_t n = 0; n < N; n++) grad_columns<T, 1>(at, dpc, dpp, lse_cls, lse_pos, dcls, pd, pp, K, N, n, 1);
}
}  // namespace jseg_oa_gemm

#endif  // JSEG_OFFSET_ATTENTION_GEMM_CPU_CC
