"""The coupled attention of offset learning as JIT-compiled Jittor operators.

Same arguments and results as
:func:`jseg.ops.offset_attention.offset_attention_reference`: from image
features E (B, HW, C) (or E^T (B, C, HW) with ``channels_first``) and class
representations W (B, K, C) (or (1, K, C), shared by the batch), with
A = E W^T (B, HW, K)::

    F_cls = softmax_over_positions(A)^T E     (B, K, C)     class prototypes
    F_pos = softmax_over_classes(A) W         (B, HW, C)    position guidance

Neither operator keeps a (B, HW, K) tensor for backward: the forward saves
only the two log-sum-exp vectors, ``lse_cls`` (B, K) over positions and
``lse_pos`` (B, HW) over classes, i.e. O(B*(K+HW)) numbers, plus F_cls
(B, K, C); backward recomputes A and both probability maps from them. With
``P_cls = exp(A - lse_cls)``, ``P_pos = exp(A - lse_pos)`` and the incoming
gradients G_cls (B, K, C), G_pos (B, HW, C)::

    dA    = P_cls * (E G_cls^T - rowdot(F_cls, G_cls))             # softmax over positions
          + P_pos * (G_pos W^T - rowsum(P_pos * G_pos W^T))          # softmax over classes
    dE    = P_cls G_cls + dA W
    dW    = P_pos^T G_pos + dA^T E

(``rowdot(F_cls, G_cls)[k] = sum_c F_cls[k, c] G_cls[k, c]`` equals
``sum_n P_cls[n, k] (E G_cls^T)[n, k]``, so the class-softmax backward needs
no second pass over the positions.)

Two implementations, chosen by ``strategy``:

``'fused'`` (the CPU default)
    One ``jt.code`` operator for the forward and one for the backward; the
    (HW, K) matrices exist only as per-thread blocks of ``NB`` (64) positions
    in L2-sized scratch buffers (about 0.5 MB per thread at K=150, C=256).
    OpenMP splits the positions of each image into blocks (schedule static,
    no shared writes); per block the forward computes the attention block
    (``E_blk W^T``), the softmax over classes of each of its positions and
    their ``F_pos`` rows (``P_pos,blk W``), and updates an *online* softmax
    over positions for every class: running max ``m_k``, running sum ``z_k``
    and an unnormalised ``acc_k += exp(A_blk[:, k] - m_k)^T E_blk``, rescaled
    when ``m_k`` grows. Each thread keeps its own (m, z, acc); they are merged
    at the end. The backward makes one pass over the blocks with seven block
    products (``[A | E G_cls^T] = E_blk [W; G_cls]^T``, ``G_pos,blk W^T``,
    ``dE_blk = [P_cls | dA] [G_cls; W]``,
    ``dW += [P_pos^T | dA^T] [G_pos,blk; E_blk]``) and per-thread dW
    partials. Each layout has its own pair of kernels, arranged so that no
    block of features is ever transposed: token-major works on (NB, C) row
    blocks and the attention block as (NB, K); channels-first works on
    (C, NB) column blocks (contiguous row segments of E^T, copied once into
    a packed buffer) and the attention block as (K, NB), writing F_pos^T and
    dE^T blocks straight into the outputs. Only the (NB, K) probability
    blocks are transposed, where a product needs them the other way round.
    All products go through one register-tiled micro-kernel (``MR`` rows x 2
    SIMD vectors of accumulators, GCC vector extensions, broadcast-FMA over
    the reduction index, every operand row contiguous, K and C zero-padded to
    multiples of 32 where they are the vector dimension), which runs at the
    speed of Jittor's oneDNN products at these shapes (both near the FMA
    peak of the core). Work: 3 (forward) and 7 (backward) products of
    HW x K x C, against 3 and 6 for the composition (the price of not keeping
    A); everything else (both softmaxes, their backward, the reductions) is
    fused into the passes over the blocks. This operator has a ``cpu_src``
    only: under ``jt.flags.use_cuda``, ``'auto'`` uses ``'gemm'``.

``'gemm'`` (the CUDA default)
    Jittor's matrix products (oneDNN on CPU, cuBLAS on CUDA) for the products,
    and two ``jt.code`` operators, each with a ``cpu_src`` and a ``cuda_src``,
    for everything between them: ``softmax_stats`` (both log-sum-exps and both
    probability maps from A^T (K, HW)) and ``attention_grad`` (both maps and
    dA from A^T, ``G_cls E^T`` and ``W G_pos^T``). The probability maps are
    transient (freed after the forward's products); only the statistics are
    saved for backward. Works per image with 2-D products, class-major
    (K, HW), like the reference. The CUDA kernels are written as
    ``__host__ __device__`` column functions (a column = one position)
    shared with the CPU source, so their arithmetic is tested on CPU; the
    CUDA launch code itself only runs on a machine with a GPU.

Speed and memory of both against the composition: run
``python tools/benchmark_ops.py`` (OffSeg-T's offset-learning shapes).
"""
import jittor as jt
from jittor import nn

