"""Data transforms with mmseg 1.x names, arguments and numerics, registered in ``TRANSFORMS``.

Each transform is a callable ``results -> results`` on mmseg 1.x's results
dict (``img`` (H, W, 3) uint8 BGR, ``gt_seg_map`` (H, W) uint8,
``seg_fields``, ``img_shape``, ``ori_shape``, ``scale_factor``, ``flip``, ...).
Random transforms draw from ``results['rng']`` when present (see
:func:`~jseg.datasets.transforms.functional.get_rng`).
"""
from .compose import Compose
from .formatting import PackSegInputs, to_python
from .geometric import (Pad, RandomChoiceResize, RandomCrop, RandomFlip, RandomResize, Resize, ResizeShortestEdge,
                        ResizeToMultiple)
from .loading import LoadAnnotations, LoadImageFromFile
from .photometric import Normalize, PhotoMetricDistortion
from .test_time_aug import TestTimeAug

__all__ = ['Compose', 'LoadAnnotations', 'LoadImageFromFile', 'Normalize', 'PackSegInputs', 'Pad',
           'PhotoMetricDistortion', 'RandomChoiceResize', 'RandomCrop', 'RandomFlip', 'RandomResize', 'Resize',
           'ResizeShortestEdge', 'ResizeToMultiple', 'TestTimeAug', 'to_python']
