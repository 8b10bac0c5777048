"""Activation layers built from configs (``dict(type='ReLU')``), registered in ``MODELS``."""

import jittor as jt
from jittor import nn

from jseg.ops.gelu import gelu
from jseg.registry import MODELS

__all__ = ['GELU', 'build_activation_layer']


class GELU(nn.Module):
    """GELU with the exact erf form (PyTorch's default ``approximate='none'``); :func:`jseg.ops.gelu.gelu`."""

    def execute(self, x):
        return gelu(x)


class HSigmoid(nn.Module):
    """mmcv's HSigmoid: ``clamp((x + bias) / divisor, 0, 1)`` (defaults 3 and 6, as ReLU6(x+3)/6)."""

    def __init__(self, bias=3.0, divisor=6.0, min_value=0.0, max_value=1.0):
        self.bias, self.divisor = bias, divisor
        self.min_value, self.max_value = min_value, max_value

    def execute(self, x):
        return ((x + self.bias) / self.divisor).clamp(self.min_value, self.max_value)


for _name, _cls in {
        'ReLU': nn.ReLU, 'GELU': GELU, 'Sigmoid': nn.Sigmoid, 'Tanh': nn.Tanh,
        'LeakyReLU': nn.LeakyReLU, 'ReLU6': nn.ReLU6, 'SiLU': nn.SiLU, 'Swish': nn.SiLU,
        'HSigmoid': HSigmoid}.items():
    MODELS.register_module(_name, module=_cls)


def build_activation_layer(cfg):
    """Build an activation from ``dict(type=..., **args)``; ``inplace`` is accepted and ignored."""
    args = dict(cfg)
    args.pop('inplace', None)
    return MODELS.build(args)
