"""Decode heads, registered in ``MODELS``."""
from .decode_head import BaseDecodeHead
from .freqfusion import FreqFusion, LocalSimGuidedSampler
from .ham_head import LightHamHead
from .ham_head_offset_learning import LightHamHeadOffsetLearning
from .mask2former_head import Mask2FormerHead
from .mask2former_head_offset_learning import Mask2FormerHeadOffsetLearning
from .msdeformattn_pixel_decoder import MSDeformAttnPixelDecoder
from .offseg_head import OffSegHead
from .segformer_head import SegformerHead
from .segformer_head_offset_learning import SegformerHeadOffsetLearning

__all__ = ['BaseDecodeHead', 'FreqFusion', 'LightHamHead', 'LightHamHeadOffsetLearning', 'LocalSimGuidedSampler',
           'Mask2FormerHead', 'Mask2FormerHeadOffsetLearning', 'MSDeformAttnPixelDecoder', 'OffSegHead',
           'SegformerHead', 'SegformerHeadOffsetLearning']
