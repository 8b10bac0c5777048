"""SegFormer's all-MLP head with offset learning in place of the 1x1 classifier.

"Revisiting Efficient Semantic Segmentation: Learning Offsets for Better Spatial
and Class Feature Alignment", Zhang et al., ICCV 2025, arXiv:2508.08811, Sec. 4.3
(Table 4). Port of ``SegformerHeadOffsetLearning`` from
https://github.com/HVision-NKU/OffSeg,
``mmseg/models/decode_heads/segformer_head_offset_learning.py`` (see that
repository's LICENSE); parameter names match its checkpoints.

Forward (as the official code builds it)::

    fused  = SegformerHead.fuse(inputs)                (B, channels, H/4, W/4)
    fused  = maxpool2x2(fused)                         (B, channels, H/8, W/8)
    logits = offset_learning(fused)                    (B, K, H/8, W/8)

The 2x2 max-pool lowers the cost of offset learning (its attention is
O(HW * K * C)); logits at 1/8 are upsampled by the loss and at inference.
"""
from jittor import nn

from jseg.registry import MODELS

from ..utils.offset_learning import OffsetLearning
from .segformer_head import SegformerHead

__all__ = ['SegformerHeadOffsetLearning']


@MODELS.register_module()
class SegformerHeadOffsetLearning(SegformerHead):
    """SegFormer head + offset learning: list of (B, C_i, H_i, W_i) -> (B, K, H_0 // 2, W_0 // 2).

    Args: as :class:`SegformerHead`.

    ``conv_seg`` (channels -> K) and the Dropout2d before it, inherited from
    BaseDecodeHead, exist in the official model (its removal is commented out
    there) and in its checkpoints, and are counted in the paper's parameter
    numbers, but the forward pass never uses them. They are kept so that official
    checkpoints load without unexpected keys; :meth:`unused_parameter_names`
    reports ``conv_seg`` (trainers may leave it out of the optimizer, gradient
    tests skip it).
    """

    uses_conv_seg = False  # conv_seg is loaded from checkpoints, never used

    def __init__(self, interpolate_mode='bilinear', **kwargs):
        super().__init__(interpolate_mode=interpolate_mode, **kwargs)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.offset_learning = OffsetLearning(self.num_classes, self.channels)

    def execute(self, inputs):
        fused = self.maxpool(self.fuse(inputs))        # (B, channels, H_0 // 2, W_0 // 2)
        return self.offset_learning(fused)