__all__ = ['offset_attention_fused', 'fused_forward', 'gemm_forward']

# ---------------------------------------------------------------------------
# 'fused': one jt.code operator per direction (CPU)
# ---------------------------------------------------------------------------

_FUSED_HEADER = r'''
#include <vector>
#include <cstring>
#include <cmath>
#include <limits>
#include <algorithm>
#include <omp.h>
namespace jseg_oa {
typedef long long idx_t;
#if defined(__AVX512F__)
constexpr int VBYTES = 64;   // SIMD register width used by the micro-kernel
constexpr int MR_MAX = 8;    // rows per register tile: 8 x 2 accumulators of 32 registers
#else
constexpr int VBYTES = 32;
constexpr int MR_MAX = 6;    // 6 x 2 accumulators of 16 registers
#endif
constexpr int NR = 2;        // SIMD vectors per register tile row
constexpr idx_t PAD = 32;    // K and C are padded to multiples of PAD (a multiple of NR lanes)
constexpr double PAR_MIN_WORK = 1 << 22;   // multiply-adds below which one thread does it all

template <class T> struct Vec { typedef T type __attribute__((vector_size(VBYTES))); };

inline idx_t round_up(idx_t x, idx_t m) { return (x + m - 1) / m * m; }

// O[0:MR, 0:NR*VL] (+)= X[0:MR, 0:L] * Y[0:L, 0:NR*VL]; all row-major with leading dims.
template <class T, int MR>
inline void micro(idx_t L, const T* __restrict__ X, idx_t ldx, const T* __restrict__ Y, idx_t ldy,
                  T* __restrict__ O, idx_t ldo, bool accumulate) {
    typedef typename Vec<T>::type V;
    constexpr int VL = VBYTES / sizeof(T);
    V c[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) {
            if (accumulate) std::memcpy(&c[r][v], O + r * ldo + v * VL, VBYTES);
            else c[r][v] = V{};
        }
    for (idx_t l = 0; l < L; l++) {
        V y[NR];
        for (int v = 0; v < NR; v++) std::memcpy(&y[v], Y + l * ldy + v * VL, VBYTES);
        for (int r = 0; r < MR; r++) {
            const T x = X[r * ldx + l];
            for (int v = 0; v < NR; v++) c[r][v] += x * y[v];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NR; v++) std::memcpy(O + r * ldo + v * VL, &c[r][v], VBYTES);
}

// O (M x N) (+)= X (M x L) * Y (L x N); N must be a multiple of NR*VL (guaranteed by PAD).
template <class T>
inline void gemm(idx_t M, idx_t N, idx_t L, const T* X, idx_t ldx, const T* Y, idx_t ldy,
                 T* O, idx_t ldo, bool accumulate) {
    constexpr int VL = VBYTES / sizeof(T);
    for (idx_t j = 0; j < N; j += NR * VL) {
        idx_t i = 0;
        for (; i + MR_MAX <= M; i += MR_MAX)
            micro<T, MR_MAX>(L, X + i * ldx, ldx, Y + j, ldy, O + i * ldo + j, ldo, accumulate);
        const idx_t rest = M - i;
        const T* x = X + i * ldx; const T* y = Y + j; T* o = O + i * ldo + j;
        switch (rest) {
            case 1: micro<T, 1>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 2: micro<T, 2>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 3: micro<T, 3>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 4: micro<T, 4>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 5: micro<T, 5>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 6: micro<T, (6 < MR_MAX ? 6 : 1)>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            case 7: micro<T, (7 < MR_MAX ? 7 : 1)>(L, x, ldx, y, ldy, o, ldo, accumulate); break;
            default: break;
        }
    }
}

// Copy token-major rows [n0, n0+nv) of src (N x C) into dst (NB x ldd), zero-filling rows nv..NB.
template <class T>
inline void pack_rows(const T* __restrict__ src, idx_t C, idx_t n0, idx_t nv, idx_t NB,
                      T* __restrict__ dst, idx_t ldd) {
    for (idx_t n = 0; n < nv; n++) std::memcpy(dst + n * ldd, src + (n0 + n) * C, sizeof(T) * C);
    for (idx_t n = nv; n < NB; n++) std::memset(dst + n * ldd, 0, sizeof(T) * ldd);
}

// Copy columns [n0, n0+nv) of src (C x N, channels-first) into dst (C x ldd), zero-filling
// columns nv..NB.
template <class T>
inline void pack_cols(const T* __restrict__ src, idx_t C, idx_t N, idx_t n0, idx_t nv, idx_t NB,
                      T* __restrict__ dst, idx_t ldd) {
    for (idx_t c = 0; c < C; c++) {
        std::memcpy(dst + c * ldd, src + c * N + n0, sizeof(T) * nv);
        for (idx_t n = nv; n < NB; n++) dst[c * ldd + n] = T(0);
    }
}
}  // namespace jseg_oa
'''

