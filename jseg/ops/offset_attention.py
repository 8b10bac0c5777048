"""Coupled attention of OffSeg's offset learning (arXiv:2508.08811, Sec. 3.3, Eqs. 4-6, 9-10).

Given image features E (HW, C) and class representations W (K, C) of one
image, with the coupled attention A = E W^T (HW, K)::

    F_cls = softmax_over_positions(A)^T E      (K, C)    class-specific prototypes
    F_pos = softmax_over_classes(A) W          (HW, C)   position-wise class guidance

:func:`offset_attention` is the public entry point and
:func:`offset_attention_reference` the pure-Jittor implementation;
``offset_attention`` dispatches to it until a fused kernel is registered with
:func:`set_offset_attention_kernel`.

Both accept the features in either layout: token-major ``(B, HW, C)`` (the
paper's E) or channel-major ``(B, C, HW)`` (a free reshape of an NCHW map,
what the OffSeg modules pass with ``channels_first=True``). The feature output
F_pos comes back in the same layout as the input.
"""
import jittor as jt

__all__ = ['offset_attention', 'offset_attention_reference', 'set_offset_attention_kernel']

# A fused implementation with offset_attention_reference's signature, or None.
_fused_kernel = None


def set_offset_attention_kernel(fn):
    """Route :func:`offset_attention` to ``fn`` (same signature); ``None`` restores the reference.

    Returns:
        callable | None: the kernel registered before, so that callers can restore it.
    """
    global _fused_kernel
    previous, _fused_kernel = _fused_kernel, fn
    return previous


def offset_attention(img_feat, cls_repr, channels_first=False):
    """Class prototypes and position-wise class guidance from the coupled attention.

    Args:
        img_feat (jt.Var): E, (B, HW, C); (B, C, HW) when ``channels_first``.
        cls_repr (jt.Var): W, (B, K, C), or (1, K, C) shared by the batch.
        channels_first (bool): layout of ``img_feat`` and of the returned F_pos.

    Returns:
        tuple[jt.Var, jt.Var]: F_cls (B, K, C) and F_pos (B, HW, C), or
        F_pos^T (B, C, HW) when ``channels_first``.
    """
    if _fused_kernel is not None:
        return _fused_kernel(img_feat, cls_repr, channels_first)
    return offset_attention_reference(img_feat, cls_repr, channels_first)


def _softmax(x, dim):
    """Softmax as exp(x - max) / sum: one fused pass per reduction in Jittor."""
    e = (x - x.max(dim, keepdims=True)).exp()
    return e / e.sum(dim, keepdims=True)


def offset_attention_reference(img_feat, cls_repr, channels_first=False):
    """Pure-Jittor coupled attention; same arguments and results as :func:`offset_attention`.

    Works per image with 2-D matrix products, which Jittor hands to oneDNN
    (a batched 3-D product falls back to a much slower generic loop). Both
    softmaxes reduce over the leading axis of their operand, the fast
    direction for Jittor's reductions: over classes on A^T (K, HW), over
    positions on A (HW, K).
    """
    b = img_feat.shape[0]
    if cls_repr.ndim != 3 or cls_repr.shape[0] not in (1, b):
        raise ValueError(f'offset_attention: cls_repr must be (B, K, C) or (1, K, C), got {cls_repr.shape}')
    c = img_feat.shape[1] if channels_first else img_feat.shape[2]
    if cls_repr.shape[2] != c:
        raise ValueError(f'offset_attention: {c} feature channels but cls_repr has {cls_repr.shape[2]}')
    cls_out, feat_out = [], []
    for i in range(b):
        e_t = img_feat[i] if channels_first else img_feat[i].transpose(1, 0)  # E^T (C, HW)
        w = cls_repr[i if cls_repr.shape[0] > 1 else 0]                       # W (K, C)
        attn_t = jt.matmul(w, e_t)                                # A^T (K, HW)
        cls_attn = _softmax(attn_t.transpose(1, 0), 0)            # (HW, K), softmax over positions
        pos_attn = _softmax(attn_t, 0)                            # (K, HW), softmax over classes
        cls_out.append(jt.matmul(e_t, cls_attn).transpose(1, 0))  # (C, HW) x (HW, K) -> F_cls (K, C)
        f_pos_t = jt.matmul(w.transpose(1, 0), pos_attn)          # (C, K) x (K, HW) -> F_pos^T (C, HW)
        feat_out.append(f_pos_t if channels_first else f_pos_t.transpose(1, 0))
    if b == 1:
        return cls_out[0].unsqueeze(0), feat_out[0].unsqueeze(0)
    return jt.stack(cls_out), jt.stack(feat_out)
