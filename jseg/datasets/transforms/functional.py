"""Array-level helpers with mmcv 2.x's exact size arithmetic.

Sizes follow cv2's order, ``(w, h)``; array shapes are ``(h, w[, c])``.
Images are resized with ``cv2.INTER_LINEAR`` and label maps with
``cv2.INTER_NEAREST``, as mmcv's ``imresize`` does with its cv2 backend.
"""
import numbers

import cv2
import numpy as np

__all__ = ['INTERPOLATIONS', 'get_rng', 'scale_size', 'rescale_size', 'imresize', 'imrescale',
           'imflip', 'impad']

INTERPOLATIONS = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


def get_rng(results):
    """The random state a transform draws from.

    The data loader puts a per-sample ``np.random.RandomState`` under
    ``results['rng']`` (seeded from the global seed, the epoch and the sample
    index); without one, transforms use NumPy's global random state as mmseg
    does, so ``np.random.seed`` makes them repeatable.
    """
    rng = results.get('rng')
    return rng if rng is not None else np.random.mtrand._rand


def scale_size(size, scale):
    """Multiply a ``(w, h)`` size by ``scale`` (a number or ``(sx, sy)``), rounding half up."""
    if isinstance(scale, numbers.Number):
        scale = (scale, scale)
    w, h = size
    return int(w * float(scale[0]) + 0.5), int(h * float(scale[1]) + 0.5)


def rescale_size(old_size, scale, return_scale=False):
    """The size an image of ``old_size`` ``(w, h)`` takes under ``scale``, keeping its ratio.

    Args:
        old_size (tuple[int, int]): ``(w, h)``.
        scale (float | int | tuple[int, int]): a factor, or a pair of edge
            limits in either order: the result is as large as possible with
            its long edge at most ``max(scale)`` and its short edge at most
            ``min(scale)``.
        return_scale (bool): also return the factor used.

    Returns:
        tuple[int, int] | (tuple[int, int], float): the new ``(w, h)``
        (and the factor).
    """
    w, h = old_size
    if isinstance(scale, numbers.Number):
        if scale <= 0:
            raise ValueError(f'invalid scale {scale}: must be positive')
        factor = scale
    elif isinstance(scale, (tuple, list)) and len(scale) == 2:
        long_edge, short_edge = max(scale), min(scale)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
    else:
        raise TypeError(f'scale must be a number or a pair of ints, got {scale!r}')
    new_size = scale_size((w, h), factor)
    return (new_size, factor) if return_scale else new_size


def imresize(img, size, interpolation='bilinear'):
    """Resize ``img`` (H, W[, C]) to ``size`` = ``(w, h)`` with cv2."""
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f'cannot resize an image of shape {img.shape[:2]} to (w, h)=({w}, {h})')
    return cv2.resize(img, (w, h), interpolation=INTERPOLATIONS[interpolation])


def imrescale(img, scale, interpolation='bilinear'):
    """Resize ``img`` keeping its aspect ratio (see :func:`rescale_size`).

    Returns:
        (np.ndarray, float): the resized image and the factor used.
    """
    h, w = img.shape[:2]
    new_size, factor = rescale_size((w, h), scale, return_scale=True)
    return imresize(img, new_size, interpolation), factor


_FLIP_CODES = {'horizontal': 1, 'vertical': 0, 'diagonal': -1}


def imflip(img, direction='horizontal'):
    """Flip ``img`` (H, W[, C]) ``'horizontal'``-ly, ``'vertical'``-ly or both (``'diagonal'``).

    Returns a new C-contiguous array.
    """
    if direction not in _FLIP_CODES:
        raise ValueError(f"flip direction must be one of {sorted(_FLIP_CODES)}, got {direction!r}")
    if img.ndim == 3 and img.shape[2] > 4:  # cv2.flip handles at most 4 channels well
        axes = {'horizontal': 1, 'vertical': 0, 'diagonal': (0, 1)}[direction]
        return np.ascontiguousarray(np.flip(img, axis=axes))
    return cv2.flip(img, _FLIP_CODES[direction])


def impad(img, shape, pad_val=0):
    """Pad ``img`` (H, W[, C]) at the bottom and right to at least ``shape`` = ``(h, w)``.

    ``pad_val`` is a number, or one number per channel.
    """
    h, w = img.shape[:2]
    out_h, out_w = max(int(shape[0]), h), max(int(shape[1]), w)
    if (out_h, out_w) == (h, w):
        return img
    out = np.empty((out_h, out_w) + img.shape[2:], dtype=img.dtype)
    out[...] = np.asarray(pad_val, dtype=img.dtype)
    out[:h, :w] = img
    return out
