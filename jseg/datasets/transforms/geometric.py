"""Geometric transforms: resize, random resize, crop, flip, pad (mmcv 2.x / mmseg 1.x semantics).

Images are resized bilinearly, label maps (every key in ``results['seg_fields']``)
with nearest neighbour. Random draws come from :func:`~.functional.get_rng`.
"""
import numbers

import numpy as np

from jseg.registry import TRANSFORMS

from .functional import get_rng, imflip, impad, imrescale, imresize, scale_size

__all__ = ['Resize', 'RandomResize', 'RandomChoiceResize', 'ResizeShortestEdge', 'RandomCrop', 'RandomFlip', 'Pad',
           'ResizeToMultiple']


def _seg_keys(results):
    return [key for key in results.get('seg_fields', []) if results.get(key) is not None]


@TRANSFORMS.register_module()
class Resize:
    """Resize the image and its label maps to ``scale`` or by ``scale_factor``.

    * ``scale=(a, b)``, ``keep_ratio=True``: the image is scaled by
      ``min(max(a, b) / long_edge, min(a, b) / short_edge)``, i.e. as large as
      possible while its long edge fits ``max(a, b)`` and its short edge fits
      ``min(a, b)``; each side becomes ``int(side * factor + 0.5)``.
    * ``scale=(w, h)``, ``keep_ratio=False``: exactly ``w`` x ``h``.
    * ``scale_factor=r`` (used when ``scale`` is None): the target is
      ``(int(w * r + 0.5), int(h * r + 0.5))``, then the rule above applies.

    Sets ``img_shape`` (h, w), ``scale`` (the target, (w, h)),
    ``scale_factor`` (new_w / w, new_h / h) and ``keep_ratio``.

    Args:
        scale (int | tuple[int, int] | None): target ``(w, h)`` or edge limits.
        scale_factor (float | tuple[float, float] | None): ratio(s) ``(w, h)``.
        keep_ratio (bool): keep the aspect ratio.
        interpolation (str): for the image; label maps always use nearest.
        clip_object_border, backend: accepted for config compatibility
            (only the cv2 backend exists).
    """

    def __init__(self, scale=None, scale_factor=None, keep_ratio=False, clip_object_border=True,
                 backend='cv2', interpolation='bilinear'):
        if scale is None and scale_factor is None:
            raise ValueError('Resize needs scale or scale_factor')
        if backend != 'cv2':
            raise ValueError(f"Resize supports backend='cv2' only, got {backend!r}")
        self.scale = (scale, scale) if isinstance(scale, int) else (tuple(scale) if scale is not None else None)
        if scale_factor is None:
            self.scale_factor = None
        elif isinstance(scale_factor, numbers.Number):
            self.scale_factor = (float(scale_factor), float(scale_factor))
        elif isinstance(scale_factor, (tuple, list)) and len(scale_factor) == 2:
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            raise TypeError(f'scale_factor must be a number or a pair, got {scale_factor!r}')
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation
        self.clip_object_border = clip_object_border
        self.backend = backend

    def _target(self, results):
        if self.scale:
            return self.scale
        h, w = results['img'].shape[:2]
        return scale_size((w, h), self.scale_factor)

    def _resize(self, array, target, interpolation):
        if self.keep_ratio:
            return imrescale(array, target, interpolation)[0]
        return imresize(array, target, interpolation)

    def __call__(self, results):
        target = self._target(results)
        results['scale'] = tuple(target)
        img = results['img']
        h, w = img.shape[:2]
        resized = self._resize(img, target, self.interpolation)
        new_h, new_w = resized.shape[:2]
        results['img'] = resized
        results['img_shape'] = (new_h, new_w)
        # the factor actually applied, from the rounded size (as mmcv records it)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = self.keep_ratio
        for key in _seg_keys(results):
            results[key] = self._resize(results[key], target, 'nearest')
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(scale={self.scale}, scale_factor={self.scale_factor}, '
                f'keep_ratio={self.keep_ratio}, interpolation={self.interpolation})')


