"""Mask2Former's head with offset learning in every mask prediction.

"Revisiting Efficient Semantic Segmentation: Learning Offsets for Better Spatial
and Class Feature Alignment", Zhang et al., ICCV 2025, arXiv:2508.08811, Table 5.
Port of ``Mask2FormerHeadOffsetLearning`` from https://github.com/HVision-NKU/OffSeg,
``mmseg/models/decode_heads/mask2former_head_offset_learning.py`` (see that
repository's LICENSE); parameter names match its checkpoints
(``offset_learning.cls_offset_proj.weight``, ``offset_learning.feat_offset_proj.weight``).

The only change to :class:`Mask2FormerHead`: in each of the 10 predictions the
mask embeddings (class representations, B x Q x C) and the pixel decoder's
``mask_feature`` (B x C x H/4 x W/4) are first aligned with each other by ONE
shared :class:`OffsetLearningMask`; the aligned pair gives the mask logits::

    W', E' = offset_learning(mask_embed(post_norm(q)), mask_feature)
    mask   = W' . E'                     (B, Q, H/4, W/4)

The aligned pixel features are local to each prediction (every call starts from
the pixel decoder's ``mask_feature``); the class logits and the next layer's
attention mask follow as in the plain head (the latter from the aligned masks).
"""
from jseg.registry import MODELS

from ..utils.offset_learning import OffsetLearningMask
from .mask2former_head import Mask2FormerHead, mask_logits

__all__ = ['Mask2FormerHeadOffsetLearning']


@MODELS.register_module()
class Mask2FormerHeadOffsetLearning(Mask2FormerHead):
    """:class:`Mask2FormerHead` + ``offset_learning`` (:class:`OffsetLearningMask` over ``feat_channels``).

    Args: as :class:`Mask2FormerHead`. The offset projections keep their
    construction-time init (truncated normal, std 0.02), as in the official model,
    whose ``init_weights`` does not touch them.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset_learning = OffsetLearningMask(self.feat_channels)

    def _mask_logits(self, mask_embed, mask_feature):
        """Align (B, Q, C) mask embeddings and (B, C, H, W) pixel embeddings, then their dot product."""
        mask_embed, mask_feature = self.offset_learning(mask_embed, mask_feature)
        return mask_logits(mask_embed, mask_feature)