_FUSED_TM_FORWARD_SRC = r'''
// Token-major. in0: E (B, N, C); in1: W (Bw, K, C), Bw in {1, B}
// out0: F_cls (B, K, C); out1: F_pos (B, N, C); out2: lse_cls (B, K); out3: lse_pos (B, N)
using namespace jseg_oa;
typedef in0_type T;
constexpr idx_t NB = {nb};
const idx_t B = in0_shape0, N = in0_shape1, C = in0_shape2;
const idx_t Bw = in1_shape0, K = in1_shape1;
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
        const T* Wb = in1_p + (Bw > 1 ? b : 0) * K * C;
        const T* Eg = in0_p + b * N * C;
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
                out3_p[b * N + n0 + n] = mu + std::log(s);
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
                std::memcpy(out1_p + (b * N + n0 + n) * C, Fb.data() + n * Cp, sizeof(T) * C);
            gemm<T>(K, Cp, NB, Pct.data(), NB, Eb.data(), Cp, acc, Cp, true);         // acc += P_cls^T E
        }
        // merge the per-thread online-softmax states (implicit barrier above)
        #pragma omp for schedule(static)
        for (idx_t k = 0; k < K; k++) {
            T mm = LOW;
            for (int t = 0; t < nthr; t++) mm = std::max(mm, part_m[(size_t)t * Kp + k]);
            T zz = T(0);
            for (int t = 0; t < nthr; t++) zz += part_z[(size_t)t * Kp + k] * std::exp(part_m[(size_t)t * Kp + k] - mm);
            out2_p[b * K + k] = mm + std::log(zz);
            T* dst = out0_p + (b * K + k) * C;
            for (idx_t c = 0; c < C; c++) dst[c] = T(0);
            for (int t = 0; t < nthr; t++) {
                const T f = std::exp(part_m[(size_t)t * Kp + k] - mm) / zz;
                const T* src = part_acc.data() + ((size_t)t * Kp + k) * Cp;
                for (idx_t c = 0; c < C; c++) dst[c] += f * src[c];
            }
        }
    }
}
'''

