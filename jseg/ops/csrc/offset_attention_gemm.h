// Per-position and per-class arithmetic of the 'gemm' strategy of the coupled attention, shared
// by its CUDA kernels (offset_attention_gemm_cuda.cu) and its CPU operators
// (offset_attention_gemm_cpu.cc); see jseg/ops/offset_attention_gemm.py.
//
// All matrices are class-major (K, N), row-major: at = A^T (attention logits), pc = P_cls
// (softmax over positions, along each row), pp = P_pos (softmax over classes, along each
// column). A column is one position n.
#ifndef JSEG_OFFSET_ATTENTION_GEMM_H
#define JSEG_OFFSET_ATTENTION_GEMM_H

#include "host_device.h"

#ifndef __CUDACC__
#include <cmath>
#endif

namespace jseg_oa_gemm {
typedef long long idx_t;

#ifdef __CUDACC__
JSEG_HD float t_exp(float x) { return expf(x); }
JSEG_HD double t_exp(double x) { return exp(x); }
JSEG_HD float t_log(float x) { return logf(x); }
JSEG_HD double t_log(double x) { return log(x); }
#else
template <class T> inline T t_exp(T x) { return std::exp(x); }
template <class T> inline T t_log(T x) { return std::log(x); }
#endif
template <class T> JSEG_HD T t_max(T a, T b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------------
// Softmax over classes (one column per CUDA thread, CH columns per CPU loop iteration)

// Columns [n0, n0 + cnt), cnt <= CH: lse_pos[n] and pp[k, n] = exp(at[k, n] - lse_pos[n]).
template <class T, int CH>
JSEG_HD void pos_softmax_columns(const T* at, T* pp, T* lse_pos, idx_t K, idx_t N, idx_t n0, int cnt) {
    T mu[CH], s[CH];
    for (int q = 0; q < cnt; q++) { mu[q] = at[n0 + q]; s[q] = T(0); }
    for (idx_t k = 1; k < K; k++)
        for (int q = 0; q < cnt; q++) mu[q] = t_max(mu[q], at[k * N + n0 + q]);
    for (idx_t k = 0; k < K; k++)
        for (int q = 0; q < cnt; q++) s[q] += t_exp(at[k * N + n0 + q] - mu[q]);
    for (int q = 0; q < cnt; q++) { mu[q] += t_log(s[q]); lse_pos[n0 + q] = mu[q]; }
    for (idx_t k = 0; k < K; k++)
        for (int q = 0; q < cnt; q++) pp[k * N + n0 + q] = t_exp(at[k * N + n0 + q] - mu[q]);
}

// Backward of both softmaxes for columns [n0, n0 + cnt):
// pc = exp(at - lse_cls[k]), pp = exp(at - lse_pos[n]), dpos[n] = sum_k pp * dpp,
// da = pc * (dpc - dcls[k]) + pp * (dpp - dpos[n]).
// pd is (2K, N): rows [0, K) get pc, rows [K, 2K) get da; pp is (K, N).
template <class T, int CH>
JSEG_HD void grad_columns(const T* at, const T* dpc, const T* dpp, const T* lse_cls, const T* lse_pos,
                          const T* dcls, T* pd, T* pp, idx_t K, idx_t N, idx_t n0, int cnt) {
    T dpos[CH];
    for (int q = 0; q < cnt; q++) dpos[q] = T(0);
    for (idx_t k = 0; k < K; k++)
        for (int q = 0; q < cnt; q++) {
            const idx_t i = k * N + n0 + q;
            const T p = t_exp(at[i] - lse_pos[n0 + q]);
            pp[i] = p;
            dpos[q] += p * dpp[i];
        }
    for (idx_t k = 0; k < K; k++)
        for (int q = 0; q < cnt; q++) {
            const idx_t i = k * N + n0 + q;
            const T pc = t_exp(at[i] - lse_cls[k]);
            pd[i] = pc;
            pd[K * N + i] = pc * (dpc[i] - dcls[k]) + pp[i] * (dpp[i] - dpos[q]);
        }
}

// ---------------------------------------------------------------------------------------------
// Softmax over positions of one class row, as a block of CLS_LANES CUDA threads computes it:
// each lane merges the positions lane, lane + CLS_LANES, ... into a running (max m, sum s)
// state with lse_merge (sum of exp = s * exp(m)); the lane states are then merged pairwise in a
// tree (state i absorbs state i + stride, stride = CLS_LANES/2, ..., 1); lse = m + log(s).

constexpr int CLS_LANES = 256;   // threads per block of the CUDA kernel (a power of two)

// Merge a second partial log-sum-exp state (m2, s2) into (m, s); s == 0 is the empty state.
template <class T>
JSEG_HD void lse_merge(T& m, T& s, T m2, T s2) {
    if (s2 == T(0)) return;
    if (s == T(0)) { m = m2; s = s2; return; }
    if (m2 > m) { s = s * t_exp(m - m2) + s2; m = m2; }
    else s += s2 * t_exp(m2 - m);
}

// The state of lane `lane` over a row of N logits.
template <class T>
JSEG_HD void lse_lane(const T* row, idx_t N, int lane, T& m, T& s) {
    m = T(0);
    s = T(0);
    for (idx_t n = lane; n < N; n += CLS_LANES) lse_merge(m, s, row[n], T(1));
}

// One step of the tree: lane i (< stride) absorbs lane i + stride.
template <class T>
JSEG_HD void lse_tree_step(T* m, T* s, int i, int stride) {
    T m1 = m[i], s1 = s[i];
    lse_merge(m1, s1, m[i + stride], s[i + stride]);
    m[i] = m1;
    s[i] = s1;
}

// pc[n] = exp(row[n] - lse) for the positions of lane `lane`.
template <class T>
JSEG_HD void cls_exp_lane(const T* row, T* pc, T lse, idx_t N, int lane) {
    for (idx_t n = lane; n < N; n += CLS_LANES) pc[n] = t_exp(row[n] - lse);
}
}  // namespace jseg_oa_gemm

#endif  // JSEG_OFFSET_ATTENTION_GEMM_H
