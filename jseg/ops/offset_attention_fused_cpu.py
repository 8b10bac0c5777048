"""The ``'fused'`` strategy of the coupled attention: one CPU operator per direction.

One ``jt.code`` operator for the forward and one for the backward (see
:mod:`jseg.ops.offset_attention_kernel` for the maths they share with the
``'gemm'`` strategy); the (HW, K) matrices exist only as per-thread blocks of
``NB`` positions in L2-sized scratch buffers (about 0.5 MB per thread at
NB=64, K=150, C=256). ``NB`` and the micro-kernel's register tile are chosen
in C++ for the instruction set the kernel is compiled for
(``jseg/ops/csrc/cpu_simd.h``: ``OA_BLOCK``, ``GEMM_MR``, ``GEMM_NR``).

OpenMP splits the positions of each image into blocks (schedule static, no
shared writes); per block the forward computes the attention block
(``E_blk W^T``), the softmax over classes of each of its positions and their
``F_pos`` rows (``P_pos,blk W``), and updates an *online* softmax over
positions for every class: running max ``m_k``, running sum ``z_k`` and an
unnormalised ``acc_k += exp(A_blk[:, k] - m_k)^T E_blk``, rescaled when
``m_k`` grows. Each thread keeps its own (m, z, acc); they are merged at the
end. The backward makes one pass over the blocks with seven block products
(``[A | E G_cls^T] = E_blk [W; G_cls]^T``, ``G_pos,blk W^T``,
``dE_blk = [P_cls | dA] [G_cls; W]``,
``dW += [P_pos^T | dA^T] [G_pos,blk; E_blk]``) and per-thread dW partials.

Each layout has its own pair of kernels, arranged so that no block of
features is ever transposed: token-major works on (NB, C) row blocks and the
attention block as (NB, K); channels-first works on (C, NB) column blocks
(contiguous row segments of E^T, copied once into a packed buffer) and the
attention block as (K, NB), writing F_pos^T and dE^T blocks straight into the
outputs. Only the (NB, K) probability blocks are transposed, where a product
needs them the other way round.

All products go through one register-tiled micro-kernel (``MR`` rows x 2 SIMD
vectors of accumulators, GCC vector extensions, broadcast-FMA over the
reduction index, every operand row contiguous, K and C zero-padded to
multiples of 2 vectors of floats where they are the vector dimension; a
vector is 64, 32 or 16 bytes for AVX-512, AVX2 and anything else), which
runs at the speed of Jittor's oneDNN products at these shapes (both near the
FMA peak of the core). Work: 3 (forward) and 7 (backward) products of HW x K x C, against 3
and 6 for the composition (the price of not keeping A); everything else (both
softmaxes, their backward, the reductions) is fused into the passes over the
blocks. This operator has a ``cpu_src`` only: under ``jt.flags.use_cuda``,
``'auto'`` uses ``'gemm'``.

Sources: ``jseg/ops/csrc/offset_attention_fused_cpu.h`` (micro-kernel,
packing) and ``offset_attention_fused_cpu.cc`` (the four operators).
"""
import jittor as jt

from .csrc_bundle import bundle_source

__all__ = ['FusedOffsetAttention', 'fused_backward', 'fused_forward', 'fused_source']


def fused_source(direction, channels_first, nb=None):
    """``cpu_src`` of one operator: a call of ``jseg_oa::<direction>_<layout><T>``.

    ``nb`` (positions per block, a multiple of 32) overrides the block size
    that ``cpu_simd.h`` chooses (``tools/dev/tune_offset_attention_block.py``).

    Shapes (B, N, C) come from in0 (E or E^T), (Bw, K) from in1 (W). Forward:
    in0, in1 -> out0..3 (F_cls, F_pos, lse_cls, lse_pos); backward: in0..6
    (E, W, G_cls, G_pos, lse_cls, lse_pos, F_cls) -> out0, out1 (dE, dW).
    """
    layout = 'channels_first' if channels_first else 'token_major'
    dims = 'in0_shape0, in0_shape2, in0_shape1' if channels_first else 'in0_shape0, in0_shape1, in0_shape2'
    if direction == 'forward':
        pointers = 'in0_p, in1_p, out0_p, out1_p, out2_p, out3_p'
    elif direction == 'backward':
        pointers = 'in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, in6_p, out0_p, out1_p'
    else:
        raise ValueError(f'unknown direction {direction!r}')
    template = f'in0_type, {int(nb)}' if nb else 'in0_type'
    return f'jseg_oa::{direction}_{layout}<{template}>({pointers}, {dims}, in1_shape0, in1_shape1);'


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
            cpu_header=bundle_source('offset_attention_fused_cpu.cc'),
            cpu_src=fused_source('forward', channels_first))
        self.saved = (img_feat, cls_repr, lse_cls, lse_pos, f_cls)
        self.channels_first = channels_first
        return f_cls, f_pos

    def grad(self, g_cls, g_pos):
        img_feat, cls_repr, lse_cls, lse_pos, f_cls = self.saved
        d_feat, d_cls = fused_backward(img_feat, cls_repr, g_cls, g_pos, lse_cls, lse_pos, f_cls,
                                       self.channels_first)
        return d_feat, d_cls, None


def fused_backward(img_feat, cls_repr, g_cls, g_pos, lse_cls, lse_pos, f_cls, channels_first=False):
    """The backward operator: gradients of the coupled attention from the forward's statistics.

    Args:
        img_feat: E (B, HW, C), or E^T (B, C, HW) when ``channels_first``.
        cls_repr: W (Bw, K, C), Bw in {1, B}.
        g_cls: gradient of F_cls (B, K, C), or None (zero).
        g_pos: gradient of F_pos, shaped like ``img_feat``, or None (zero).
        lse_cls (B, K), lse_pos (B, HW): the log-sum-exps over positions and over classes.
        f_cls: F_cls (B, K, C); the statistics and F_cls in the dtype of ``img_feat``.

    Returns:
        tuple: gradients of ``img_feat`` and ``cls_repr``.
    """
    dt = img_feat.dtype
    g_cls = jt.zeros(f_cls.shape, dt) if g_cls is None else g_cls.cast(dt)
    g_pos = jt.zeros(img_feat.shape, dt) if g_pos is None else g_pos.cast(dt)
    return jt.code(
        [tuple(img_feat.shape), tuple(cls_repr.shape)], [dt, dt],
        [img_feat, cls_repr, g_cls, g_pos, lse_cls, lse_pos, f_cls],
        cpu_header=bundle_source('offset_attention_fused_cpu.cc'),
        cpu_src=fused_source('backward', channels_first))


def fused_forward(img_feat, cls_repr, channels_first=False):
    """The ``'fused'`` strategy on checked inputs; see
    :func:`jseg.ops.offset_attention_kernel.offset_attention_fused`."""
    return FusedOffsetAttention.apply(img_feat, cls_repr, channels_first)
