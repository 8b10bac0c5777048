"""Stochastic depth (DropPath), as timm and mmcv define it."""
import jittor as jt
from jittor import nn

__all__ = ['DropPath', 'build_dropout', 'drop_path']


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


def build_dropout(cfg):
    """mmcv's ``build_dropout``: ``dict(type='Dropout' | 'DropPath', drop_prob=p)``; None -> identity.

    A zero probability also gives the identity (no parameters either way, so names are unaffected).
    """
    if not cfg:
        return nn.Identity()
    args = dict(cfg)
    kind = args.pop('type', None)
    prob = float(args.pop('drop_prob', 0.5 if kind == 'Dropout' else 0.1))   # mmcv's defaults
    args.pop('inplace', None)
    if args or kind not in ('Dropout', 'DropPath'):
        raise ValueError(f'build_dropout: expected dict(type="Dropout" or "DropPath", drop_prob=p), got {cfg!r}')
    if prob == 0.0:
        return nn.Identity()
    return nn.Dropout(prob) if kind == 'Dropout' else DropPath(prob)
