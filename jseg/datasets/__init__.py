"""Datasets, transforms and loading.

* datasets (registered in ``DATASETS``): :class:`BaseSegDataset`,
  :class:`ADE20KDataset`, :class:`CityscapesDataset`, :class:`COCOStuffDataset`,
  :class:`PascalContextDataset59`, :class:`DemoShapesDataset`;
* transforms (registered in ``TRANSFORMS``): see :mod:`jseg.datasets.transforms`;
* :func:`build_dataloader`: batches with Jittor workers, reproducible and resumable;
* :class:`DataError`: the error for unusable data, naming the file.

Importing this package does not import Jittor; building a loader does.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .ade import ADE20KDataset
from .base import BaseSegDataset
from .cityscapes import CityscapesDataset
from .coco_stuff import COCOStuffDataset
from .collate import collate_samples
from .demo import DemoShapesDataset, generate_demo_dataset
from .errors import DataError
from .loader import SegDataLoader, build_dataloader, sample_rng
from .pascal_context import PascalContextDataset59

__all__ = ['ADE20KDataset', 'BaseSegDataset', 'COCOStuffDataset', 'CityscapesDataset', 'DataError',
           'DemoShapesDataset', 'PascalContextDataset59', 'SegDataLoader', 'build_dataloader',
           'collate_samples', 'generate_demo_dataset', 'sample_rng']
