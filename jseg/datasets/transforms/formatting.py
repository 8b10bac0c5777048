"""The last step of every pipeline: the results dict becomes a sample for the loader."""
import numbers

import numpy as np

from jseg.registry import TRANSFORMS

__all__ = ['PackSegInputs', 'to_python']

DEFAULT_META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                     'flip', 'flip_direction', 'reduce_zero_label')


def to_python(value):
    """``value`` with NumPy scalars and arrays turned into Python numbers and tuples.

    Lists become tuples; dicts are converted value by value. Collation and
    Jittor's worker buffers only carry plain Python types.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return to_python(value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(to_python(v) for v in value)
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


@TRANSFORMS.register_module()
class PackSegInputs:
    """Turn a results dict into ``{'inputs', 'gt_seg', 'meta'}``.

    * ``inputs``: the image as a C-contiguous (C, H, W) array (uint8 BGR
      unless a ``Normalize`` ran);
    * ``gt_seg``: the (H, W) uint8 label map, present only if one was loaded;
    * ``meta``: a dict of plain Python values for ``meta_keys``. Keys the
      pipeline did not set get defaults: ``pad_shape`` = ``img_shape``,
      ``scale_factor`` = (1.0, 1.0), ``flip`` = False, ``flip_direction`` /
      ``seg_map_path`` = None, ``reduce_zero_label`` = False. Shapes are
      ``(h, w)`` tuples, ``scale_factor`` is ``(w_scale, h_scale)``.

    Args:
        meta_keys (tuple[str]): results keys copied into ``meta``.
    """

    def __init__(self, meta_keys=DEFAULT_META_KEYS):
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results):
        sample = {}
        img = results['img']
        if img.ndim < 3:
            img = img[..., None]
        sample['inputs'] = np.ascontiguousarray(img.transpose(2, 0, 1))
        if results.get('gt_seg_map') is not None:
            seg = results['gt_seg_map']
            if seg.ndim != 2:
                raise ValueError(f'gt_seg_map must be (H, W), got shape {seg.shape}')
            sample['gt_seg'] = np.ascontiguousarray(seg, dtype=np.uint8)
        img_shape = tuple(results.get('img_shape', img.shape[:2]))[:2]
        defaults = {'img_shape': img_shape, 'ori_shape': img_shape, 'pad_shape': img_shape,
                    'scale_factor': (1.0, 1.0), 'flip': False, 'flip_direction': None,
                    'img_path': None, 'seg_map_path': None, 'reduce_zero_label': False}
        meta = {}
        for key in self.meta_keys:
            value = results.get(key, defaults.get(key))
            if key.endswith('_shape') and value is not None:
                value = tuple(value)[:2]
            if key == 'scale_factor' and value is not None:
                value = tuple(float(v) for v in value)
            meta[key] = to_python(value)
        sample['meta'] = meta
        return sample

    def __repr__(self):
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
