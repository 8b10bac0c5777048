// The jt.code entry point of the packed GEMM operator (jseg/ops/gemm.py): shapes and transpose
// flags of the two operands -> the strided description that gemm_cpu.h works on.
#ifndef JSEG_GEMM_CPU_CC
#define JSEG_GEMM_CPU_CC

#include "gemm_cpu.h"

namespace jseg_gemm {
// One operand of the jt.code entry point: a (rows, cols) matrix or a (batch, rows, cols) stack,
// transposed or not. batch_size 0 means a 2-D operand, shared by every batch.
template <class T>
Operand<T> operand(const T* p, idx_t batch_size, idx_t rows, idx_t cols, bool transposed) {
    Operand<T> o;
    o.p = p;
    o.bs = batch_size > 0 ? rows * cols : 0;
    o.rs = transposed ? 1 : cols;   // stride of op(X)'s row index
    o.cs = transposed ? cols : 1;   // stride of op(X)'s column index
    return o;
}

// jt.code entry point: out (batch, M, N) = op(a) op(b), or out (M, N) = sum over the batch when
// sum_batch. a is (a_batch, a_rows, a_cols) with a_batch = 0 for a 2-D a, b likewise.
template <class T>
void matmul(const T* a, idx_t a_batch, idx_t a_rows, idx_t a_cols, bool trans_a,
            const T* b, idx_t b_batch, idx_t b_rows, idx_t b_cols, bool trans_b, T* out, bool sum_batch) {
    const idx_t M = trans_a ? a_cols : a_rows, K = trans_a ? a_rows : a_cols;
    const idx_t N = trans_b ? b_rows : b_cols;
    const idx_t batch = std::max<idx_t>(std::max(a_batch, b_batch), 1);
    gemm<T>(batch, M, N, K, operand(a, a_batch, a_rows, a_cols, trans_a), operand(b, b_batch, b_rows, b_cols, trans_b),
            out, sum_batch ? 0 : M * N, N);
}
}  // namespace jseg_gemm

#endif  // JSEG_GEMM_CPU_CC
