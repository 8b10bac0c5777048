"""Stochastic depth (DropPath), as timm and mmcv define it."""
import jittor as jt
from jittor import nn

__all__ = ['DropPath', 'drop_path']


def drop_path(x, drop_prob=0.0, training=False):
    """Zero whole samples of ``x`` with probability ``drop_prob`` and rescale the rest.

    x: (B, ...) -> same shape; identity in eval mode or when ``drop_prob == 0``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = (jt.rand(shape, dtype=x.dtype) + keep_prob).floor()
    return x / keep_prob * mask


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        self.drop_prob = drop_prob

    def execute(self, x):
        return drop_path(x, self.drop_prob, self.is_training())