@TRANSFORMS.register_module()
class RandomResize:
    """Resize to a randomly drawn scale, then behave as :class:`Resize`.

    * ``scale=(w, h)`` with ``ratio_range=(lo, hi)``: draw ``r ~ U[lo, hi)``
      and use ``(int(w * r), int(h * r))`` (truncated, as mmcv does).
    * ``scale=[(w0, h0), (w1, h1)]``: draw each edge uniformly among the
      integers between the two bounds.

    Args:
        scale (tuple | list[tuple]): base scale or scale range.
        ratio_range (tuple[float, float] | None): ratio range for a single scale.
        resize_type (str): registered resize transform to apply (``'Resize'``).
        **resize_kwargs: its arguments, e.g. ``keep_ratio=True``.
    """

    def __init__(self, scale, ratio_range=None, resize_type='Resize', **resize_kwargs):
        self.scale = scale
        self.ratio_range = ratio_range
        self.resize_cfg = dict(type=resize_type, **resize_kwargs)
        self.resize = TRANSFORMS.build(dict(self.resize_cfg, scale=0))
        if _is_int_pair(scale):
            if ratio_range is None or len(ratio_range) != 2 or ratio_range[0] > ratio_range[1]:
                raise ValueError(f'RandomResize with a single scale needs ratio_range=(lo, hi), got {ratio_range!r}')
        elif not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(_is_int_pair(s) for s in scale)):
            raise ValueError(f'RandomResize scale must be (w, h) or [(w0, h0), (w1, h1)], got {scale!r}')

    def _random_scale(self, rng):
        if _is_int_pair(self.scale):
            lo, hi = self.ratio_range
            ratio = rng.random_sample() * (hi - lo) + lo
            return int(self.scale[0] * ratio), int(self.scale[1] * ratio)
        (w0, h0), (w1, h1) = self.scale
        edge_w = rng.randint(min(w0, w1), max(w0, w1) + 1)
        edge_h = rng.randint(min(h0, h1), max(h0, h1) + 1)
        return int(edge_w), int(edge_h)

    def __call__(self, results):
        scale = self._random_scale(get_rng(results))
        self.resize.scale = scale
        return self.resize(results)

    def __repr__(self):
        return (f'{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range}, '
                f'resize_cfg={self.resize_cfg})')


def _is_int_pair(value):
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) for v in value))


@TRANSFORMS.register_module()
class ResizeShortestEdge:
    """Resize so that the short edge is ``scale``, unless the long edge would pass ``max_size`` (mmseg).

    The target is computed in floats (``size / short edge``, then capped by
    ``max_size / long edge``) and rounded half up to ``(new_w, new_h)``; the
    image is then resized as ``Resize(scale=(new_w, new_h), keep_ratio=True)``,
    which recomputes the factor as ``min(max(new) / long, min(new) / short)``
    and rounds each side again, so a side can end one pixel off the first
    rounding (e.g. 30x100 with scale 102, max_size 204: target (204, 61),
    result 61x203).

    Args:
        scale (int | tuple[int, ...]): short-edge length (a tuple: its minimum).
        max_size (int): the longest allowed edge.
        interpolation (str): for the image; label maps use nearest.
    """

    def __init__(self, scale, max_size, interpolation='bilinear'):
        self.scale = scale
        self.max_size = max_size
        self._short_edge()
        if not isinstance(max_size, numbers.Number) or max_size <= 0:
            raise ValueError(f'ResizeShortestEdge: max_size must be a positive number, got {max_size!r}')
        self.resize = Resize(scale=(1, 1), keep_ratio=True, interpolation=interpolation)

    def _short_edge(self):
        scale = min(self.scale) if isinstance(self.scale, (tuple, list)) and self.scale else self.scale
        if not isinstance(scale, numbers.Number) or scale <= 0:
            raise ValueError(f'ResizeShortestEdge: scale must be a positive int or a tuple of them, got {self.scale!r}')
        return float(scale)

    def target_size(self, h, w):
        """The ``(new_w, new_h)`` handed to the keep-ratio resize for an ``h`` x ``w`` image."""
        size = self._short_edge()
        factor = size / min(h, w)
        new_h, new_w = (size, factor * w) if h < w else (factor * h, size)
        if max(new_h, new_w) > self.max_size:
            cap = self.max_size * 1.0 / max(new_h, new_w)
            new_h, new_w = new_h * cap, new_w * cap
        return int(new_w + 0.5), int(new_h + 0.5)

    def __call__(self, results):
        h, w = results['img'].shape[:2]
        self.resize.scale = self.target_size(h, w)
        return self.resize(results)

    def __repr__(self):
        return f'{type(self).__name__}(scale={self.scale}, max_size={self.max_size})'