_FUSED_TM_BACKWARD_SRC = r'''
// Token-major. in0: E (B, N, C); in1: W (Bw, K, C); in2: G_cls (B, K, C); in3: G_pos (B, N, C);
// in4: lse_cls (B, K); in5: lse_pos (B, N); in6: F_cls (B, K, C).  out0: dE (B, N, C); out1: dW (Bw, K, C)
using namespace jseg_oa;
typedef in0_type T;
constexpr idx_t NB = {nb};
const idx_t B = in0_shape0, N = in0_shape1, C = in0_shape2;
const idx_t Bw = in1_shape0, K = in1_shape1;
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
        const T* Wb = in1_p + (Bw > 1 ? b : 0) * K * C;
        const T* Gc = in2_p + b * K * C;
        const T* Fc = in6_p + b * K * C;
        const T* Eg = in0_p + b * N * C;
        const T* Gg = in3_p + b * N * C;
        const T* lc = in4_p + b * K;
        const T* lp = in5_p + b * N;
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
                std::memcpy(out0_p + (b * N + n0 + n) * C, dEb.data() + n * Cp, sizeof(T) * C);
            gemm<T>(K, Cp, 2 * NB, Zt.data(), 2 * NB, GE.data(), Cp, dw, Cp, true);             // dW
        }
        #pragma omp for schedule(static)
        for (idx_t k = 0; k < K; k++) {
            T* dst = out1_p + ((Bw > 1 ? b : 0) * K + k) * C;
            if (Bw > 1 || b == 0)
                for (idx_t c = 0; c < C; c++) dst[c] = T(0);
            for (int t = 0; t < nthr; t++) {
                const T* src = part_dw.data() + ((size_t)t * K + k) * Cp;
                for (idx_t c = 0; c < C; c++) dst[c] += src[c];
            }
        }
    }
}
'''

_FUSED_CF_FORWARD_SRC = r'''
// Channels-first. in0: E^T (B, C, N); in1: W (Bw, K, C), Bw in {1, B}
// out0: F_cls (B, K, C); out1: F_pos^T (B, C, N); out2: lse_cls (B, K); out3: lse_pos (B, N)
using namespace jseg_oa;
typedef in0_type T;
constexpr idx_t NB = {nb};
const idx_t B = in0_shape0, C = in0_shape1, N = in0_shape2, Bw = in1_shape0, K = in1_shape1;
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
        const T* Wb = in1_p + (Bw > 1 ? b : 0) * K * C;
        const T* Eg = in0_p + b * C * N;
        T* Fg = out1_p + b * C * N;
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
            for (idx_t n = 0; n < nv; n++) out3_p[b * N + n0 + n] = mu[n] + std::log(sum[n]);
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
            out2_p[b * K + k] = mm + std::log(zz);
            T* dst = out0_p + (b * K + k) * C;
            for (idx_t c = 0; c < C; c++) dst[c] = T(0);
            for (int t = 0; t < nthr; t++) {
                const T f = std::exp(part_m[(size_t)t * Kp + k] - mm) / zz;
                const T* src = part_acc.data() + (size_t)t * C * Kp + k;
                for (idx_t c = 0; c < C; c++) dst[c] += f * src[c * Kp];
            }
        }
    }
}
'''

_FUSED_CF_BACKWARD_SRC = r'''
// Channels-first. in0: E^T (B, C, N); in1: W (Bw, K, C); in2: G_cls (B, K, C); in3: G_pos^T (B, C, N);
// in4: lse_cls (B, K); in5: lse_pos (B, N); in6: F_cls (B, K, C).  out0: dE^T (B, C, N); out1: dW (Bw, K, C)
using namespace jseg_oa;
typedef in0_type T;
constexpr idx_t NB = {nb};
const idx_t B = in0_shape0, C = in0_shape1, N = in0_shape2, Bw = in1_shape0, K = in1_shape1;
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
        const T* Wb = in1_p + (Bw > 1 ? b : 0) * K * C;
        const T* Gc = in2_p + b * K * C;
        const T* Fc = in6_p + b * K * C;
        const T* Eg = in0_p + b * C * N;
        const T* Gg = in3_p + b * C * N;
        const T* lc = in4_p + b * K;
        T* dEg = out0_p + b * C * N;
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
            for (idx_t n = 0; n < nv; n++) { lp[n] = in5_p[b * N + n0 + n]; dpos[n] = T(0); }
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
            T* dst = out1_p + ((Bw > 1 ? b : 0) * K + k) * C;
            if (Bw > 1 || b == 0)
                for (idx_t c = 0; c < C; c++) dst[c] = T(0);
            for (int t = 0; t < nthr; t++) {
                const T* src = part_dw.data() + (size_t)t * C * Kp + k;
                for (idx_t c = 0; c < C; c++) dst[c] += src[c * Kp];
            }
        }
    }
}
'''

