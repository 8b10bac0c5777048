"""BaseDecodeHead: the shared part of all decode heads, with mmseg 1.x's constructor and semantics.

Call flow::

    loss(inputs, gt_seg)      -> execute(inputs) -> loss_by_feat(logits, gt_seg)
    predict(inputs, metas)    -> execute(inputs) -> predict_by_feat(logits, metas)

``loss_by_feat`` resizes the logits bilinearly to the label size, sums every
loss in ``loss_decode`` under its ``loss_name`` and adds ``acc_seg`` (percent,
ignoring ``ignore_index``). Subclasses implement ``execute(inputs)``: multi-level
features -> (B, out_channels, h, w) logits.
"""
import warnings
from abc import ABCMeta, abstractmethod

import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..losses import accuracy
from ..utils import resize
from ..utils.weight_init import (constant_init, kaiming_init, normal_init, trunc_normal_init, uniform_init,
                                 xavier_init)

__all__ = ['BaseDecodeHead', 'apply_init_cfg']

_INITS = {
    'Normal': lambda m, cfg: normal_init(m, mean=cfg.get('mean', 0.0), std=cfg.get('std', 1.0),
                                         bias=cfg.get('bias', 0.0)),
    'TruncNormal': lambda m, cfg: trunc_normal_init(m, mean=cfg.get('mean', 0.0), std=cfg.get('std', 1.0),
                                                    a=cfg.get('a', -2.0), b=cfg.get('b', 2.0),
                                                    bias=cfg.get('bias', 0.0)),
    'Constant': lambda m, cfg: constant_init(m, cfg['val'], bias=cfg.get('bias', 0.0)),
    'Xavier': lambda m, cfg: xavier_init(m, gain=cfg.get('gain', 1.0), bias=cfg.get('bias', 0.0),
                                         distribution=cfg.get('distribution', 'normal')),
    'Kaiming': lambda m, cfg: kaiming_init(m, a=cfg.get('a', 0.0), mode=cfg.get('mode', 'fan_out'),
                                           nonlinearity=cfg.get('nonlinearity', 'relu'),
                                           bias=cfg.get('bias', 0.0),
                                           distribution=cfg.get('distribution', 'normal')),
    'Uniform': lambda m, cfg: uniform_init(m, a=cfg.get('a', 0.0), b=cfg.get('b', 1.0),
                                           bias=cfg.get('bias', 0.0)),
}


def apply_init_cfg(module, init_cfg):
    """Apply mmengine-style initialisers to the sub-modules of ``module``.

    Each dict has a ``type`` (Normal, TruncNormal, Constant, Xavier, Kaiming,
    Uniform) plus its arguments, and selects modules either by attribute name
    (``override=dict(name='conv_seg')``, which may carry its own arguments) or
    by class name (``layer='Conv2d'`` or a list). ``Pretrained`` entries are
    left to the caller.
    """
    for cfg in ([init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])):
        cfg = dict(cfg)
        kind = cfg.pop('type')
        if kind == 'Pretrained':
            continue
        if kind not in _INITS:
            raise KeyError(f'unknown init type {kind!r}; known: {sorted(_INITS)} and Pretrained')
        overrides = cfg.pop('override', None)
        layers = cfg.pop('layer', None)
        if layers is not None:
            layers = {layers} if isinstance(layers, str) else set(layers)
            for m in module.modules():
                if type(m).__name__ in layers:
                    _INITS[kind](m, cfg)
        for override in ([overrides] if isinstance(overrides, dict) else list(overrides or [])):
            override = dict(override)
            target = getattr(module, override.pop('name'))
            override_kind = override.pop('type', kind)
            _INITS[override_kind](target, {**cfg, **override})


