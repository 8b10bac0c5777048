"""Initialisation as the official mmseg / mmcv code does it, for the models ported from it.

* :func:`init_vit_style`: the random init of the official MiT and MSCAN ``init_weights``.
* :func:`pretrained_init_cfg` / :func:`load_pretrained`: the ``init_cfg=dict(type='Pretrained',
  checkpoint=...)`` (or deprecated ``pretrained=``) of backbones, loaded with the standard
  missing/unexpected-key report.
"""
import math
import os.path as osp

from jittor import nn

from .norm import LayerNorm
from .weight_init import constant_init, normal_init, trunc_normal_init

__all__ = ['init_vit_style', 'load_pretrained', 'pretrained_init_cfg']


def init_vit_style(module):
    """Linear: truncated normal (std 0.02), zero bias; LayerNorm: 1 / 0; Conv2d: normal with
    std sqrt(2 / fan_out), fan_out = k_h * k_w * C_out / groups, zero bias.

    Other parameters (BatchNorm, layer scales, attention input projections) keep their values.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_init(m, std=0.02, bias=0.0)
        elif isinstance(m, (LayerNorm, nn.LayerNorm)):
            constant_init(m, val=1.0, bias=0.0)
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.weight.shape[2:]
            fan_out = kh * kw * m.out_channels // m.groups
            normal_init(m, mean=0.0, std=math.sqrt(2.0 / fan_out), bias=0.0)


def pretrained_init_cfg(name, init_cfg, pretrained):
    """The backbone's ``init_cfg`` from its two official arguments (at most one may be given)."""
    if init_cfg is not None and pretrained is not None:
        raise ValueError(f'{name}: give init_cfg or pretrained, not both')
    if pretrained is not None:
        if not isinstance(pretrained, str):
            raise TypeError(f'{name}: pretrained must be a path or None, got {pretrained!r}')
        init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    if init_cfg is not None and (init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg):
        raise ValueError(f'{name}: init_cfg must be dict(type="Pretrained", checkpoint=...), got {init_cfg!r}')
    return dict(init_cfg) if init_cfg is not None else None


def load_pretrained(module, init_cfg, name, revise_keys=()):
    """Load ``init_cfg['checkpoint']`` (optional ``prefix``) into ``module``; returns the LoadReport.

    ``revise_keys``: regex substitutions applied to the keys after the prefix selection
    (see :func:`jseg.runner.checkpoint.load_checkpoint`).

    Keys the checkpoint lacks keep their current values and are reported by name,
    as are keys it has in excess (e.g. an ImageNet classifier ``head.*``).
    """
    from jseg.runner.checkpoint import load_checkpoint
    path = init_cfg['checkpoint']
    if not osp.isfile(path):
        raise FileNotFoundError(f'{name}: pretrained checkpoint not found: {path} '
                                f'(init_cfg.checkpoint; set init_cfg=None to train from scratch)')
    report, _ = load_checkpoint(module, path, strict=False, prefix=init_cfg.get('prefix'), revise_keys=revise_keys)
    return report