# Positions per block of the fused kernels (a multiple of the micro-kernel's rows).
FUSED_BLOCK = 64


def _fused_src(direction, channels_first, nb=None):
    template = {('forward', False): _FUSED_TM_FORWARD_SRC, ('backward', False): _FUSED_TM_BACKWARD_SRC,
                ('forward', True): _FUSED_CF_FORWARD_SRC, ('backward', True): _FUSED_CF_BACKWARD_SRC}
    return template[direction, bool(channels_first)].replace('{nb}', str(int(nb or FUSED_BLOCK)))


class FusedOffsetAttention(jt.Function):
    """``'fused'`` strategy: one ``jt.code`` per direction (see the module docstring).

    ``execute(img_feat, cls_repr, channels_first)`` returns (F_cls (B, K, C),
    F_pos like ``img_feat``); saved for backward: the inputs, ``lse_cls``
    (B, K), ``lse_pos`` (B, HW) and F_cls.
    """

    def execute(self, img_feat, cls_repr, channels_first=False):
        b = img_feat.shape[0]
        k, c = cls_repr.shape[1], cls_repr.shape[2]
        n = img_feat.shape[2] if channels_first else img_feat.shape[1]
        dt = img_feat.dtype
        f_cls, f_pos, lse_cls, lse_pos = jt.code(
            [(b, k, c), tuple(img_feat.shape), (b, k), (b, n)], [dt, dt, dt, dt], [img_feat, cls_repr],
            cpu_header=_FUSED_HEADER, cpu_src=_fused_src('forward', channels_first))
        self.saved = (img_feat, cls_repr, lse_cls, lse_pos, f_cls)
        self.channels_first = channels_first
        return f_cls, f_pos

    def grad(self, g_cls, g_pos):
        img_feat, cls_repr, lse_cls, lse_pos, f_cls = self.saved
        dt = img_feat.dtype
        g_cls = jt.zeros(f_cls.shape, dt) if g_cls is None else g_cls.cast(dt)
        g_pos = jt.zeros(img_feat.shape, dt) if g_pos is None else g_pos.cast(dt)
        d_feat, d_cls = jt.code(
            [tuple(img_feat.shape), tuple(cls_repr.shape)], [dt, dt],
            [img_feat, cls_repr, g_cls, g_pos, lse_cls, lse_pos, f_cls],
            cpu_header=_FUSED_HEADER,
            cpu_src=_fused_src('backward', self.channels_first))
        return d_feat, d_cls, None


def fused_forward(img_feat, cls_repr, channels_first=False):
    """The ``'fused'`` strategy on checked inputs; see :func:`offset_attention_fused`."""
    return FusedOffsetAttention.apply(img_feat, cls_repr, channels_first)


# ---------------------------------------------------------------------------
# 'gemm': Jittor products + jt.code softmax operators (CPU and CUDA)
# ---------------------------------------------------------------------------

# Column functions: a column is one position n of the class-major (K, N)
# matrices. Shared by the CUDA kernels (one column per thread, CH = 1) and the
# CPU source (CH columns at a time, the inner loop running over positions).
_GEMM_COMMON = r'''
#ifndef JSEG_OA_COLUMNS_H
#define JSEG_OA_COLUMNS_H
#ifdef __CUDACC__
#define JSEG_HD __host__ __device__ __forceinline__
#else
#define JSEG_HD inline
#include <cmath>
#include <vector>
#include <algorithm>
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

// Softmax over classes for columns [n0, n0 + cnt), cnt <= CH:
// lse_pos[n] and pp[k, n] = exp(at[k, n] - lse_pos[n]).
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

// Merge two partial log-sum-exp states (m, s): sum = s * exp(m).
template <class T>
JSEG_HD void lse_merge(T& m, T& s, T m2, T s2) {
    if (s2 == T(0)) return;
    if (s == T(0)) { m = m2; s = s2; return; }
    if (m2 > m) { s = s * t_exp(m - m2) + s2; m = m2; }
    else s += s2 * t_exp(m2 - m);
}
}  // namespace jseg_oa_gemm
#endif
'''

_GEMM_CPU_HEADER = _GEMM_COMMON + r'''
#include <omp.h>
'''