@TRANSFORMS.register_module()
class RandomChoiceResize:
    """Resize with a scale drawn uniformly from ``scales`` (mmcv's RandomChoiceResize).

    The scale is handed to the ``resize_type`` transform as its ``scale``:
    a short-edge length for ``'ResizeShortestEdge'`` (Mask2Former:
    ``scales=[256, 307, ..., 1024], resize_type='ResizeShortestEdge',
    max_size=2048``), a ``(w, h)`` pair for ``'Resize'`` (an int ``s`` means
    ``(s, s)`` there, as ``Resize(scale=s)`` does). Adds ``scale_idx``, the
    index drawn.

    Args:
        scales (list[int | tuple] | int | tuple): the candidates.
        resize_type (str): registered resize transform (``'Resize'``).
        **resize_kwargs: its other arguments, e.g. ``keep_ratio=True`` or
            ``max_size=2048``.
    """

    def __init__(self, scales, resize_type='Resize', **resize_kwargs):
        self.scales = list(scales) if isinstance(scales, list) else [scales]
        if not self.scales or not all(isinstance(s, (tuple, numbers.Integral)) for s in self.scales):
            raise ValueError(f'RandomChoiceResize: scales must be a non-empty list of ints or tuples, got {scales!r}')
        self.resize_cfg = dict(type=resize_type, **resize_kwargs)
        self.resize = TRANSFORMS.build(dict(self.resize_cfg, scale=self.scales[0]))

    def __call__(self, results):
        scale_idx = int(get_rng(results).randint(len(self.scales)))
        scale = self.scales[scale_idx]
        if isinstance(self.resize, Resize) and isinstance(scale, numbers.Integral):
            scale = (scale, scale)
        self.resize.scale = scale
        results = self.resize(results)
        results['scale_idx'] = scale_idx
        return results

    def __repr__(self):
        return f'{type(self).__name__}(scales={self.scales}, resize_cfg={self.resize_cfg})'


@TRANSFORMS.register_module()
class RandomCrop:
    """Crop a random ``crop_size`` window from the image and its label maps.

    When ``cat_max_ratio < 1``, a window is redrawn (up to 10 times) while a
    single class covers ``cat_max_ratio`` or more of its labelled pixels
    (pixels equal to ``ignore_index`` are not counted), or while it holds
    fewer than two classes; after 10 failed draws the 11th window is kept, as
    in mmseg. An image smaller than the crop gives a smaller crop (the loader
    pads the batch).

    Args:
        crop_size (int | tuple[int, int]): ``(h, w)`` of the window.
        cat_max_ratio (float): largest share a single class may take.
        ignore_index (int): label not counted in the share.
    """

    def __init__(self, crop_size, cat_max_ratio=1., ignore_index=255):
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        if not (isinstance(crop_size, (tuple, list)) and len(crop_size) == 2 and min(crop_size) > 0):
            raise ValueError(f'crop_size must be a positive int or (h, w), got {crop_size!r}')
        self.crop_size = tuple(int(s) for s in crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _random_bbox(self, shape, rng):
        margin_h = max(shape[0] - self.crop_size[0], 0)
        margin_w = max(shape[1] - self.crop_size[1], 0)
        y1 = int(rng.randint(0, margin_h + 1))
        x1 = int(rng.randint(0, margin_w + 1))
        return y1, y1 + self.crop_size[0], x1, x1 + self.crop_size[1]

    def _acceptable(self, seg, bbox):
        y1, y2, x1, x2 = bbox
        counts = np.bincount(seg[y1:y2, x1:x2].ravel(), minlength=self.ignore_index + 1)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def crop_bbox(self, results):
        """Draw the window ``(y1, y2, x1, x2)`` for ``results``."""
        rng = get_rng(results)
        shape = results['img'].shape[:2]
        bbox = self._random_bbox(shape, rng)
        if self.cat_max_ratio < 1. and results.get('gt_seg_map') is not None:
            for _ in range(10):
                if self._acceptable(results['gt_seg_map'], bbox):
                    break
                bbox = self._random_bbox(shape, rng)
        return bbox

    def __call__(self, results):
        y1, y2, x1, x2 = self.crop_bbox(results)
        results['img'] = results['img'][y1:y2, x1:x2, ...]
        results['img_shape'] = results['img'].shape[:2]
        for key in _seg_keys(results):
            results[key] = results[key][y1:y2, x1:x2, ...]
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio}, '
                f'ignore_index={self.ignore_index})')