class BaseDecodeHead(nn.Module, metaclass=ABCMeta):
    """Base class of decode heads (mmseg 1.x ``BaseDecodeHead``).

    Args:
        in_channels (int | Sequence[int]): input channels.
        channels (int): channels before the classifier ``conv_seg``.
        num_classes (int): number of classes (keyword only).
        out_channels (int | None): output channels; ``num_classes`` by default,
            or 1 for binary segmentation with ``threshold``.
        threshold (float | None): binary threshold (0.3 when out_channels == 1).
        dropout_ratio (float): Dropout2d before ``conv_seg``.
        conv_cfg, norm_cfg, act_cfg (dict | None): for the head's ConvModules.
        in_index (int | Sequence[int]): which backbone outputs to use.
        input_transform (str | None): 'resize_concat', 'multiple_select' or None.
        loss_decode (dict | Sequence[dict]): loss config(s), built from MODELS.
        ignore_index (int): label without loss and accuracy.
        sampler (dict | None): pixel sampler; not supported (must be None).
        align_corners (bool): of every bilinear resize of logits.
        init_cfg (dict | list[dict] | None): initialisers run by
            :meth:`init_weights`, by default N(0, 0.01) on ``conv_seg``.
    """

    def __init__(self, in_channels, channels, *, num_classes, out_channels=None, threshold=None,
                 dropout_ratio=0.1, conv_cfg=None, norm_cfg=None, act_cfg=dict(type='ReLU'), in_index=-1,
                 input_transform=None, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 ignore_index=255, sampler=None, align_corners=False,
                 init_cfg=dict(type='Normal', std=0.01, override=dict(name='conv_seg'))):
        super().__init__()
        self._init_inputs(in_channels, in_index, input_transform)
        self.channels = channels
        self.dropout_ratio = dropout_ratio
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.init_cfg = init_cfg
        if out_channels is None:
            if num_classes == 2:
                warnings.warn('For binary segmentation, out_channels=1 with a threshold is suggested', stacklevel=2)
            out_channels = num_classes
        if out_channels != num_classes and out_channels != 1:
            raise ValueError(f'out_channels must equal num_classes, or be 1 for binary segmentation; '
                             f'got out_channels={out_channels}, num_classes={num_classes}')
        if out_channels == 1 and threshold is None:
            threshold = 0.3
            warnings.warn('threshold is not defined for binary segmentation; it defaults to 0.3', stacklevel=2)
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.threshold = threshold
        if isinstance(loss_decode, dict):
            self.loss_decode = MODELS.build(loss_decode)
        elif isinstance(loss_decode, (list, tuple)):
            self.loss_decode = nn.ModuleList([MODELS.build(cfg) for cfg in loss_decode])
        else:
            raise TypeError(f'loss_decode must be a dict or a sequence of dicts, got {type(loss_decode)}')
        if sampler is not None:
            raise NotImplementedError(f'BaseDecodeHead: pixel samplers are not supported (got {sampler!r})')
        self.sampler = None
        # The 1x1 classifier of per-pixel heads. Heads with their own classifier (OffSegHead's offset
        # learning) still own it, as the official models do, so that official checkpoints load; they
        # set uses_conv_seg = False, which lists it in unused_parameter_names().
        self.conv_seg = nn.Conv2d(channels, self.out_channels, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def _init_inputs(self, in_channels, in_index, input_transform):
        if input_transform not in (None, 'resize_concat', 'multiple_select'):
            raise ValueError(f'input_transform must be None, resize_concat or multiple_select, '
                             f'got {input_transform!r}')
        self.input_transform = input_transform
        self.in_index = in_index
        if input_transform is not None:
            if not isinstance(in_channels, (list, tuple)) or not isinstance(in_index, (list, tuple)) \
                    or len(in_channels) != len(in_index):
                raise ValueError(f'{input_transform}: in_channels and in_index must be sequences of equal '
                                 f'length, got {in_channels!r} and {in_index!r}')
            self.in_channels = sum(in_channels) if input_transform == 'resize_concat' else list(in_channels)
        else:
            if not isinstance(in_channels, int) or not isinstance(in_index, int):
                raise ValueError(f'without input_transform, in_channels and in_index must be ints, '
                                 f'got {in_channels!r} and {in_index!r}')
            self.in_channels = in_channels

    def init_weights(self):
        """Run ``init_cfg`` (mmengine order: own initialisers, then the direct children's ``init_weights``)."""
        apply_init_cfg(self, self.init_cfg)
        for child in self.children():
            if hasattr(child, 'init_weights'):
                child.init_weights()

    #: False for heads whose forward never calls ``conv_seg`` (offset-learning heads keep it only so
    #: that official checkpoints load; it is counted in the papers' parameter numbers).
    uses_conv_seg = True

    def unused_parameter_names(self):
        """Names of parameters that the forward pass never uses (``conv_seg`` when ``uses_conv_seg`` is False).

        Trainers can leave them out of the optimizer; gradient-coverage tests skip them.
        """
        return [] if self.uses_conv_seg else ['conv_seg.weight', 'conv_seg.bias']

    def _transform_inputs(self, inputs):
        """Select (and for 'resize_concat' resize to the first and concatenate) the input levels."""
        if self.input_transform == 'resize_concat':
            inputs = [inputs[i] for i in self.in_index]
            upsampled = [resize(x, size=inputs[0].shape[2:], mode='bilinear', align_corners=self.align_corners)
                         for x in inputs]
            return jt.concat(upsampled, dim=1)
        if self.input_transform == 'multiple_select':
            return [inputs[i] for i in self.in_index]
        return inputs[self.in_index]

    @abstractmethod
    def execute(self, inputs):
        """Multi-level features -> (B, out_channels, h, w) logits."""

    def cls_seg(self, feat):
        """Dropout, then the 1x1 classifier ``conv_seg``."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)

    def loss(self, inputs, gt_seg, train_cfg=None):
        """Forward, then :meth:`loss_by_feat`. ``gt_seg``: (B, H, W) integer labels."""
        return self.loss_by_feat(self.execute(inputs), gt_seg)

    def predict(self, inputs, batch_img_metas, test_cfg=None):
        """Forward, then :meth:`predict_by_feat`: logits at the size the metas give."""
        return self.predict_by_feat(self.execute(inputs), batch_img_metas)

    def loss_by_feat(self, seg_logits, seg_label):
        """Losses and ``acc_seg`` of (B, K, h, w) logits against (B, H, W) labels.

        Returns:
            dict[str, jt.Var]: one entry per ``loss_name`` (entries with the
            same name are summed) and ``acc_seg``.
        """
        if seg_label.ndim == 4:
            seg_label = seg_label.squeeze(1)
        seg_logits = resize(seg_logits, size=seg_label.shape[-2:], mode='bilinear',
                            align_corners=self.align_corners)
        losses = {}
        criteria = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for criterion in criteria:
            value = criterion(seg_logits, seg_label, weight=None, ignore_index=self.ignore_index)
            name = criterion.loss_name
            losses[name] = value if name not in losses else losses[name] + value
        losses['acc_seg'] = accuracy(seg_logits, seg_label, ignore_index=self.ignore_index)
        return losses

    def predict_by_feat(self, seg_logits, batch_img_metas):
        """Resize logits bilinearly to ``pad_shape`` (else ``img_shape``) of the first meta."""
        meta = batch_img_metas[0]
        size = meta['pad_shape'][:2] if 'pad_shape' in meta else meta['img_shape'][:2]
        return resize(seg_logits, size=size, mode='bilinear', align_corners=self.align_corners)