_GEMM_CUDA_HEADER = _GEMM_COMMON + r'''
namespace jseg_oa_gemm {
// One block per class row k: lse over positions, then pc[k, :] = exp(at[k, :] - lse).
template <class T>
__global__ void cls_softmax_kernel(const T* __restrict__ at, T* __restrict__ pc, T* __restrict__ lse_cls, idx_t N) {
    __shared__ T sm[256], ss[256];
    const idx_t k = blockIdx.x;
    const T* row = at + k * N;
    T m = T(0), s = T(0);
    for (idx_t n = threadIdx.x; n < N; n += blockDim.x) lse_merge(m, s, row[n], T(1));
    sm[threadIdx.x] = m; ss[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            T m1 = sm[threadIdx.x], s1 = ss[threadIdx.x];
            lse_merge(m1, s1, sm[threadIdx.x + stride], ss[threadIdx.x + stride]);
            sm[threadIdx.x] = m1; ss[threadIdx.x] = s1;
        }
        __syncthreads();
    }
    const T lse = sm[0] + t_log(ss[0]);
    if (threadIdx.x == 0) lse_cls[k] = lse;
    for (idx_t n = threadIdx.x; n < N; n += blockDim.x) pc[k * N + n] = t_exp(row[n] - lse);
}
template <class T>
__global__ void pos_softmax_kernel(const T* __restrict__ at, T* __restrict__ pp, T* __restrict__ lse_pos,
                                   idx_t K, idx_t N) {
    const idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x;
    if (n < N) pos_softmax_columns<T, 1>(at, pp, lse_pos, K, N, n, 1);
}
template <class T>
__global__ void grad_kernel(const T* __restrict__ at, const T* __restrict__ dpc, const T* __restrict__ dpp,
                            const T* __restrict__ lse_cls, const T* __restrict__ lse_pos,
                            const T* __restrict__ dcls, T* __restrict__ pd, T* __restrict__ pp, idx_t K, idx_t N) {
    const idx_t n = blockIdx.x * (idx_t)blockDim.x + threadIdx.x;
    if (n < N) grad_columns<T, 1>(at, dpc, dpp, lse_cls, lse_pos, dcls, pd, pp, K, N, n, 1);
}
}  // namespace jseg_oa_gemm
'''

# in0: A^T (K, N). out0: pc (K, N); out1: pp (K, N); out2: lse_cls (K,); out3: lse_pos (N,)
_STATS_CPU_SRC = r'''
using namespace jseg_oa_gemm;
typedef in0_type T;
const idx_t K = in0_shape0, N = in0_shape1;
constexpr int CH = 64;
#pragma omp parallel if (K * N > (1 << 16))
{
    #pragma omp for schedule(static) nowait
    for (idx_t k = 0; k < K; k++) {
        const T* row = in0_p + k * N;
        T m = row[0];
        for (idx_t n = 1; n < N; n++) m = t_max(m, row[n]);
        T s = T(0);
        for (idx_t n = 0; n < N; n++) s += t_exp(row[n] - m);
        const T lse = m + t_log(s);
        out2_p[k] = lse;
        T* pc = out0_p + k * N;
        for (idx_t n = 0; n < N; n++) pc[n] = t_exp(row[n] - lse);
    }
    #pragma omp for schedule(static)
    for (idx_t n0 = 0; n0 < N; n0 += CH)
        pos_softmax_columns<T, CH>(in0_p, out1_p, out3_p, K, N, n0, (int)std::min<idx_t>(CH, N - n0));
}
'''

_STATS_CUDA_SRC = r'''
using namespace jseg_oa_gemm;
typedef in0_type T;
const idx_t K = in0_shape0, N = in0_shape1;
cls_softmax_kernel<T><<<(unsigned)K, 256>>>(in0_p, out0_p, out2_p, N);
pos_softmax_kernel<T><<<(unsigned)((N + 255) / 256), 256>>>(in0_p, out1_p, out3_p, K, N);
'''

