// The 'fused' CPU strategy of the coupled attention: one operator per direction and layout,
// working on blocks of NB positions, jseg_simd::OA_BLOCK unless given (cpu_simd.h); see
// jseg/ops/offset_attention_fused_cpu.py for the algorithm. Each function writes all of its
// outputs (Jittor does not zero them).
#ifndef JSEG_OFFSET_ATTENTION_FUSED_CPU_CC
#define JSEG_OFFSET_ATTENTION_FUSED_CPU_CC

#include "offset_attention_fused_cpu.h"

namespace jseg_oa {
// Token-major forward. e_in: E (B, N, C); w_in: W (Bw, K, C), Bw in {1, B}.
// Out: F_cls (B, K, C), F_pos (B, N, C), lse_cls (B, K), lse_pos (B, N).
template <class T, idx_t NB = jseg_simd::OA_BLOCK>
void forward_token_major(const T* e_in, const T* w_in, T* f_cls_out, T* f_pos_out, T* lse_cls_out, T* lse_pos_out,
    idx_t B, idx_t N, idx_t C, idx_t Bw, idx_t K) {
    const idx_t Kp = round_up(K, PAD), Cp = round_up(C, PAD), nblk = (N + NB - 1) / NB;
    const int nthr = (double)B * N * K * C > PAR_MIN_WORK ? omp_get_max_threads() : 1;
    const T LOW = std::numeric_limits<T>::lowest();
    std::vector<T> Wt(Cp * Kp, T(0)), Wp(Kp * Cp, T(0));
    std::vector<T> part_acc((size_t)nthr * Kp * Cp), part_m((size_t)nthr * Kp), part_z((size_t)nthr * Kp);
    #pragma omp parallel num_threads(nthr)
    {
        const int tid = omp_get_thread_num();
        std::vector<T> Eb(NB * Cp, T(0)), A(NB * Kp, T(0)), Pp(NB * Kp, T(0)), Pct(Kp * NB, T(0)),
                       Fb(NB * Cp, T(0)), bm(Kp);
        T* acc = part_acc.data() + (size_t)tid * Kp * Cp;
        T* m = part_m.data() + (size_t)tid * Kp;
        T* z = part_z.data() + (size_t)tid * Kp;
        for (idx_t b = 0; b < B; b++) {
            const T* Wb = w_in + (Bw > 1 ? b : 0) * K * C;
            const T* Eg = e_in + b * N * C;
            #pragma omp single
            {
                for (idx_t k = 0; k < K; k++)
                    for (idx_t c = 0; c < C; c++) {
                        Wt[c * Kp + k] = Wb[k * C + c];
                        Wp[k * Cp + c] = Wb[k * C + c];
                    }
            }
            for (idx_t k = 0; k < Kp; k++) { m[k] = LOW; z[k] = T(0); }
            std::memset(acc, 0, sizeof(T) * Kp * Cp);
            #pragma omp for schedule(static)
            for (idx_t blk = 0; blk < nblk; blk++) {
                const idx_t n0 = blk * NB, nv = std::min(NB, N - n0);
                pack_rows<T>(Eg, C, n0, nv, NB, Eb.data(), Cp);
                gemm<T>(NB, Kp, C, Eb.data(), Cp, Wt.data(), Kp, A.data(), Kp, false);   // A = E W^T
                // softmax over classes, one position (row) at a time
                for (idx_t n = 0; n < nv; n++) {
                    const T* a = A.data() + n * Kp;
                    T* p = Pp.data() + n * Kp;
                    T mu = LOW;
                    for (idx_t k = 0; k < K; k++) mu = std::max(mu, a[k]);
                    T s = T(0);
                    for (idx_t k = 0; k < K; k++) { const T e = std::exp(a[k] - mu); p[k] = e; s += e; }
                    const T inv = T(1) / s;
                    for (idx_t k = 0; k < K; k++) p[k] *= inv;
                    lse_pos_out[b * N + n0 + n] = mu + std::log(s);
                }
                // online softmax over positions, one class (column) at a time
                for (idx_t k = 0; k < K; k++) bm[k] = LOW;
                for (idx_t n = 0; n < nv; n++) {
                    const T* a = A.data() + n * Kp;
                    for (idx_t k = 0; k < K; k++) bm[k] = std::max(bm[k], a[k]);
                }
                for (idx_t k = 0; k < K; k++) {
                    if (bm[k] > m[k]) {
                        const T sc = std::exp(m[k] - bm[k]);
                        m[k] = bm[k];
                        z[k] *= sc;
                        T* ar = acc + k * Cp;
                        for (idx_t c = 0; c < Cp; c++) ar[c] *= sc;
                    }
                }
                for (idx_t n = 0; n < nv; n++) {
                    const T* a = A.data() + n * Kp;
                    for (idx_t k = 0; k < K; k++) Pct[k * NB + n] = std::exp(a[k] - m[k]);
                }
                for (idx_t k = 0; k < K; k++) {
                    T* pr = Pct.data() + k * NB;
                    for (idx_t n = nv; n < NB; n++) pr[n] = T(0);
                    T s = T(0);
                    for (idx_t n = 0; n < nv; n++) s += pr[n];
                    z[k] += s;
                }
                gemm<T>(NB, Cp, K, Pp.data(), Kp, Wp.data(), Cp, Fb.data(), Cp, false);   // F_pos = P_pos W
                for (idx_t n = 0; n < nv; n++)
                    std::memcpy(f_pos_out + (b * N + n0 + n) * C, Fb.data() + n * Cp, sizeof(T) * C);
                gemm<T>(K, Cp, NB, Pct.data(), NB, Eb.data(), Cp, acc, Cp, true);         // acc += P_cls^T E
            }
            // merge the per-thread online-softmax states (implicit barrier above)
            #pragma omp for schedule(static)
            for (idx_t k = 0; k < K; k++) {
                T mm = LOW;
                for (int t = 0; t < nthr; t++) mm = std::max(mm, part_m[(size_t)t * Kp + k]);
                T zz = T(0);
                for (int t = 0; t < nthr; t++) zz += part_z[(size_t)t * Kp + k] * std::exp(part_m[(size_t)t * Kp + k] - mm);
                lse_cls_out[b * K + k] = mm + std::log(zz);
                T* dst = f_cls_out + (b * K + k) * C;
                for (idx_t c = 0; c < C; c++) dst[c] = T(0);
                for (int t = 0; t < nthr; t++) {
                    const T f = std::exp(part_m[(size_t)t * Kp + k] - mm) / zz;
                    const T* src = part_acc.data() + ((size_t)t * Kp + k) * Cp;
                    for (idx_t c = 0; c < C; c++) dst[c] += f * src[c];
                }
            }
        }
    }
}

// Token-major backward. e_in: E (B, N, C); w_in: W (Bw, K, C); g_cls_in: G_cls (B, K, C);
// g_pos_in: G_pos (B, N, C); lse_cls_in (B, K); lse_pos_in (B, N); f_cls_in: F_cls (B, K, C).
// Out: dE (B, N, C), dW (Bw, K, C).
template <class T, idx_t NB = jseg_simd::OA_BLOCK>
void backward_token_major(const T* e_in, const T* w_in, const T* g_cls_in, const T* g_pos_in, const T* lse_cls_in,
    const T* lse_pos_in, const T* f_cls_in, T* d_e_out, T* d_w_out, idx_t B, idx_t N, idx_t C, idx_t Bw, idx_t K) {
    const idx_t Kp = round_up(K, PAD), Cp = round_up(C, PAD), nblk = (N + NB - 1) / NB;
    const int nthr = (double)B * N * K * C > PAR_MIN_WORK ? omp_get_max_threads() : 1;
    // X1 = [W^T | G_cls^T] (Cp x 2Kp), Y2 = [G_cls; W] (2K x Cp), per image
    std::vector<T> X1(Cp * 2 * Kp, T(0)), Y2(2 * Kp * Cp, T(0)), dcls(Kp, T(0));
    std::vector<T> part_dw((size_t)nthr * K * Cp);
    #pragma omp parallel num_threads(nthr)
    {
        const int tid = omp_get_thread_num();
        // GE = [G_pos,blk; E_blk] (2NB x Cp); AP = [A | E G_cls^T] (NB x 2Kp); DP = G_pos W^T (NB x Kp)
        // PD = [P_cls | dA] (NB x 2K, leading dim 2Kp); Zt = [P_pos^T | dA^T] (K x 2NB); dEb (NB x Cp)
        std::vector<T> GE(2 * NB * Cp, T(0)), AP(NB * 2 * Kp, T(0)), DP(NB * Kp, T(0)),
                       PD(NB * 2 * Kp, T(0)), Zt(Kp * 2 * NB, T(0)), dEb(NB * Cp, T(0)), pp(Kp);
        T* dw = part_dw.data() + (size_t)tid * K * Cp;
        T* Gb = GE.data();
        T* Eb = GE.data() + NB * Cp;
        for (idx_t b = 0; b < B; b++) {
            const T* Wb = w_in + (Bw > 1 ? b : 0) * K * C;
            const T* Gc = g_cls_in + b * K * C;
            const T* Fc = f_cls_in + b * K * C;
            const T* Eg = e_in + b * N * C;
            const T* Gg = g_pos_in + b * N * C;
            const T* lc = lse_cls_in + b * K;
            const T* lp = lse_pos_in + b * N;
            #pragma omp single
            {
                for (idx_t k = 0; k < K; k++) {
                    T d = T(0);
                    for (idx_t c = 0; c < C; c++) {
                        X1[c * 2 * Kp + k] = Wb[k * C + c];
                        X1[c * 2 * Kp + Kp + k] = Gc[k * C + c];
                        Y2[k * Cp + c] = Gc[k * C + c];
                        Y2[(K + k) * Cp + c] = Wb[k * C + c];
                        d += Fc[k * C + c] * Gc[k * C + c];
                    }
                    dcls[k] = d;
                }
            }
            std::memset(dw, 0, sizeof(T) * K * Cp);
            #pragma omp for schedule(static)
            for (idx_t blk = 0; blk < nblk; blk++) {
                const idx_t n0 = blk * NB, nv = std::min(NB, N - n0);
                pack_rows<T>(Gg, C, n0, nv, NB, Gb, Cp);
                pack_rows<T>(Eg, C, n0, nv, NB, Eb, Cp);
                gemm<T>(NB, 2 * Kp, C, Eb, Cp, X1.data(), 2 * Kp, AP.data(), 2 * Kp, false);  // [A | E G_cls^T]
                gemm<T>(NB, Kp, C, Gb, Cp, X1.data(), 2 * Kp, DP.data(), Kp, false);          // G_pos W^T
                for (idx_t n = 0; n < nv; n++) {
                    const T* a = AP.data() + n * 2 * Kp;
                    const T* dpc = a + Kp;
                    const T* dpp = DP.data() + n * Kp;
                    T* pd = PD.data() + n * 2 * Kp;
                    const T l = lp[n0 + n];
                    T dpos = T(0);
                    for (idx_t k = 0; k < K; k++) { const T p = std::exp(a[k] - l); pp[k] = p; dpos += p * dpp[k]; }
                    for (idx_t k = 0; k < K; k++) {
                        const T pc = std::exp(a[k] - lc[k]);
                        const T da = pc * (dpc[k] - dcls[k]) + pp[k] * (dpp[k] - dpos);
                        pd[k] = pc;
                        pd[K + k] = da;
                        Zt[k * 2 * NB + n] = pp[k];
                        Zt[k * 2 * NB + NB + n] = da;
                    }
                }
                for (idx_t k = 0; k < K; k++)
                    for (idx_t n = nv; n < NB; n++) { Zt[k * 2 * NB + n] = T(0); Zt[k * 2 * NB + NB + n] = T(0); }
                gemm<T>(NB, Cp, 2 * K, PD.data(), 2 * Kp, Y2.data(), Cp, dEb.data(), Cp, false);   // dE
                for (idx_t n = 0; n < nv; n++)
                    std::memcpy(d_e_out + (b * N + n0 + n) * C, dEb.data() + n * Cp, sizeof(T) * C);
                gemm<T>(K, Cp, 2 * NB, Zt.data(), 2 * NB, GE.data(), Cp, dw, Cp, true);             // dW
            }
            #pragma omp for schedule(static)
            for (idx_t k = 0; k < K; k++) {
                T* dst = d_w_out + ((Bw > 1 ? b : 0) * K + k) * C;
                if (Bw > 1 || b == 0)
                    for (idx_t c = 0; c < C; c++) dst[c] = T(0);
                for (int t = 0; t < nthr; t++) {
                    const T* src = part_dw.data() + ((size_t)t * K + k) * Cp;
                    for (idx_t c = 0; c < C; c++) dst[c] += src[c];
                }
            }
        }
    }
}

// Channels-first forward. e_in: E^T (B, C, N); w_in: W (Bw, K, C), Bw in {1, B}.
// Out: F_cls (B, K, C), F_pos^T (B, C, N), lse_cls (B, K), lse_pos (B, N).
template <class T, idx_t NB = jseg_simd::OA_BLOCK>
void forward_channels_first(const T* e_in, const T* w_in, T* f_cls_out, T* f_pos_out, T* lse_cls_out, T* lse_pos_out,
    idx_t B, idx_t N, idx_t C, idx_t Bw, idx_t K) {
    const idx_t Kp = round_up(K, PAD), nblk = (N + NB - 1) / NB;
    const int nthr = (double)B * N * K * C > PAR_MIN_WORK ? omp_get_max_threads() : 1;
    const T LOW = std::numeric_limits<T>::lowest();
    std::vector<T> Wt(C * Kp, T(0));                                       // W^T (C x Kp)
    std::vector<T> part_acc((size_t)nthr * C * Kp), part_m((size_t)nthr * Kp), part_z((size_t)nthr * Kp);
    #pragma omp parallel num_threads(nthr)
    {
        const int tid = omp_get_thread_num();
        // Eb = E_blk^T (C x NB); At = A_blk^T (K x NB); Ppt = P_pos,blk^T (K x NB);
        // Pc = P_cls,blk (NB x Kp, unnormalised); Fb: staging for a partial last block (C x NB)
        std::vector<T> Eb(C * NB, T(0)), At(K * NB, T(0)), Ppt(K * NB, T(0)), Pc(NB * Kp, T(0)),
                       Fb(C * NB, T(0)), mu(NB), sum(NB);
        T* acc = part_acc.data() + (size_t)tid * C * Kp;                   // acc^T (C x Kp)
        T* m = part_m.data() + (size_t)tid * Kp;
        T* z = part_z.data() + (size_t)tid * Kp;
        for (idx_t b = 0; b < B; b++) {
            const T* Wb = w_in + (Bw > 1 ? b : 0) * K * C;
            const T* Eg = e_in + b * C * N;
            T* Fg = f_pos_out + b * C * N;
            #pragma omp single
            {
                for (idx_t k = 0; k < K; k++)
                    for (idx_t c = 0; c < C; c++) Wt[c * Kp + k] = Wb[k * C + c];
            }
            for (idx_t k = 0; k < Kp; k++) { m[k] = LOW; z[k] = T(0); }
            std::memset(acc, 0, sizeof(T) * C * Kp);
            #pragma omp for schedule(static)
            for (idx_t blk = 0; blk < nblk; blk++) {
                const idx_t n0 = blk * NB, nv = std::min(NB, N - n0);
                pack_cols<T>(Eg, C, N, n0, nv, NB, Eb.data(), NB);
                gemm<T>(K, NB, C, Wb, C, Eb.data(), NB, At.data(), NB, false);       // A^T = W E^T
                // softmax over classes: each column (position) of A^T, vectorised over positions
                for (idx_t n = 0; n < NB; n++) { mu[n] = LOW; sum[n] = T(0); }
                for (idx_t k = 0; k < K; k++) {
                    const T* a = At.data() + k * NB;
                    for (idx_t n = 0; n < NB; n++) mu[n] = std::max(mu[n], a[n]);
                }
                for (idx_t k = 0; k < K; k++) {
                    const T* a = At.data() + k * NB;
                    T* p = Ppt.data() + k * NB;
                    for (idx_t n = 0; n < NB; n++) { const T e = std::exp(a[n] - mu[n]); p[n] = e; sum[n] += e; }
                }
                for (idx_t n = 0; n < nv; n++) lse_pos_out[b * N + n0 + n] = mu[n] + std::log(sum[n]);
                for (idx_t n = 0; n < NB; n++) sum[n] = T(1) / sum[n];
                for (idx_t k = 0; k < K; k++) {
                    T* p = Ppt.data() + k * NB;
                    for (idx_t n = 0; n < NB; n++) p[n] *= sum[n];
                }
                // online softmax over positions: each row (class) of A^T
                for (idx_t k = 0; k < K; k++) {
                    const T* a = At.data() + k * NB;
                    T bm = LOW;
                    for (idx_t n = 0; n < nv; n++) bm = std::max(bm, a[n]);
                    if (bm > m[k]) {
                        const T sc = std::exp(m[k] - bm);
                        m[k] = bm;
                        z[k] *= sc;
                        for (idx_t c = 0; c < C; c++) acc[c * Kp + k] *= sc;
                    }
                    T s = T(0);
                    for (idx_t n = 0; n < nv; n++) { const T e = std::exp(a[n] - m[k]); Pc[n * Kp + k] = e; s += e; }
                    z[k] += s;
                }
                for (idx_t n = nv; n < NB; n++) std::memset(Pc.data() + n * Kp, 0, sizeof(T) * Kp);
                if (nv == NB) {
                    gemm<T>(C, NB, K, Wt.data(), Kp, Ppt.data(), NB, Fg + n0, N, false);   // F_pos^T = W^T P_pos^T
                } else {
                    gemm<T>(C, NB, K, Wt.data(), Kp, Ppt.data(), NB, Fb.data(), NB, false);
                    for (idx_t c = 0; c < C; c++) std::memcpy(Fg + c * N + n0, Fb.data() + c * NB, sizeof(T) * nv);
                }
                gemm<T>(C, Kp, NB, Eb.data(), NB, Pc.data(), Kp, acc, Kp, true);           // acc^T += E^T P_cls
            }
            // merge the per-thread online-softmax states (implicit barrier above)
            #pragma omp for schedule(static)
            for (idx_t k = 0; k < K; k++) {
                T mm = LOW;
                for (int t = 0; t < nthr; t++) mm = std::max(mm, part_m[(size_t)t * Kp + k]);
                T zz = T(0);
                for (int t = 0; t < nthr; t++) zz += part_z[(size_t)t * Kp + k] * std::exp(part_m[(size_t)t * Kp + k] - mm);
                lse_cls_out[b * K + k] = mm + std::log(zz);
                T* dst = f_cls_out + (b * K + k) * C;
                for (idx_t c = 0; c < C; c++) dst[c] = T(0);
                for (int t = 0; t < nthr; t++) {
                    const T f = std::exp(part_m[(size_t)t * Kp + k] - mm) / zz;
                    const T* src = part_acc.data() + (size_t)t * C * Kp + k;
                    for (idx_t c = 0; c < C; c++) dst[c] += f * src[c * Kp];
                }
            }
        }
    }
}

// Channels-first backward. e_in: E^T (B, C, N); w_in: W (Bw, K, C); g_cls_in: G_cls (B, K, C);
// g_pos_in: G_pos^T (B, C, N); lse_cls_in (B, K); lse_pos_in (B, N); f_cls_in: F_cls (B, K, C).
// Out: dE^T (B, C, N), dW (Bw, K, C).
template <class T, idx_t NB = jseg_simd::OA_BLOCK>
void backward_channels_first(const T* e_in, const T* w_in, const T* g_cls_in, const T* g_pos_in, const T* lse_cls_in,
    const T* lse_pos_in, const T* f_cls_in, T* d_e_out, T* d_w_out, idx_t B, idx_t N, idx_t C, idx_t Bw, idx_t K) {
    const idx_t Kp = round_up(K, PAD), nblk = (N + NB - 1) / NB;
    const int nthr = (double)B * N * K * C > PAR_MIN_WORK ? omp_get_max_threads() : 1;
    // per image: WG = [W; G_cls] (2K x C); X2 = [G_cls^T | W^T] (C x 2K, leading dim 2Kp);
    // dcls = rowdot(F_cls, G_cls)
    std::vector<T> WG(2 * K * C), X2(C * 2 * Kp, T(0)), dcls(K);
    std::vector<T> part_dw((size_t)nthr * C * Kp);                           // dW^T partials (C x Kp)
    #pragma omp parallel num_threads(nthr)
    {
        const int tid = omp_get_thread_num();
        // GE = [G_pos,blk^T | E_blk^T] (C x 2NB); AD = [A^T; (E G_cls^T)^T] (2K x NB); DP = (G_pos W^T)^T (K x NB)
        // PPt = P_pos^T (K x NB); PDt = [P_cls^T; dA^T] (2K x NB); PA = [P_pos; dA] (2NB x Kp); dEb (C x NB)
        std::vector<T> GE(C * 2 * NB, T(0)), AD(2 * K * NB, T(0)), DP(K * NB, T(0)), PPt(K * NB, T(0)),
                       PDt(2 * Kp * NB, T(0)), PA(2 * NB * Kp, T(0)), dEb(C * NB, T(0)), lp(NB), dpos(NB);
        T* dw = part_dw.data() + (size_t)tid * C * Kp;
        for (idx_t b = 0; b < B; b++) {
            const T* Wb = w_in + (Bw > 1 ? b : 0) * K * C;
            const T* Gc = g_cls_in + b * K * C;
            const T* Fc = f_cls_in + b * K * C;
            const T* Eg = e_in + b * C * N;
            const T* Gg = g_pos_in + b * C * N;
            const T* lc = lse_cls_in + b * K;
            T* dEg = d_e_out + b * C * N;
            #pragma omp single
            {
                std::memcpy(WG.data(), Wb, sizeof(T) * K * C);
                std::memcpy(WG.data() + K * C, Gc, sizeof(T) * K * C);
                for (idx_t k = 0; k < K; k++) {
                    T d = T(0);
                    for (idx_t c = 0; c < C; c++) {
                        X2[c * 2 * Kp + k] = Gc[k * C + c];
                        X2[c * 2 * Kp + K + k] = Wb[k * C + c];
                        d += Fc[k * C + c] * Gc[k * C + c];
                    }
                    dcls[k] = d;
                }
            }
            std::memset(dw, 0, sizeof(T) * C * Kp);
            #pragma omp for schedule(static)
            for (idx_t blk = 0; blk < nblk; blk++) {
                const idx_t n0 = blk * NB, nv = std::min(NB, N - n0);
                pack_cols<T>(Gg, C, N, n0, nv, NB, GE.data(), 2 * NB);
                pack_cols<T>(Eg, C, N, n0, nv, NB, GE.data() + NB, 2 * NB);
                gemm<T>(2 * K, NB, C, WG.data(), C, GE.data() + NB, 2 * NB, AD.data(), NB, false);  // [A^T; dPc^T]
                gemm<T>(K, NB, C, Wb, C, GE.data(), 2 * NB, DP.data(), NB, false);                  // dPp^T
                for (idx_t n = 0; n < nv; n++) { lp[n] = lse_pos_in[b * N + n0 + n]; dpos[n] = T(0); }
                for (idx_t k = 0; k < K; k++) {
                    const T* a = AD.data() + k * NB;
                    const T* dpp = DP.data() + k * NB;
                    T* p = PPt.data() + k * NB;
                    for (idx_t n = 0; n < nv; n++) { const T e = std::exp(a[n] - lp[n]); p[n] = e; dpos[n] += e * dpp[n]; }
                }
                for (idx_t k = 0; k < K; k++) {
                    const T* a = AD.data() + k * NB;
                    const T* dpc = AD.data() + (K + k) * NB;
                    const T* dpp = DP.data() + k * NB;
                    const T* p = PPt.data() + k * NB;
                    T* pc_row = PDt.data() + k * NB;
                    T* da_row = PDt.data() + (K + k) * NB;
                    const T l = lc[k], d = dcls[k];
                    for (idx_t n = 0; n < nv; n++) {
                        const T pc = std::exp(a[n] - l);
                        pc_row[n] = pc;
                        da_row[n] = pc * (dpc[n] - d) + p[n] * (dpp[n] - dpos[n]);
                    }
                    for (idx_t n = nv; n < NB; n++) { pc_row[n] = T(0); da_row[n] = T(0); }
                    for (idx_t n = 0; n < nv; n++) {
                        PA[n * Kp + k] = p[n];
                        PA[(NB + n) * Kp + k] = da_row[n];
                    }
                }
                for (idx_t n = nv; n < NB; n++) {
                    std::memset(PA.data() + n * Kp, 0, sizeof(T) * Kp);
                    std::memset(PA.data() + (NB + n) * Kp, 0, sizeof(T) * Kp);
                }
                if (nv == NB) {
                    gemm<T>(C, NB, 2 * K, X2.data(), 2 * Kp, PDt.data(), NB, dEg + n0, N, false);   // dE^T
                } else {
                    gemm<T>(C, NB, 2 * K, X2.data(), 2 * Kp, PDt.data(), NB, dEb.data(), NB, false);
                    for (idx_t c = 0; c < C; c++) std::memcpy(dEg + c * N + n0, dEb.data() + c * NB, sizeof(T) * nv);
                }
                gemm<T>(C, Kp, 2 * NB, GE.data(), 2 * NB, PA.data(), Kp, dw, Kp, true);            // dW^T
            }
            #pragma omp for schedule(static)
            for (idx_t k = 0; k < K; k++) {
                T* dst = d_w_out + ((Bw > 1 ? b : 0) * K + k) * C;
                if (Bw > 1 || b == 0)
                    for (idx_t c = 0; c < C; c++) dst[c] = T(0);
                for (int t = 0; t < nthr; t++) {
                    const T* src = part_dw.data() + (size_t)t * C * Kp + k;
                    for (idx_t c = 0; c < C; c++) dst[c] += src[c * Kp];
                }
            }
        }
    }
}
}  // namespace jseg_oa

#endif  // JSEG_OFFSET_ATTENTION_FUSED_CPU_CC
