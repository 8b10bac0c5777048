"""Offset learning, the classifier of OffSeg.

"Revisiting Efficient Semantic Segmentation: Learning Offsets for Better
Spatial and Class Feature Alignment", ICCV 2025, arXiv:2508.08811, Sec. 3.3.
Port of ``Offset_Learning`` / ``Offset_Learning_Mask`` from HVision-NKU/OffSeg
(``mmseg/models/decode_heads/offset_learning.py``); parameter names match its
checkpoints.

With image features E (HW, C) and class representations W (K, C)::

    A      = E W^T                                coupled attention (HW, K)
    dW     = Linear_cls(softmax_HW(A)^T E)        class offsets (K, C)
    dE     = Linear_feat(softmax_K(A) W)          feature offsets (HW, C)
    masks  = LayerNorm_K((E + dE)(W + dW)^T)      (HW, K) -> (K, H, W)

The coupled attention is :func:`jseg.ops.offset_attention`; both modules here
share the offset step (:func:`offset_align`).

Where the official code differs from the paper, the code is followed:

* the "MLP" of Eqs. 7 and 11 is a single bias-free ``Linear(C, C)``;
* the masks of Eq. 13 are normalised by a LayerNorm over the class dimension
  (``mask_norm``) before they are used as logits.
"""
import jittor as jt
from jittor import nn

from jseg.ops.gemm import gemm, gemm_applies
from jseg.ops.offset_attention import offset_attention
from jseg.registry import MODELS

from .norm import LayerNorm, build_norm_layer
from .weight_init import constant_init, trunc_normal_, trunc_normal_init

__all__ = ['OffsetLearning', 'OffsetLearningMask', 'offset_align']


def _per_image_matmul(a, b):
    """(B, M, N) or shared (M, N), times (B, N, P) -> (B, M, P).

    The packed GEMM operator where it applies (one batched call; a shared
    operand's gradient summed over the batch in the kernel), else B 2-D
    products, which Jittor runs on oneDNN (its batched 3-D product is a much
    slower generic loop).
    """
    if gemm_applies(b) and a.dtype == b.dtype:
        return gemm(a, b)
    products = [jt.matmul(a if a.ndim == 2 else a[i], b[i]) for i in range(b.shape[0])]
    return products[0].unsqueeze(0) if len(products) == 1 else jt.stack(products)


def _matmul_transpose(a, b):
    """a (M, K) @ b (N, K)^T -> (M, N): the packed GEMM operator where it applies, else
    ``nn.matmul_transpose``."""
    if gemm_applies(a) and a.dtype == b.dtype:
        return gemm(a, b, trans_b=True)
    return nn.matmul_transpose(a, b)


def offset_align(feat_t, cls_repr, cls_offset_proj, feat_offset_proj):
    """Add the learned class and feature offsets (Eqs. 4-12).

    Args:
        feat_t (jt.Var): image features, channel-major (B, C, HW).
        cls_repr (jt.Var): class representations (B, K, C) or (1, K, C).
        cls_offset_proj, feat_offset_proj (nn.Linear): bias-free C -> C maps.

    Returns:
        tuple[jt.Var, jt.Var]: aligned class representations W + dW (B, K, C)
        and aligned features (E + dE)^T (B, C, HW).
    """
    b, c, _ = feat_t.shape
    f_cls, f_pos_t = offset_attention(feat_t, cls_repr, channels_first=True)  # (B, K, C), (B, C, HW)
    k = f_cls.shape[1]
    cls_offset = _matmul_transpose(f_cls.reshape(b * k, c), cls_offset_proj.weight)  # (BK, C)
    aligned_cls = cls_repr + cls_offset.reshape(b, k, c)
    # Linear on tokens, written channel-major: (dE)^T = P (F_pos)^T
    feat_offset_t = _per_image_matmul(feat_offset_proj.weight, f_pos_t)       # (B, C, HW)
    return aligned_cls, feat_t + feat_offset_t


def _init_offset_proj(module, init_std):
    trunc_normal_init(module.cls_offset_proj, std=init_std, bias=0)
    trunc_normal_init(module.feat_offset_proj, std=init_std, bias=0)


