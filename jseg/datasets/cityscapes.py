"""Cityscapes (fine annotations): 19 train classes."""
from jseg.registry import DATASETS

from .base import BaseSegDataset

__all__ = ['CityscapesDataset']


@DATASETS.register_module()
class CityscapesDataset(BaseSegDataset):
    """Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``.

    The train-id maps (0..18, 255 ignored) are made from the official
    ``*_gtFine_labelIds.png`` by ``tools/convert_datasets/cityscapes.py``.
    """

    METAINFO = dict(
        classes=(
            'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
            'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
            'motorcycle', 'bicycle'
        ),
        palette=[
            [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153,
            153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220,
            20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230],
            [119, 11, 32]
        ])
    LABEL_HINT = ('Cityscapes label maps must hold train ids (0..18, 255): make the '
                  '*_gtFine_labelTrainIds.png files with tools/convert_datasets/cityscapes.py')

    def __init__(self, img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelTrainIds.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
