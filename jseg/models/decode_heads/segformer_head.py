"""SegFormer's all-MLP decode head.

* SegFormer: Xie et al., "SegFormer: Simple and Efficient Design for Semantic
  Segmentation with Transformers", NeurIPS 2021, arXiv:2105.15203,
  https://github.com/NVlabs/SegFormer.
* Source of this port: the mmsegmentation 1.x version shipped with OffSeg,
  https://github.com/HVision-NKU/OffSeg, ``mmseg/models/decode_heads/segformer_head.py``
  (Apache-2.0, OpenMMLab). Parameter names match its checkpoints
  (``convs.{i}.conv.weight``, ``convs.{i}.bn.*``, ``fusion_conv.*``, ``conv_seg.*``).

Forward, for the four MiT levels x_i (B, C_i, H/2**(i+2), W/2**(i+2))::

    y_i    = resize(convs[i](x_i), size of x_0)        1x1 ConvModule (conv-norm-ReLU) -> channels
    fused  = fusion_conv(concat(y_0, ..., y_3))        1x1 ConvModule (conv-norm), 4*channels -> channels
    logits = conv_seg(dropout(fused))                  (B, K, H/4, W/4)
"""
import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..utils import ConvModule, resize
from .decode_head import BaseDecodeHead

__all__ = ['SegformerHead']


@MODELS.register_module()
class SegformerHead(BaseDecodeHead):
    """The all-MLP head: per-level 1x1 projections, upsampling to 1/4, fusion, 1x1 classifier.

    Args:
        interpolate_mode (str): upsampling of the projected levels ('bilinear').
        **kwargs: :class:`BaseDecodeHead` arguments (``in_channels``, ``in_index``,
            ``channels``, ``num_classes``, ``norm_cfg``, ...); ``input_transform``
            is always 'multiple_select'.

    Shapes: list of (B, in_channels[i], H_i, W_i) -> (B, K, H_0, W_0).
    """

    def __init__(self, interpolate_mode='bilinear', **kwargs):
        super().__init__(input_transform='multiple_select', **kwargs)
        self.interpolate_mode = interpolate_mode
        num_inputs = len(self.in_channels)
        if num_inputs != len(self.in_index):
            raise ValueError(f'{type(self).__name__}: {num_inputs} in_channels but in_index {self.in_index}')
        self.convs = nn.ModuleList()
        for cin in self.in_channels:
            conv = ConvModule(cin, self.channels, 1, stride=1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
            self.convs.append(conv)
        self.fusion_conv = ConvModule(self.channels * num_inputs, self.channels, 1, norm_cfg=self.norm_cfg)

    def fuse(self, inputs):
        """Backbone levels -> fused features (B, channels, H_0, W_0)."""
        inputs = self._transform_inputs(inputs)
        size = inputs[0].shape[2:]
        outs = [resize(conv(x), size=size, mode=self.interpolate_mode, align_corners=self.align_corners)
                for conv, x in zip(self.convs, inputs)]
        return self.fusion_conv(jt.concat(outs, dim=1))

    def execute(self, inputs):
        return self.cls_seg(self.fuse(inputs))
