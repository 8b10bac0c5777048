"""jseg: semantic segmentation in Jittor, home of OffSeg and offset learning."""
from .jittor_env import configure_jittor

configure_jittor()  # must run before anything imports jittor

from .version import __version__  # noqa: E402
from . import evaluation, runner  # noqa: E402,F401  (registers metrics, optimizers, schedulers, hooks)
from . import datasets  # noqa: E402,F401  (registers datasets and transforms)
from . import models  # noqa: E402,F401  (registers backbones, heads, losses, segmentors)

__all__ = ['__version__', 'configure_jittor']
