"""Feature backbones (one architecture family per file)."""
from .efficientformer_v2 import (EfficientFormerV2, efficientformerv2_l_feat, efficientformerv2_s0_feat,
                                 efficientformerv2_s1_feat, efficientformerv2_s2_feat)
from .mit import MixVisionTransformer
from .mscan import MSCAN
from .swin import SwinTransformer

__all__ = ['EfficientFormerV2', 'efficientformerv2_l_feat', 'efficientformerv2_s0_feat',
           'efficientformerv2_s1_feat', 'efficientformerv2_s2_feat', 'MixVisionTransformer', 'MSCAN',
           'SwinTransformer']
