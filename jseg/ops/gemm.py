"""Matrix products through a packed GEMM: a JIT-compiled CPU operator, forward and backward.

Semantics: ``C = op(A) @ op(B)``, ``op`` an optional transpose (``trans_a``,
``trans_b``), with an optional batch: A is (M, K) or (batch, M, K) ((K, M) or
(batch, K, M) when transposed), B is (K, N) or (batch, K, N) (likewise); a 2-D
operand is shared by every matrix of the batch; C is (M, N) or (batch, M, N).
``sum_batch=True`` returns the sum over the batch of the products, (M, N),
without materialising them (the gradient of a shared operand).

:func:`gemm` is the public entry point. It runs the ``jt.code`` operator
(:class:`GemmFunction`) on the CPU for float32 and float64 while
:func:`jseg.ops.fused_ops_enabled` is true, and otherwise (``jt.flags.use_cuda``,
fused operators switched off, other dtypes) falls back to
:func:`gemm_reference`, Jittor's own ``jt.matmul`` on 2-D slices.

Kernel (``jseg/ops/csrc/gemm_cpu.h``, entry point ``gemm_cpu.cc``)
-------------------------------------------------------------------
Goto/BLIS blocking, sizes from ``jseg/ops/csrc/cpu_simd.h``: for each
``GEMM_NC``-column panel of op(B) and each ``GEMM_KC`` slice of the reduction,
the panel is packed into strips of ``GEMM_NR`` vectors of columns (zero-padded
at the edge); for each ``GEMM_MC``-row block of op(A) the block is packed into
strips of ``GEMM_MR`` rows (zero-padded); a register tile of ``GEMM_MR`` x
``GEMM_NR`` vectors (6 x 16 floats with AVX2, 8 x 32 with AVX-512, 4 x 8 with
16-byte vectors; GCC vector extensions) accumulates one A strip times one B
strip over the slice with one broadcast and ``GEMM_NR`` loads per step, and
adds into C. Transposes and the shared operand are strides of the packing
loops: nothing is copied beyond the packed blocks. Edge tiles are computed in
a local tile and copied back partially. Three shape-driven variants, each
measured on one AVX2 core at OffSeg-T's shapes (``gemm_cpu.h`` names the
constants):

* a narrow product (N up to 4 register tiles, 64 floats with AVX2) reads the
  rows of A in place instead of packing them (packing is a pass over A that
  too few tiles reuse: 16 x (1024x1024 @ 1024x32) 35 -> 19 ms);
* a product of at most 48 rows reads the rows of B in place (the talking
  heads, the input gradients of narrow 1x1 convolutions);
* a shallow B panel (up to 256 KB, e.g. K = 32) is walked by rows of register
  tiles, so that C is written along its rows ((2x) 128x32 @ 32x16384 10.4 ->
  6.1 ms).

Block sizes (``cpu_simd.h``): KC = 256, MC = 144, NC = 2048 floats, BLIS's
choice for AVX2 single precision; on this loaded 2-core AMD EPYC machine
KC/MC/NC of 256/72/2048, 384/96/2048, 512/48/1024 and 384/144/1024 were not
faster (256x256 @ 256x32768: 44-65 GFLOPS for all, within the noise of the
shared machine; OpenBLAS 61-65 GFLOPS in the same minutes).

OpenMP: the work items are (output batch, column panel, and, when those are
fewer than the threads, row block); calls below 2^20 multiply-adds
(``PAR_MIN_WORK``, about 30 us on one core) run on one thread. The threshold
was measured on OffSeg-T's backbone training pass with 2 threads on a quiet
machine (see ``gemm_cpu.h``); on a busy machine a parallel region can wait a
scheduler time slice for the second core. Every element of C
is summed by one thread in a fixed order, so results do not depend on the
thread count.

Backward (:class:`GemmFunction`): two more calls, transposes expressed through
the flags: ``d op(A) = dC op(B)^T`` and ``d op(B) = op(A)^T dC``, e.g. for
``trans_a=False, trans_b=False``, ``dA = gemm(dC, B, trans_b=True)`` and
``dB = gemm(A, dC, trans_a=True)``; a shared (2-D) operand's gradient is the
``sum_batch`` product.
"""
import jittor as jt

from .csrc_bundle import bundle_source

__all__ = ['GemmFunction', 'gemm', 'gemm_fused', 'gemm_reference', 'gemm_applies']

_SOURCE = 'gemm_cpu.cc'


def _shape_args(index, ndim):
    """``batch, rows, cols`` of input ``index`` in the generated source (batch 0 for a 2-D input)."""
    if ndim == 3:
        return f'in{index}_shape0, in{index}_shape1, in{index}_shape2'
    return f'0, in{index}_shape0, in{index}_shape1'


def gemm_source(a_ndim, b_ndim, trans_a, trans_b, sum_batch):
    """``cpu_src`` of one operator variant (shapes are run-time values: one compile per variant)."""
    return (f'jseg_gemm::matmul<in0_type>(in0_p, {_shape_args(0, a_ndim)}, {str(bool(trans_a)).lower()}, '
            f'in1_p, {_shape_args(1, b_ndim)}, {str(bool(trans_b)).lower()}, out0_p, '
            f'{str(bool(sum_batch)).lower()});')


def _op_shape(x, trans):
    rows, cols = x.shape[-2], x.shape[-1]
    return (cols, rows) if trans else (rows, cols)


