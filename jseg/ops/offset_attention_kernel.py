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

Two implementations, chosen by ``strategy``, one module each:

``'fused'`` (the CPU default; :mod:`jseg.ops.offset_attention_fused_cpu`)
    One CPU operator per direction that never materialises the (HW, K)
    matrices: blocks of positions, an online softmax over positions, and a
    register-tiled micro-kernel for the block products. ``cpu_src`` only:
    under ``jt.flags.use_cuda``, ``'auto'`` uses ``'gemm'``.

``'gemm'`` (the CUDA default; :mod:`jseg.ops.offset_attention_gemm`)
    Jittor's matrix products (oneDNN on CPU, cuBLAS on CUDA) around two
    ``jt.code`` softmax operators with a ``cpu_src`` and a ``cuda_src``; the
    CUDA kernels' per-thread arithmetic is shared with CPU twins that the
    tests run.

Speed and memory of both against the composition: run
``python tools/benchmark_ops.py`` (OffSeg-T's offset-learning shapes).
"""
import jittor as jt

from .offset_attention_fused_cpu import FusedOffsetAttention, fused_forward
from .offset_attention_gemm import GemmOffsetAttention, gemm_forward

__all__ = ['offset_attention_fused', 'fused_forward', 'gemm_forward', 'FusedOffsetAttention',
           'GemmOffsetAttention', 'STRATEGIES']

STRATEGIES = ('auto', 'fused', 'gemm')


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
    if strategy not in STRATEGIES:
        raise ValueError(f'offset_attention: unknown strategy {strategy!r}, expected one of {STRATEGIES}')
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
