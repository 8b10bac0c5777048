"""Decode heads, registered in ``MODELS``."""
from .decode_head import BaseDecodeHead
from .freqfusion import FreqFusion, LocalSimGuidedSampler
from .offseg_head import OffSegHead

__all__ = ['BaseDecodeHead', 'FreqFusion', 'LocalSimGuidedSampler', 'OffSegHead']