_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')


@TRANSFORMS.register_module()
class RandomFlip:
    """Flip the image and its label maps together.

    * ``prob`` a float, ``direction`` a string: flip that way with ``prob``.
    * ``prob`` a float, ``direction`` a list: each direction with
      ``prob / len(direction)``.
    * ``prob`` and ``direction`` lists of equal length: direction i with ``prob[i]``.

    Sets ``flip`` (bool) and ``flip_direction`` (str, or None without flip).

    Args:
        prob (float | list[float]): flip probability (or one per direction).
        direction (str | list[str]): ``'horizontal'``, ``'vertical'`` or ``'diagonal'``.
        swap_seg_labels (list[tuple[int, int]] | None): label pairs to swap
            in flipped label maps (e.g. left/right arm).
    """

    def __init__(self, prob=None, direction='horizontal', swap_seg_labels=None):
        directions = [direction] if isinstance(direction, str) else list(direction)
        if not directions or any(d not in _DIRECTIONS for d in directions):
            raise ValueError(f'flip direction must be in {_DIRECTIONS} (or a list of them), got {direction!r}')
        if isinstance(prob, (list, tuple)):
            if len(prob) != len(directions) or not 0 <= sum(prob) <= 1:
                raise ValueError(f'prob {prob!r} must give one probability per direction, summing to <= 1')
            probs = [float(p) for p in prob]
        elif isinstance(prob, numbers.Real) and 0 <= prob <= 1:
            probs = [float(prob) / len(directions)] * len(directions)
        else:
            raise ValueError(f'prob must be a float in [0, 1] or a list of floats, got {prob!r}')
        self.prob = prob
        self.direction = direction
        self.swap_seg_labels = swap_seg_labels
        self._choices = directions + [None]
        self._probs = np.array(probs + [max(0.0, 1.0 - sum(probs))])

    def _choose(self, rng):
        if self._probs[-1] >= 1.0:  # never flips: draw nothing
            return None
        if self._probs[-1] <= 0.0 and len(self._choices) == 2:  # always flips one way
            return self._choices[0]
        return self._choices[int(rng.choice(len(self._choices), p=self._probs / self._probs.sum()))]

    def _flip_seg(self, seg, direction):
        seg = imflip(seg, direction)
        if self.swap_seg_labels:
            original = seg.copy()
            for a, b in self.swap_seg_labels:
                seg[original == a] = b
                seg[original == b] = a
        return seg

    def __call__(self, results):
        direction = self._choose(get_rng(results))
        results['flip'] = direction is not None
        results['flip_direction'] = direction
        if direction is not None:
            results['img'] = imflip(results['img'], direction)
            for key in _seg_keys(results):
                results[key] = self._flip_seg(results[key], direction)
            if self.swap_seg_labels is not None:
                results['swap_seg_labels'] = self.swap_seg_labels
        return results

    def __repr__(self):
        return f'{type(self).__name__}(prob={self.prob}, direction={self.direction})'


