"""Models: backbones, decode heads, segmentors, losses."""
from . import utils  # noqa: F401