def _check(a, b, trans_a, trans_b):
    """(batch or None, M, K, N) of the product, with a clear error for bad operands."""
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f'gemm: operands must be 2-D or 3-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}')
    m, k = _op_shape(a, trans_a)
    k2, n = _op_shape(b, trans_b)
    if k != k2:
        raise ValueError(f'gemm: inner sizes differ: op(A) is {m}x{k}, op(B) is {k2}x{n} '
                         f'(shapes {tuple(a.shape)}, {tuple(b.shape)}, trans_a={trans_a}, trans_b={trans_b})')
    batches = {x.shape[0] for x in (a, b) if x.ndim == 3}
    if len(batches) > 1:
        raise ValueError(f'gemm: batch sizes differ: shapes {tuple(a.shape)} and {tuple(b.shape)}')
    return (batches.pop() if batches else None), m, k, n


def gemm_reference(a, b, trans_a=False, trans_b=False, sum_batch=False):
    """The composition: ``jt.matmul`` per 2-D slice (Jittor runs 2-D products as GEMMs).

    Same arguments and result as :func:`gemm`.
    """
    batch, _, _, _ = _check(a, b, trans_a, trans_b)

    def op(x, i, trans):
        m = x if x.ndim == 2 else x[i]
        return m.transpose(1, 0) if trans else m

    if batch is None:
        return jt.matmul(op(a, 0, trans_a), op(b, 0, trans_b))
    prods = [jt.matmul(op(a, i, trans_a), op(b, i, trans_b)) for i in range(batch)]
    if sum_batch:
        total = prods[0]
        for p in prods[1:]:
            total = total + p
        return total
    return jt.stack(prods)


class GemmFunction(jt.Function):
    """The operator; see the module docstring.

    ``execute(a, b, trans_a, trans_b, sum_batch)`` -> C; ``grad`` returns
    (dA, dB) through two more operator calls (None for the flags).
    """

    def execute(self, a, b, trans_a=False, trans_b=False, sum_batch=False):
        batch, m, _, n = _check(a, b, trans_a, trans_b)
        shape = (m, n) if batch is None or sum_batch else (batch, m, n)
        self.saved = (a, b, trans_a, trans_b, batch, sum_batch)
        return jt.code(shape, a.dtype, [a, b.cast(a.dtype)], cpu_header=bundle_source(_SOURCE),
                       cpu_src=gemm_source(a.ndim, b.ndim, trans_a, trans_b, sum_batch))

    def grad(self, dc):
        a, b, ta, tb, batch, sum_batch = self.saved
        if dc is None:
            return None, None
        dc = dc.cast(a.dtype)
        # The gradient of a 2-D operand used with a batch sums over the batch. With sum_batch, dC
        # (M, N) is the gradient of every product of the batch: a shared operand of these calls.
        sum_a = a.ndim == 2 and batch is not None
        sum_b = b.ndim == 2 and batch is not None
        if ta:
            da = _apply(b, dc, tb, True, sum_a)        # dA = op(B) dC^T
        else:
            da = _apply(dc, b, False, not tb, sum_a)   # dA = dC op(B)^T
        if tb:
            db = _apply(dc, a, True, ta, sum_b)        # dB = dC^T op(A)
        else:
            db = _apply(a, dc, not ta, False, sum_b)   # dB = op(A)^T dC
        # sum_batch with a shared other operand: the same gradient for every matrix of the batch
        if da.ndim < a.ndim:
            da = da.unsqueeze(0).broadcast(a.shape)
        if db.ndim < b.ndim:
            db = db.unsqueeze(0).broadcast(b.shape)
        return da, db


def _apply(a, b, trans_a, trans_b, sum_batch):
    batch, m, _, n = _check(a, b, trans_a, trans_b)
    shape = (m, n) if batch is None or sum_batch else (batch, m, n)
    return jt.code(shape, a.dtype, [a, b], cpu_header=bundle_source(_SOURCE),
                   cpu_src=gemm_source(a.ndim, b.ndim, trans_a, trans_b, sum_batch))


def gemm_fused(a, b, trans_a=False, trans_b=False, sum_batch=False):
    """The product through the JIT-compiled CPU operator; same arguments and result as :func:`gemm`."""
    if a.dtype not in (jt.float32, jt.float64):
        raise TypeError(f'gemm_fused: float32 or float64 operands expected, got {a.dtype}')
    return GemmFunction.apply(a, b, bool(trans_a), bool(trans_b), bool(sum_batch))


def gemm_applies(a):
    """Whether :func:`gemm` uses the JIT operator for an operand like ``a`` (CPU, fused ops on, float)."""
    from .fused_kernel import fused_ops_enabled   # fused_kernel imports the op modules: import late
    return fused_ops_enabled() and not jt.flags.use_cuda and a.dtype in (jt.float32, jt.float64)


def gemm(a, b, trans_a=False, trans_b=False, sum_batch=False):
    """``op(a) @ op(b)``, optionally batched; see the module docstring.

    Args:
        a (jt.Var): (M, K), or (batch, M, K); (K, M) / (batch, K, M) when ``trans_a``.
        b (jt.Var): (K, N), or (batch, K, N); (N, K) / (batch, N, K) when ``trans_b``.
        trans_a, trans_b (bool): use the transpose of the (last two dims of the) operand.
        sum_batch (bool): return the sum over the batch, (M, N).

    Returns:
        jt.Var: (M, N) for two 2-D operands or with ``sum_batch``, else (batch, M, N).
    """
    if gemm_applies(a) and b.dtype == a.dtype:
        return gemm_fused(a, b, trans_a, trans_b, sum_batch)
    return gemm_reference(a, b, trans_a, trans_b, sum_batch)
