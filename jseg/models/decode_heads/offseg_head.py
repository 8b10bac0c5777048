"""OffSeg decode head: FreqFusion pixel decoder + offset learning classifier.

"Revisiting Efficient Semantic Segmentation: Learning Offsets for Better
Spatial and Class Feature Alignment", ICCV 2025, arXiv:2508.08811, Sec. 3.4.
Port of ``OffSegHead`` from HVision-NKU/OffSeg
(``mmseg/models/decode_heads/offseg_head.py``); parameter names match its
checkpoints.
"""
import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..utils import ConvModule
from ..utils.offset_learning import OffsetLearning
from .decode_head import BaseDecodeHead
from .freqfusion import FreqFusion

__all__ = ['OffSegHead']


@MODELS.register_module()
class OffSegHead(BaseDecodeHead):
    """OffSeg head: (B, C_i, H/2^(i+2), W/2^(i+2)) for i = 0..3 -> (B, K, H/4, W/4) logits.

    Forward::

        x_i   = pre[i](x_i)                                  1x1 ConvModule -> new_channels[i]
        f     = x_3
        for i = 2, 1, 0:                                     FreqFusion cascade, low to high resolution
            _, hr, lr = freqfusions[2 - i](hr=x_i, lr=f)     both at x_i's resolution
            f = interleave(hr, lr)                           4 chunks of each, alternating
        logits = offset_learning(align(f))                   1x1 ConvModule -> channels, then K masks

    Args:
        in_channels (list[int]): channels of the four backbone levels.
        new_channels (list[int]): channels after ``pre``.
        num_classes (int): K.
        **kwargs: :class:`BaseDecodeHead` arguments (``channels``, ``norm_cfg``,
            ``in_index``, ...); ``input_transform`` is always 'multiple_select'.

    ``conv_seg`` (channels -> K), inherited from BaseDecodeHead, exists in the
    official model and its checkpoints (and is counted in the paper's 6.2M
    parameters of OffSeg-T) but the forward pass never uses it; it is kept so
    that official checkpoints load strictly, and is reported by
    :meth:`unused_parameter_names`.
    """

    uses_conv_seg = False  # conv_seg is loaded from checkpoints, never used

    def __init__(self, in_channels, new_channels, num_classes, **kwargs):
        super().__init__(in_channels=in_channels, num_classes=num_classes, input_transform='multiple_select',
                         **kwargs)
        if len(new_channels) != len(self.in_channels):
            raise ValueError(f'OffSegHead: {len(self.in_channels)} input levels but {len(new_channels)} '
                             f'new_channels')
        self.new_channels = list(new_channels)
        self.pre = nn.ModuleList()
        for cin, cout in zip(self.in_channels, self.new_channels):
            conv = ConvModule(cin, cout, 1, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
            self.pre.append(conv)
        self.freqfusions = nn.ModuleList()
        reversed_channels = self.new_channels[::-1]
        lr_channels = reversed_channels[0]
        for hr_channels in reversed_channels[1:]:
            self.freqfusions.append(FreqFusion(hr_channels=hr_channels, lr_channels=lr_channels,
                                               compressed_channels=(lr_channels + hr_channels) // 4))
            lr_channels += hr_channels
        self.align = ConvModule(sum(self.new_channels), self.channels, 1, conv_cfg=self.conv_cfg,
                                norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.offset_learning = OffsetLearning(self.num_classes, self.channels)

    def execute(self, inputs):
        """inputs: the backbone's list of feature maps -> logits (B, K, H_0, W_0)."""
        feats = [pre(x) for pre, x in zip(self.pre, self._transform_inputs(inputs))]
        feats = feats[::-1]
        lowres = feats[0]
        for hires, fusion in zip(feats[1:], self.freqfusions):
            _, hires, lowres = fusion(hr_feat=hires, lr_feat=lowres)        # both (B, *, h, w)
            b, _, h, w = hires.shape
            # official channel order: [hr_0, lr_0, hr_1, lr_1, hr_2, lr_2, hr_3, lr_3], quarters of each
            lowres = jt.concat([hires.reshape(b * 4, -1, h, w), lowres.reshape(b * 4, -1, h, w)],
                               dim=1).reshape(b, -1, h, w)
        return self.offset_learning(self.align(lowres))