# in0: A^T (K, N); in1: G_cls E^T (K, N); in2: W G_pos^T (K, N); in3: lse_cls (K,);
# in4: lse_pos (N,); in5: rowdot(F_cls, G_cls) (K,). out0: [P_cls; dA] (2K, N); out1: P_pos (K, N)
_GRAD_CPU_SRC = r'''
using namespace jseg_oa_gemm;
typedef in0_type T;
const idx_t K = in0_shape0, N = in0_shape1;
constexpr int CH = 64;
#pragma omp parallel for schedule(static) if (K * N > (1 << 16))
for (idx_t n0 = 0; n0 < N; n0 += CH)
    grad_columns<T, CH>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, out0_p, out1_p, K, N, n0,
                        (int)std::min<idx_t>(CH, N - n0));
'''

_GRAD_CUDA_SRC = r'''
using namespace jseg_oa_gemm;
typedef in0_type T;
const idx_t K = in0_shape0, N = in0_shape1;
grad_kernel<T><<<(unsigned)((N + 255) / 256), 256>>>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p,
                                                     out0_p, out1_p, K, N);
'''


def softmax_stats(attn_t):
    """Both softmaxes of one image's class-major attention A^T (K, N).

    Returns:
        tuple: P_cls (K, N) (softmax over positions, i.e. along each row),
        P_pos (K, N) (softmax over classes, along each column), lse_cls (K,),
        lse_pos (N,).
    """
    k, n = attn_t.shape
    dt = attn_t.dtype
    return jt.code([(k, n), (k, n), (k,), (n,)], [dt] * 4, [attn_t],
                   cpu_header=_GEMM_CPU_HEADER, cpu_src=_STATS_CPU_SRC,
                   cuda_header=_GEMM_CUDA_HEADER, cuda_src=_STATS_CUDA_SRC)


def attention_grad(attn_t, dp_cls, dp_pos, lse_cls, lse_pos, d_cls):
    """Backward through both softmaxes of one image (all (K, N) except the vectors).

    Args:
        attn_t: A^T (K, N), recomputed.
        dp_cls: d loss / d P_cls = G_cls E^T (K, N).
        dp_pos: d loss / d P_pos = W G_pos^T (K, N).
        lse_cls (K,), lse_pos (N,): the forward's statistics.
        d_cls (K,): rowdot(F_cls, G_cls).

    Returns:
        tuple: [P_cls; dA] (2K, N) and P_pos (K, N).
    """
    k, n = attn_t.shape
    dt = attn_t.dtype
    return jt.code([(2 * k, n), (k, n)], [dt, dt], [attn_t, dp_cls, dp_pos, lse_cls, lse_pos, d_cls],
                   cpu_header=_GEMM_CPU_HEADER, cpu_src=_GRAD_CPU_SRC,
                   cuda_header=_GEMM_CUDA_HEADER, cuda_src=_GRAD_CUDA_SRC)


def _image_views(img_feat, cls_repr, i, channels_first):
    e_t = img_feat[i] if channels_first else img_feat[i].transpose(1, 0)   # (C, N)
    w = cls_repr[i if cls_repr.shape[0] > 1 else 0]                       # (K, C)
    return e_t, w


def _stack(parts):
    return parts[0].unsqueeze(0) if len(parts) == 1 else jt.stack(parts)


