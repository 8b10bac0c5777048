"""Normalization layers built from mmcv-style configs (``dict(type='GN', num_groups=32)``).

The layers compute the variance in two passes (mean of squared deviations), as
PyTorch does, rather than as E[x^2] - E[x]^2, so that outputs match official
PyTorch checkpoints closely even for activations with a large mean.
``BatchNorm2d`` keeps PyTorch's running statistics (unbiased running variance)
and, as ``SyncBN``, averages batch statistics across MPI ranks. Training-mode
BatchNorm and GroupNorm run the operators of :mod:`jseg.ops.norm` (JIT CPU
kernels, or their compositions on CUDA).
"""
import jittor as jt
from jittor import nn

from jseg.ops.norm import batch_norm_train, group_norm
from jseg.registry import MODELS

__all__ = ['BatchNorm2d', 'GroupNorm', 'LayerNorm', 'build_norm_layer']


class BatchNorm2d(nn.Module):
    """Batch normalization over (B, C, *) inputs.

    Args:
        num_features (int): C.
        eps (float): added to the variance.
        momentum (float): running statistics update factor (PyTorch's meaning).
        sync (bool): under MPI, use the statistics of the global batch.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, sync=False):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.sync = sync
        self.affine = affine
        self.weight = jt.ones(num_features) if affine else None
        self.bias = jt.zeros(num_features) if affine else None
        self.running_mean = jt.zeros(num_features).stop_grad()
        self.running_var = jt.ones(num_features).stop_grad()

    def execute(self, x):
        shape = [1, -1] + [1] * (x.ndim - 2)
        if self.is_training():
            count = x.numel() // x.shape[1] * (jt.world_size if self.sync and jt.in_mpi else 1)
            out, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps, self.sync)
            m = self.momentum
            unbiased = var * (count / max(count - 1, 1))
            self.running_mean.update(self.running_mean * (1 - m) + mean.detach() * m)
            self.running_var.update(self.running_var * (1 - m) + unbiased.detach() * m)
            return out
        out = (x - self.running_mean.reshape(shape)) / jt.sqrt(self.running_var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


class GroupNorm(nn.Module):
    """Group normalization of (B, C, *) inputs over groups of C // num_groups channels."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        if num_channels % num_groups:
            raise ValueError(f'GroupNorm: {num_channels} channels do not split into {num_groups} groups')
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.weight = jt.ones(num_channels) if affine else None
        self.bias = jt.zeros(num_channels) if affine else None

    def execute(self, x):
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class LayerNorm(nn.Module):
    """Layer normalization over the trailing ``normalized_shape`` dimensions."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = jt.ones(self.normalized_shape) if elementwise_affine else None
        self.bias = jt.zeros(self.normalized_shape) if elementwise_affine else None

    def execute(self, x):
        dims = list(range(x.ndim - len(self.normalized_shape), x.ndim))
        mean = x.mean(dims=dims, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(dims=dims, keepdims=True)
        out = centered / jt.sqrt(var + self.eps)
        if self.elementwise_affine:
            out = out * self.weight + self.bias
        return out


def _batch_norm(num_features, sync, eps=1e-5, momentum=0.1, affine=True):
    return BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=affine, sync=sync)


# name -> (abbreviation used in parameter names, factory(num_features, **cfg))
_NORMS = {
    'BN': ('bn', lambda c, **kw: _batch_norm(c, sync=False, **kw)),
    'BN2d': ('bn', lambda c, **kw: _batch_norm(c, sync=False, **kw)),
    'SyncBN': ('bn', lambda c, **kw: _batch_norm(c, sync=True, **kw)),
    'GN': ('gn', lambda c, num_groups, **kw: GroupNorm(num_groups, c, **kw)),
    'LN': ('ln', lambda c, **kw: LayerNorm(c, **kw)),
}
for _name, (_, _factory) in _NORMS.items():
    MODELS.register_module(_name, module=_factory)


def build_norm_layer(cfg, num_features, postfix=''):
    """Build a norm layer; returns ``(name, layer)`` as mmcv does.

    Args:
        cfg (dict): ``type`` is one of BN, BN2d, SyncBN, GN, LN plus the
            layer's arguments; ``requires_grad=False`` freezes weight and bias.
        num_features (int): channels to normalize.
        postfix (int | str): appended to the abbreviation (``bn1``).

    Returns:
        tuple[str, nn.Module]: the mmcv name (``'bn'``, ``'gn'``, ``'ln'`` +
        postfix), under which the layer's parameters appear in checkpoints.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'norm_cfg must be a dict with a "type", got {cfg!r}')
    args = dict(cfg)
    norm_type = args.pop('type')
    requires_grad = args.pop('requires_grad', True)
    if norm_type not in _NORMS:
        MODELS.get(norm_type)  # raises with the closest names
        raise KeyError(f'{norm_type!r} is registered but is not a norm layer')
    abbr, factory = _NORMS[norm_type]
    layer = factory(num_features, **args)
    if not requires_grad:
        for param in layer.parameters():
            param.stop_grad()
    return f'{abbr}{postfix}', layer
