"""BaseSegmentor: the batch entry point, result post-processing and weight init shared by segmentors.

``model(batch, mode)`` preprocesses a loader batch with the model's
``data_preprocessor`` and dispatches:

* ``'loss'``    -> :meth:`loss` (inputs, gt_seg) -> dict of losses and metrics;
* ``'predict'`` -> :meth:`predict` (inputs, metas) -> list of (K, H_ori, W_ori) logits;
* ``'tensor'``  -> :meth:`_forward` (inputs) -> raw head logits.
"""
from abc import ABCMeta, abstractmethod

import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..utils import resize
from .data_preprocessor import SegDataPreProcessor

__all__ = ['BaseSegmentor']


def _sample(batch, i):
    """``batch[i]`` (K, H, W) of a (B, K, H, W) Var; a reshape, not a copy, when B is 1."""
    return batch.reshape(batch.shape[1:]) if batch.shape[0] == 1 else batch[i]


class BaseSegmentor(nn.Module, metaclass=ABCMeta):
    """Base class of segmentors.

    Args:
        data_preprocessor (dict | SegDataPreProcessor | None): how batches are
            normalised and padded; None keeps the pixel values (no
            normalisation, no colour conversion).
        init_cfg (dict | list[dict] | None): ``dict(type='Pretrained',
            checkpoint=..., prefix=None)`` loads weights in :meth:`init_weights`.
    """

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__()
        if data_preprocessor is None:
            data_preprocessor = SegDataPreProcessor(bgr_to_rgb=False)
        elif isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        self.data_preprocessor = data_preprocessor
        self.init_cfg = init_cfg

    @property
    def with_neck(self):
        return getattr(self, 'neck', None) is not None

    @property
    def with_auxiliary_head(self):
        return getattr(self, 'auxiliary_head', None) is not None

    @property
    def with_decode_head(self):
        return getattr(self, 'decode_head', None) is not None

    def execute(self, batch, mode='tensor'):
        """Run the model on a loader batch (dict) or on a preprocessed (B, 3, H, W) Var.

        Args:
            batch (dict | jt.Var): see :mod:`.data_preprocessor`; a Var is used
                as the inputs directly (no labels, no metas).
            mode (str): 'loss', 'predict' or 'tensor'.
        """
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
        if isinstance(batch, jt.Var):
            inputs, gt_seg, metas = batch, None, None
        else:
            inputs, gt_seg, metas = self.data_preprocessor(batch, training=mode == 'loss')
        if mode == 'loss':
            if gt_seg is None:
                raise ValueError("mode='loss' needs a batch with 'gt_seg'")
            return self.loss(inputs, gt_seg)
        if mode == 'predict':
            return self.predict(inputs, metas)
        return self._forward(inputs)

    @abstractmethod
    def extract_feat(self, inputs):
        """Backbone (+ neck) features of (B, 3, H, W) inputs."""

    @abstractmethod
    def encode_decode(self, inputs, metas=None):
        """Logits (B, K, H, W) at the size of ``inputs``."""

    @abstractmethod
    def loss(self, inputs, gt_seg):
        """Dict of losses for inputs (B, 3, H, W) and labels (B, H, W)."""

    @abstractmethod
    def predict(self, inputs, metas=None):
        """List of per-sample logits at the original image sizes."""

    @abstractmethod
    def _forward(self, inputs):
        """Raw head output, no post-processing."""

    def postprocess_result(self, seg_logits, metas=None):
        """Per-sample logits in original image geometry (mmseg's ``postprocess_result``).

        For each sample: remove the padding (``img_padding_size``, else
        ``padding_size``, as (left, right, top, bottom)), undo a horizontal or
        vertical flip, resize bilinearly to ``ori_shape``. Without metas the
        logits are returned as they are.

        Args:
            seg_logits (jt.Var): (B, K, H, W).
            metas (list[dict] | None): one per sample.

        Returns:
            list[jt.Var]: B tensors (K, H_ori, W_ori).
        """
        b, _, h, w = seg_logits.shape
        if metas is None:
            return [_sample(seg_logits, i) for i in range(b)]
        results = []
        for i, meta in enumerate(metas):
            left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', (0, 0, 0, 0)))
            if b == 1 and (left, right, top, bottom) == (0, 0, 0, 0):
                logits = seg_logits        # nothing to cut: no copy of the (1, K, H, W) logits
            else:
                logits = seg_logits[i:i + 1, :, top:h - bottom, left:w - right]
            if meta.get('flip', False):
                direction = meta.get('flip_direction', None)
                if direction not in ('horizontal', 'vertical'):
                    raise ValueError(f'flip_direction must be horizontal or vertical, got {direction!r}')
                logits = logits.flip(3 if direction == 'horizontal' else 2)
            logits = resize(logits, size=tuple(meta['ori_shape'])[:2], mode='bilinear',
                            align_corners=self.align_corners)
            results.append(_sample(logits, 0))
        return results

    def init_weights(self):
        """Initialise children (``init_weights`` of backbone, neck, heads), then load ``Pretrained`` init_cfgs."""
        for child in self.children():
            if hasattr(child, 'init_weights'):
                child.init_weights()
        cfgs = [self.init_cfg] if isinstance(self.init_cfg, dict) else list(self.init_cfg or [])
        for cfg in cfgs:
            if cfg.get('type') != 'Pretrained':
                raise ValueError(f'segmentor init_cfg supports type Pretrained only, got {cfg!r}')
            from jseg.runner.checkpoint import load_checkpoint
            load_checkpoint(self, cfg['checkpoint'], strict=False, prefix=cfg.get('prefix'))