@TRANSFORMS.register_module()
class Pad:
    """Pad the image and its label maps at the bottom and right (mmcv 2.x ``Pad``).

    Exactly one of ``size`` (target ``(w, h)``) and ``size_divisor`` (pad each
    side up to a multiple) is given, or ``pad_to_square`` (optionally with
    ``size_divisor``). As mmcv does, sets ``pad_shape`` to the padded image's full
    shape (``(h, w, 3)`` for a colour image) and ``img_shape`` to its ``(h, w)``;
    also ``pad_fixed_size`` and ``pad_size_divisor``.

    Args:
        size (tuple[int, int] | None): ``(w, h)``.
        size_divisor (int | None): divisor of the padded sides.
        pad_to_square (bool): pad to a square of the long side first.
        pad_val (int | dict): ``dict(img=0, seg=255)`` by default; an int sets
            the image value (label maps keep 255).
        padding_mode (str): only ``'constant'`` is supported.
    """

    def __init__(self, size=None, size_divisor=None, pad_to_square=False, pad_val=None,
                 padding_mode='constant'):
        if pad_val is None:
            pad_val = dict(img=0, seg=255)
        elif isinstance(pad_val, numbers.Number):
            pad_val = dict(img=pad_val, seg=255)
        if pad_to_square:
            if size is not None:
                raise ValueError('Pad: size must be None with pad_to_square=True')
        elif (size is None) == (size_divisor is None):
            raise ValueError('Pad needs exactly one of size and size_divisor')
        if padding_mode != 'constant':
            raise ValueError(f"Pad supports padding_mode='constant' only, got {padding_mode!r}")
        self.size = None if size is None else (size, size) if isinstance(size, int) else tuple(size)
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        self.pad_val = dict(pad_val)
        self.padding_mode = padding_mode

    def _target_shape(self, img_shape):
        shape = None
        if self.pad_to_square:
            side = max(img_shape[:2])
            shape = (side, side)
        if self.size_divisor is not None:
            h, w = shape if shape is not None else img_shape[:2]
            d = self.size_divisor
            return (-(-h // d) * d, -(-w // d) * d)
        if self.size is not None:
            return (self.size[1], self.size[0])
        return shape

    def __call__(self, results):
        shape = self._target_shape(results['img'].shape)
        results['img'] = impad(results['img'], shape, self.pad_val.get('img', 0))
        padded = results['img'].shape[:2]
        for key in _seg_keys(results):
            results[key] = impad(results[key], padded, self.pad_val.get('seg', 255))
        results['pad_shape'] = results['img'].shape  # the full shape, (h, w, 3) for colour, as mmcv
        results['img_shape'] = padded
        results['pad_fixed_size'] = self.size
        results['pad_size_divisor'] = self.size_divisor
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor}, '
                f'pad_to_square={self.pad_to_square}, pad_val={self.pad_val}, '
                f'padding_mode={self.padding_mode})')


@TRANSFORMS.register_module()
class ResizeToMultiple:
    """Resize the image and label maps so that both sides are multiples of ``size_divisor``.

    Each side is rounded up: ``ceil(side / size_divisor) * size_divisor``.
    Sets ``img_shape`` and ``pad_shape`` to the new ``(h, w)``.

    Args:
        size_divisor (int): the divisor.
        interpolation (str | None): for the image (default bilinear).
    """

    def __init__(self, size_divisor=32, interpolation=None):
        self.size_divisor = size_divisor
        self.interpolation = interpolation

    def _target(self, shape):
        d = self.size_divisor
        h, w = shape[:2]
        return (-(-w // d) * d, -(-h // d) * d)

    def __call__(self, results):
        target = self._target(results['img'].shape)
        results['img'] = imresize(results['img'], target, self.interpolation or 'bilinear')
        results['img_shape'] = results['img'].shape[:2]
        results['pad_shape'] = results['img'].shape[:2]
        for key in _seg_keys(results):
            results[key] = imresize(results[key], self._target(results[key].shape), 'nearest')
        return results

    def __repr__(self):
        return f'{type(self).__name__}(size_divisor={self.size_divisor}, interpolation={self.interpolation})'