class GemmOffsetAttention(jt.Function):
    """``'gemm'`` strategy: Jittor products around :func:`softmax_stats` and
    :func:`attention_grad` (see the module docstring). Saved for backward:
    the inputs, ``lse_cls`` (K,) and ``lse_pos`` (N,) per image, and F_cls."""

    def execute(self, img_feat, cls_repr, channels_first=False):
        b = img_feat.shape[0]
        f_cls, f_pos, stats = [], [], []
        for i in range(b):
            e_t, w = _image_views(img_feat, cls_repr, i, channels_first)
            p_cls, p_pos, lse_cls, lse_pos = softmax_stats(jt.matmul(w, e_t))
            f_cls.append(nn.matmul_transpose(p_cls, e_t))                  # (K, C)
            f_pos_t = jt.matmul(w.transpose(1, 0), p_pos)                       # (C, N)
            f_pos.append(f_pos_t if channels_first else f_pos_t.transpose(1, 0))
            stats.append((lse_cls, lse_pos))
        f_cls, f_pos = _stack(f_cls), _stack(f_pos)
        self.saved = (img_feat, cls_repr, stats, f_cls)
        self.channels_first = channels_first
        return f_cls, f_pos

    def grad(self, g_cls, g_pos):
        img_feat, cls_repr, stats, f_cls = self.saved
        cf = self.channels_first
        dt = img_feat.dtype
        g_cls = jt.zeros(f_cls.shape, dt) if g_cls is None else g_cls.cast(dt)
        g_pos = jt.zeros(img_feat.shape, dt) if g_pos is None else g_pos.cast(dt)
        d_cls_all = (f_cls * g_cls).sum(2)                                      # (B, K)
        k = cls_repr.shape[1]
        d_feat, d_w = [], []
        for i in range(img_feat.shape[0]):
            e_t, w = _image_views(img_feat, cls_repr, i, cf)
            gp_t = g_pos[i] if cf else g_pos[i].transpose(1, 0)                 # (C, N)
            gc = g_cls[i]                                                       # (K, C)
            lse_cls, lse_pos = stats[i]
            pd, p_pos = attention_grad(jt.matmul(w, e_t), jt.matmul(gc, e_t), jt.matmul(w, gp_t),
                                       lse_cls, lse_pos, d_cls_all[i])
            de_t = jt.matmul(jt.concat([gc, w], 0).transpose(1, 0), pd)         # (C, N)
            d_feat.append(de_t if cf else de_t.transpose(1, 0))
            d_w.append(nn.matmul_transpose(p_pos, gp_t) + nn.matmul_transpose(pd[k:], e_t))
        d_feat = _stack(d_feat)
        if cls_repr.shape[0] == 1:
            total = d_w[0]
            for extra in d_w[1:]:
                total = total + extra
            d_w = total.unsqueeze(0)
        else:
            d_w = _stack(d_w)
        return d_feat, d_w, None


def gemm_forward(img_feat, cls_repr, channels_first=False):
    """The ``'gemm'`` strategy on checked inputs; see :func:`offset_attention_fused`."""
    return GemmOffsetAttention.apply(img_feat, cls_repr, channels_first)


_STRATEGIES = ('auto', 'fused', 'gemm')


def offset_attention_fused(img_feat, cls_repr, channels_first=False, strategy='auto'):
    """Coupled attention through the JIT-compiled operators; same arguments and
    results as :func:`jseg.ops.offset_attention.offset_attention_reference`.

    Args:
        img_feat (jt.Var): E, (B, HW, C); (B, C, HW) when ``channels_first``.
            float32 or float64.
        cls_repr (jt.Var): W, (B, K, C), or (1, K, C) shared by the batch.
        channels_first (bool): layout of ``img_feat`` and of the returned F_pos.
        strategy (str): ``'fused'``, ``'gemm'`` or ``'auto'`` (``'gemm'`` when
            ``jt.flags.use_cuda`` is set, else ``'fused'``).

    Returns:
        tuple[jt.Var, jt.Var]: F_cls (B, K, C) and F_pos (B, HW, C), or
        (B, C, HW) when ``channels_first``.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f'offset_attention: unknown strategy {strategy!r}, expected one of {_STRATEGIES}')
    if img_feat.ndim != 3:
        raise ValueError(f'offset_attention: img_feat must be 3-D, got {img_feat.shape}')
    b = img_feat.shape[0]
    if cls_repr.ndim != 3 or cls_repr.shape[0] not in (1, b):
        raise ValueError(f'offset_attention: cls_repr must be (B, K, C) or (1, K, C), got {cls_repr.shape}')
    c = img_feat.shape[1] if channels_first else img_feat.shape[2]
    if cls_repr.shape[2] != c:
        raise ValueError(f'offset_attention: {c} feature channels but cls_repr has {cls_repr.shape[2]}')
    if img_feat.dtype not in (jt.float32, jt.float64):
        img_feat = img_feat.float32()
    if cls_repr.dtype != img_feat.dtype:
        cls_repr = cls_repr.cast(img_feat.dtype)
    if strategy == 'auto':
        strategy = 'gemm' if jt.flags.use_cuda else 'fused'
    if strategy == 'fused':
        return fused_forward(img_feat, cls_repr, channels_first)
    return gemm_forward(img_feat, cls_repr, channels_first)
