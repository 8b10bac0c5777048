from .base import BaseSegmentor  # noqa: F401
from .data_preprocessor import SegDataPreProcessor  # noqa: F401
from .encoder_decoder import EncoderDecoder, slide_windows  # noqa: F401
from .seg_tta import SegTTAModel  # noqa: F401