@MODELS.register_module()
class OffsetLearning(nn.Module):
    """Offset learning classifier: (B, C, H, W) features -> (B, K, H, W) logits.

    A drop-in replacement for a decode head's final 1x1 classifier.

    Args:
        num_classes (int): K.
        embed_dims (int): C, channels of the input features.
        init_std (float): std of the truncated-normal init of ``cls_repr`` and
            of the two offset projections.
        norm_cfg (dict): norm of the masks over the class dimension; only
            ``dict(type='LN', ...)`` (the official choice) is supported.

    Parameters (official names): ``cls_repr`` (1, K, C),
    ``cls_offset_proj.weight`` (C, C), ``feat_offset_proj.weight`` (C, C),
    ``mask_norm.weight`` / ``mask_norm.bias`` (K,).
    """

    def __init__(self, num_classes, embed_dims, init_std=0.02, norm_cfg=dict(type='LN')):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.init_std = init_std
        self.cls_repr = jt.randn(1, num_classes, embed_dims)
        _, self.mask_norm = build_norm_layer(norm_cfg, num_classes, postfix=1)
        if not isinstance(self.mask_norm, LayerNorm):
            raise ValueError(f'OffsetLearning normalises masks with a LayerNorm (norm_cfg type LN), '
                             f'got {norm_cfg!r}')
        self.cls_offset_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.feat_offset_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.init_weights()

    def init_weights(self):
        """Official init: truncated normal (std ``init_std``) for ``cls_repr`` and the projections."""
        trunc_normal_(self.cls_repr, std=self.init_std)
        _init_offset_proj(self, self.init_std)
        constant_init(self.mask_norm, val=1.0, bias=0.0)

    def execute(self, x):
        """x: (B, C, H, W) -> class logits (B, K, H, W)."""
        b, c, h, w = x.shape
        aligned_cls, aligned_feat_t = offset_align(x.reshape(b, c, h * w), self.cls_repr,
                                                   self.cls_offset_proj, self.feat_offset_proj)
        masks = _per_image_matmul(aligned_cls, aligned_feat_t)          # (B, K, HW)
        # mask_norm: LayerNorm over the K classes, i.e. over dim 1 here
        norm = self.mask_norm
        mean = masks.mean(1, keepdims=True)
        centered = masks - mean
        var = (centered * centered).mean(1, keepdims=True)
        masks = centered / jt.sqrt(var + norm.eps)
        masks = masks * norm.weight.reshape(1, -1, 1) + norm.bias.reshape(1, -1, 1)
        return masks.reshape(b, self.num_classes, h, w)


@MODELS.register_module()
class OffsetLearningMask(nn.Module):
    """Offset learning for mask classification (e.g. Mask2Former).

    Aligns mask embeddings (class representations) and per-pixel embeddings
    with each other; unlike :class:`OffsetLearning` it has no class
    representations of its own and no mask norm.

    Args:
        embed_dims (int): C.
        init_std (float): std of the truncated-normal init of the projections.
        norm_cfg (dict): accepted for the official signature; unused.

    Parameters (official names): ``cls_offset_proj.weight``, ``feat_offset_proj.weight``.
    """

    def __init__(self, embed_dims, init_std=0.02, norm_cfg=dict(type='LN')):
        super().__init__()
        self.embed_dims = embed_dims
        self.init_std = init_std
        self.cls_offset_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.feat_offset_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.init_weights()

    def init_weights(self):
        _init_offset_proj(self, self.init_std)

    def execute(self, mask_embed, mask_features):
        """Align mask embeddings and pixel embeddings.

        Args:
            mask_embed (jt.Var): (B, K, C).
            mask_features (jt.Var): (B, C, H, W).

        Returns:
            tuple[jt.Var, jt.Var]: aligned mask embeddings (B, K, C) and
            aligned pixel embeddings (B, C, H, W).
        """
        b, c, h, w = mask_features.shape
        aligned_cls, aligned_feat_t = offset_align(mask_features.reshape(b, c, h * w), mask_embed,
                                                   self.cls_offset_proj, self.feat_offset_proj)
        return aligned_cls, aligned_feat_t.reshape(b, c, h, w)
