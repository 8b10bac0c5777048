"""Weight initialisers with mmengine's names and semantics (``trunc_normal_init(m, std=.02)``).

Each ``*_init(module, ...)`` sets ``module.weight`` and, when present,
``module.bias``; the ``*_`` functions fill one Var in place.
"""
import math

import jittor as jt
from jittor import init

__all__ = ['constant_init', 'kaiming_init', 'normal_init', 'trunc_normal_', 'trunc_normal_init',
           'uniform_init', 'xavier_init']


def _fans(var):
    shape = var.shape
    receptive = int(math.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[0] * receptive
    return fan_in, fan_out


def _set_bias(module, bias):
    if getattr(module, 'bias', None) is not None and isinstance(module.bias, jt.Var):
        init.constant_(module.bias, bias)


def trunc_normal_(var, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill ``var`` from N(mean, std) truncated to [a, b] (absolute bounds, as PyTorch)."""
    return init.trunc_normal_(var, mean=mean, std=std, a=a, b=b)


def constant_init(module, val, bias=0.0):
    if getattr(module, 'weight', None) is not None:
        init.constant_(module.weight, val)
    _set_bias(module, bias)


def normal_init(module, mean=0.0, std=1.0, bias=0.0):
    if getattr(module, 'weight', None) is not None:
        init.gauss_(module.weight, mean, std)
    _set_bias(module, bias)


def trunc_normal_init(module, mean=0.0, std=1.0, a=-2.0, b=2.0, bias=0.0):
    if getattr(module, 'weight', None) is not None:
        trunc_normal_(module.weight, mean, std, a, b)
    _set_bias(module, bias)


def uniform_init(module, a=0.0, b=1.0, bias=0.0):
    if getattr(module, 'weight', None) is not None:
        init.uniform_(module.weight, a, b)
    _set_bias(module, bias)


def xavier_init(module, gain=1.0, bias=0.0, distribution='normal'):
    """Glorot init: std = gain * sqrt(2 / (fan_in + fan_out))."""
    if distribution not in ('uniform', 'normal'):
        raise ValueError(f'xavier_init: distribution must be uniform or normal, got {distribution!r}')
    fan_in, fan_out = _fans(module.weight)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    if distribution == 'uniform':
        bound = math.sqrt(3.0) * std
        init.uniform_(module.weight, -bound, bound)
    else:
        init.gauss_(module.weight, 0.0, std)
    _set_bias(module, bias)


def kaiming_init(module, a=0.0, mode='fan_out', nonlinearity='relu', bias=0.0, distribution='normal'):
    """He init with PyTorch's gain for ``nonlinearity``."""
    fan_in, fan_out = _fans(module.weight)
    fan = fan_in if mode == 'fan_in' else fan_out
    gain = math.sqrt(2.0 / (1 + a ** 2)) if nonlinearity in ('relu', 'leaky_relu') else 1.0
    std = gain / math.sqrt(fan)
    if distribution == 'uniform':
        bound = math.sqrt(3.0) * std
        init.uniform_(module.weight, -bound, bound)
    else:
        init.gauss_(module.weight, 0.0, std)
    _set_bias(module, bias)
