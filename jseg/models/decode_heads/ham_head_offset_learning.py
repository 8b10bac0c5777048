"""SegNeXt's LightHamHead with offset learning in place of the 1x1 classifier.

"Revisiting Efficient Semantic Segmentation: Learning Offsets for Better Spatial
and Class Feature Alignment", Zhang et al., ICCV 2025, arXiv:2508.08811, Sec. 4.3
(Table 3). Port of ``LightHamHeadOffsetLearning`` from
https://github.com/HVision-NKU/OffSeg,
``mmseg/models/decode_heads/ham_head_offset_learning.py`` (see that repository's
LICENSE); parameter names match its checkpoints.

Forward (as the official code builds it)::

    x      = LightHamHead.decode(inputs)               squeeze, Hamburger, align: (B, channels, H/8, W/8)
    logits = offset_learning(x)                        (B, K, H/8, W/8), no dropout
"""
from jseg.registry import MODELS

from ..utils.offset_learning import OffsetLearning
from .ham_head import LightHamHead

__all__ = ['LightHamHeadOffsetLearning']


@MODELS.register_module()
class LightHamHeadOffsetLearning(LightHamHead):
    """LightHamHead + offset learning: list of (B, C_i, H_i, W_i) -> (B, K, H_0, W_0).

    Args: as :class:`LightHamHead`.

    ``conv_seg`` (channels -> K) and the Dropout2d before it, inherited from
    BaseDecodeHead, exist in the official model (its removal is commented out
    there) and in its checkpoints, and are counted in the paper's parameter
    numbers, but the forward pass never uses them. They are kept so that official
    checkpoints load without unexpected keys; :meth:`unused_parameter_names`
    reports ``conv_seg`` (trainers may leave it out of the optimizer, gradient
    tests skip it).
    """

    uses_conv_seg = False  # conv_seg is loaded from checkpoints, never used

    def __init__(self, ham_channels=512, ham_kwargs=dict(), **kwargs):
        super().__init__(ham_channels=ham_channels, ham_kwargs=ham_kwargs, **kwargs)
        self.offset_learning = OffsetLearning(self.num_classes, self.channels)

    def execute(self, inputs):
        return self.offset_learning(self.decode(inputs))
