"""Models: backbones, decode heads, segmentors, losses."""
from . import utils  # noqa: F401
from . import losses  # noqa: F401
from . import decode_heads  # noqa: F401
from . import segmentors  # noqa: F401
from . import backbones  # noqa: F401
