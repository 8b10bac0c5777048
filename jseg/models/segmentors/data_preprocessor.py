"""SegDataPreProcessor: turn a loader batch into normalised model inputs (mmseg semantics).

A batch from the data loader is a dict::

    inputs  np.uint8 (B, 3, H, W), BGR, zero-padded at the bottom/right to a common size
    gt_seg  np.uint8 (B, H, W), padded with 255 (absent without labels; at test time it
            may be at the original image size)
    metas   list of B dicts: ori_shape, img_shape, pad_shape, scale_factor, flip, ...

The preprocessor converts BGR to RGB, normalises ``(x - mean) / std``, then
pads every image at the bottom/right, in the *normalised* space, with
``pad_val`` (the loader's zero padding is replaced too, using each meta's
``img_shape``), and the labels with ``seg_pad_val``:

* training: to ``size`` or up to a multiple of ``size_divisor``;
* testing: only as ``test_cfg`` asks (``size`` / ``size_divisor``); labels are
  left as they are.

The returned metas are copies with ``pad_shape`` and the padding as
``(left, right, top, bottom)`` under ``padding_size`` (and, at test time, also
``img_padding_size``, the key mmseg's postprocessing reads first).
"""
import jittor as jt
import numpy as np

from jseg.registry import MODELS

__all__ = ['SegDataPreProcessor']


def _to_numpy(x):
    return x.numpy() if isinstance(x, jt.Var) else np.asarray(x)


@MODELS.register_module()
class SegDataPreProcessor:
    """Normalise, convert colour order and pad a batch.

    Args:
        mean (Sequence[float] | None): per-channel mean of the *output* channel
            order (RGB when ``bgr_to_rgb``); None disables normalisation.
        std (Sequence[float] | None): per-channel std, required with ``mean``.
        size (tuple[int, int] | None): training pad size (H, W).
        size_divisor (int | None): training: pad H, W up to a multiple of it.
        pad_val (float): image padding value, in the normalised space.
        seg_pad_val (int): label padding value.
        bgr_to_rgb (bool): reverse the channel order. Defaults to True here
            (mmseg defaults to False; every OffSeg config sets True).
        rgb_to_bgr (bool): the same flip, for RGB inputs.
        batch_augments (None): not supported.
        test_cfg (dict | None): ``size`` or ``size_divisor`` for test-time padding.

    Call: ``preprocessor(batch, training)`` -> ``(inputs, gt_seg, metas)`` with
    inputs float32 (B, 3, H', W'), gt_seg int32 (B, H', W') or None.
    """

    def __init__(self, mean=None, std=None, size=None, size_divisor=None, pad_val=0, seg_pad_val=255,
                 bgr_to_rgb=True, rgb_to_bgr=False, batch_augments=None, test_cfg=None):
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError('bgr_to_rgb and rgb_to_bgr cannot both be True')
        if (mean is None) != (std is None):
            raise ValueError('SegDataPreProcessor: give both mean and std, or neither')
        if batch_augments is not None:
            raise NotImplementedError('SegDataPreProcessor: batch_augments are not supported')
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.channel_conversion = bool(bgr_to_rgb or rgb_to_bgr)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = None if std is None else np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.test_cfg = test_cfg

    @staticmethod
    def _target_size(shape, size, size_divisor):
        """Padded (H, W) for a batch of ``shape`` (H, W)."""
        h, w = shape
        if size is not None:
            return max(h, size[0]), max(w, size[1])
        if size_divisor:
            return -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
        return h, w

    def __call__(self, batch, training=False):
        """Preprocess a loader batch; see the module doc."""
        images = _to_numpy(batch['inputs'])
        if images.ndim != 4:
            raise ValueError(f'SegDataPreProcessor: inputs must be (B, C, H, W), got {images.shape}')
        b, c, h, w = images.shape
        metas = [dict(m) for m in batch.get('metas') or [{} for _ in range(b)]]
        if len(metas) != b:
            raise ValueError(f'SegDataPreProcessor: {b} images but {len(metas)} metas')
        images = images.astype(np.float32)
        if self.channel_conversion and c == 3:
            images = images[:, ::-1]
        if self.mean is not None:
            images = (images - self.mean) / self.std
        if training:
            size, divisor = self.size, self.size_divisor
        else:
            cfg = self.test_cfg or {}
            size, divisor = cfg.get('size', None), cfg.get('size_divisor', None)
        out_h, out_w = self._target_size((h, w), size, divisor)
        inputs = np.full((b, c, out_h, out_w), self.pad_val, dtype=np.float32)
        shapes = [tuple(m.get('img_shape', (h, w)))[:2] for m in metas]
        for i, (ih, iw) in enumerate(shapes):
            inputs[i, :, :ih, :iw] = images[i, :, :ih, :iw]
        gt_seg = batch.get('gt_seg')
        if gt_seg is not None:
            gt_seg = _to_numpy(gt_seg)
            if training:
                padded = np.full((b, out_h, out_w), self.seg_pad_val, dtype=np.int32)
                for i, (ih, iw) in enumerate(shapes):
                    padded[i, :ih, :iw] = gt_seg[i, :ih, :iw]
                gt_seg = padded
            gt_seg = jt.array(gt_seg.astype(np.int32))
        for meta, (ih, iw) in zip(metas, shapes):
            padding = (0, out_w - iw, 0, out_h - ih)                    # left, right, top, bottom
            meta.update(img_shape=(ih, iw), pad_shape=(out_h, out_w), padding_size=padding)
            if not training:
                meta['img_padding_size'] = padding
        return jt.array(inputs), gt_seg, metas
