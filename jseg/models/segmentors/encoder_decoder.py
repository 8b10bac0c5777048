"""EncoderDecoder: backbone (+ neck) + decode head (+ auxiliary heads), as mmseg 1.x.

Call flow::

    model(batch, 'loss')    -> data_preprocessor -> loss(inputs, gt_seg)
        loss():           extract_feat() -> decode_head.loss() [-> auxiliary_head.loss()]
    model(batch, 'predict') -> data_preprocessor -> predict(inputs, metas)
        predict():        inference() -> postprocess_result()
        inference():      whole_inference() | slide_inference()   (test_cfg['mode'])
        *_inference():    encode_decode() = extract_feat() -> decode_head.predict()
    model(batch, 'tensor')  -> data_preprocessor -> _forward(inputs) = decode_head(extract_feat())
"""
import warnings

import jittor as jt
import numpy as np
from jittor import nn

from jseg.registry import MODELS

from .base import BaseSegmentor

__all__ = ['EncoderDecoder', 'slide_windows']


def slide_windows(h_img, w_img, crop_size, stride):
    """Crop boxes of mmseg 1.x's sliding-window inference.

    The grid has ``max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1``
    rows (columns alike); the last window of a row or column is shifted back
    so that it ends at the image border, and a crop larger than the image is
    clipped to it.

    Returns:
        list[tuple[int, int, int, int]]: (y1, y2, x1, x2) per window.
    """
    h_crop, w_crop = crop_size
    h_stride, w_stride = stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


@MODELS.register_module()
class EncoderDecoder(BaseSegmentor):
    """Encoder-decoder segmentor.

    Args:
        backbone (dict): backbone config.
        decode_head (dict): decode head config.
        neck (dict | None): neck config.
        auxiliary_head (dict | list[dict] | None): heads trained alongside
            (losses prefixed ``aux.`` / ``aux_<i>.``), unused at inference.
        train_cfg (dict | None): unused by this segmentor.
        test_cfg (dict | None): ``mode`` 'whole' (default) or 'slide' with
            ``crop_size`` and ``stride`` (H, W).
        data_preprocessor (dict | None): see :class:`SegDataPreProcessor`.
        pretrained (str | None): backbone weights, set as ``backbone.pretrained``.
        init_cfg (dict | None): e.g. ``dict(type='Pretrained', checkpoint=...)``.
    """

    def __init__(self, backbone, decode_head, neck=None, auxiliary_head=None, train_cfg=None, test_cfg=None,
                 data_preprocessor=None, pretrained=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pretrained is not None:
            if backbone.get('pretrained') is not None:
                raise ValueError('both backbone and segmentor set pretrained weights')
            backbone = dict(backbone, pretrained=pretrained)
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.decode_head = MODELS.build(decode_head)
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        if auxiliary_head is not None:
            if isinstance(auxiliary_head, (list, tuple)):
                self.auxiliary_head = nn.ModuleList([MODELS.build(cfg) for cfg in auxiliary_head])
            else:
                self.auxiliary_head = MODELS.build(auxiliary_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else dict(mode='whole')

    def extract_feat(self, inputs):
        """(B, 3, H, W) -> list of feature maps."""
        x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x)
        return x

    def encode_decode(self, inputs, metas=None):
        """Logits (B, K, H, W), resized bilinearly to the size of ``inputs``."""
        shape = tuple(inputs.shape[2:])
        head_metas = [dict(img_shape=shape, pad_shape=shape) for _ in range(inputs.shape[0])]
        return self.decode_head.predict(self.extract_feat(inputs), head_metas, self.test_cfg)

    def loss(self, inputs, gt_seg):
        """Losses of the decode head (``decode.*``) and auxiliary heads (``aux.*``, ``aux_<i>.*``)."""
        x = self.extract_feat(inputs)
        losses = {f'decode.{k}': v for k, v in self.decode_head.loss(x, gt_seg, self.train_cfg).items()}
        if self.with_auxiliary_head:
            if isinstance(self.auxiliary_head, nn.ModuleList):
                for idx, head in enumerate(self.auxiliary_head):
                    losses.update({f'aux_{idx}.{k}': v for k, v in head.loss(x, gt_seg, self.train_cfg).items()})
            else:
                losses.update({f'aux.{k}': v
                               for k, v in self.auxiliary_head.loss(x, gt_seg, self.train_cfg).items()})
        return losses

    def predict(self, inputs, metas=None):
        """Per-sample logits (K, H_ori, W_ori): padding removed, flips undone, resized to ``ori_shape``.

        Without metas every sample's logits are returned at the input size.
        """
        shape = tuple(inputs.shape[2:])
        run_metas = metas if metas is not None else [
            dict(ori_shape=shape, img_shape=shape, pad_shape=shape, padding_size=(0, 0, 0, 0))
            for _ in range(inputs.shape[0])]
        return self.postprocess_result(self.inference(inputs, run_metas), metas)

    def _forward(self, inputs):
        """Raw decode head logits (B, K, h, w) at the head's resolution."""
        return self.decode_head(self.extract_feat(inputs))

    def inference(self, inputs, metas):
        """Whole-image or sliding-window logits (B, K, H, W) per ``test_cfg['mode']``."""
        mode = self.test_cfg.get('mode', 'whole')
        if mode not in ('whole', 'slide'):
            raise ValueError(f'test_cfg mode must be "whole" or "slide", got {mode!r}')
        if metas and any(tuple(m.get('ori_shape', ())) != tuple(metas[0].get('ori_shape', ()))
                         for m in metas):
            warnings.warn('Image shapes are different in the batch.', stacklevel=2)
        if mode == 'slide':
            return self.slide_inference(inputs, metas)
        return self.whole_inference(inputs, metas)

    def whole_inference(self, inputs, metas=None):
        """Logits of the whole (padded) input, (B, K, H, W)."""
        return self.encode_decode(inputs, metas)

    def slide_inference(self, inputs, metas=None):
        """Average the logits of overlapping ``crop_size`` windows moved by ``stride``.

        Windows follow :func:`slide_windows`; each pixel's logits are the mean
        over the windows that cover it. Returns (B, K, H, W).
        """
        b, _, h_img, w_img = inputs.shape
        boxes = slide_windows(h_img, w_img, self.test_cfg['crop_size'], self.test_cfg['stride'])
        if boxes == [(0, h_img, 0, w_img)]:
            return self.encode_decode(inputs, metas)   # one window covering the image: its logits, count 1
        count = np.zeros((1, 1, h_img, w_img), dtype=np.float32)
        summed = None
        for y1, y2, x1, x2 in boxes:
            crop = self.encode_decode(inputs[:, :, y1:y2, x1:x2], metas)         # (B, K, y2-y1, x2-x1)
            crop.sync()                                                          # free the window's graph
            placed = crop.reindex([b, crop.shape[1], h_img, w_img], ['i0', 'i1', f'i2-{y1}', f'i3-{x1}'],
                                  overflow_value=0)                              # zero outside the window
            summed = placed if summed is None else summed + placed
            count[:, :, y1:y2, x1:x2] += 1
        if (count == 0).any():
            raise RuntimeError('slide_inference: some pixels are covered by no window')
        return summed / jt.array(count)
