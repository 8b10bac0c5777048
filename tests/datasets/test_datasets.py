"""The datasets on tiny copies of their real folder layouts."""
import os.path as osp

import numpy as np
import pytest

from jseg.datasets import (ADE20KDataset, BaseSegDataset, CityscapesDataset, COCOStuffDataset,
                           DemoShapesDataset, PascalContextDataset59)
from jseg.registry import DATASETS

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]


def build(cls, root, **kwargs):
    return cls(data_root=root, pipeline=PIPELINE, **kwargs)


def test_ade20k(data_root):
    ds = build(ADE20KDataset, osp.join(data_root, 'ade', 'ADEChallengeData2016'),
               data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'))
    assert len(ds) == 3 and ds.num_classes == 150 and ds.reduce_zero_label
    classes = ds.metainfo['classes']
    assert classes[:3] == ('wall', 'building', 'sky') and classes[7] == 'bed ' and classes[-1] == 'flag'
    assert len(ds.metainfo['palette']) == 150 and ds.metainfo['palette'][0] == [120, 120, 120]
    info = ds.get_data_info(0)
    assert info['img_path'].endswith(osp.join('images', 'training', 'ADE_train_00000001.jpg'))
    assert info['seg_map_path'].endswith(osp.join('annotations', 'training', 'ADE_train_00000001.png'))
    sample = ds[0]
    assert sample['inputs'].shape == (3, 48, 64) and sample['gt_seg'].shape == (48, 64)
    assert set(np.unique(sample['gt_seg'])) <= {255, 0, 1, 4, 149}  # labels 0,1,2,5,150 reduced


def test_cityscapes_finds_images_in_city_folders(data_root):
    ds = build(CityscapesDataset, osp.join(data_root, 'cityscapes'),
               data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'))
    assert len(ds) == 4 and ds.num_classes == 19 and not ds.reduce_zero_label
    assert ds.metainfo['classes'][0] == 'road' and ds.metainfo['classes'][-1] == 'bicycle'
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert [osp.basename(osp.dirname(p)) for p in paths] == ['aachen', 'aachen', 'bochum', 'bochum']
    info = ds.get_data_info(2)
    assert info['seg_map_path'].endswith(osp.join('gtFine', 'train', 'bochum',
                                                  'bochum_000000_000019_gtFine_labelTrainIds.png'))
    assert set(np.unique(ds[2]['gt_seg'])) <= {0, 1, 10, 18, 255}


def test_coco_stuff_ignores_raw_maps(data_root):
    ds = build(COCOStuffDataset, osp.join(data_root, 'coco_stuff164k'),
               data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'))
    assert len(ds) == 3 and ds.num_classes == 171
    assert ds.metainfo['classes'][0] == 'person' and ds.metainfo['classes'][-1] == 'wood'
    assert ds.get_data_info(0)['seg_map_path'].endswith('000000000001_labelTrainIds.png')


def test_pascal_context_uses_split_file(data_root):
    ds = build(PascalContextDataset59, osp.join(data_root, 'VOCdevkit', 'VOC2010'),
               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
               ann_file='ImageSets/SegmentationContext/train.txt')
    assert len(ds) == 2 and ds.num_classes == 59 and ds.reduce_zero_label
    assert [osp.basename(ds.get_data_info(i)['img_path']) for i in range(2)] == ['2008_000002.jpg',
                                                                                 '2008_000007.jpg']
    assert ds.metainfo['classes'][0] == 'aeroplane' and len(ds.metainfo['palette']) == 59
    assert set(np.unique(ds[0]['gt_seg'])) <= {255, 0, 29, 58}


def test_registered_and_built_from_config(data_root):
    ds = DATASETS.build(dict(type='ADE20KDataset', data_root=osp.join(data_root, 'ade', 'ADEChallengeData2016'),
                             data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                             pipeline=PIPELINE))
    assert isinstance(ds, BaseSegDataset) and len(ds) == 3
    for name in ('BaseSegDataset', 'ADE20KDataset', 'CityscapesDataset', 'COCOStuffDataset',
                 'PascalContextDataset59', 'DemoShapesDataset'):
        assert name in DATASETS


def test_class_subset_remaps_labels(ade_root):
    ds = build(ADE20KDataset, ade_root, data_prefix=dict(img_path='images/training',
                                                         seg_map_path='annotations/training'),
               metainfo=dict(classes=('building', 'wall')))
    assert ds.label_map[0] == 1 and ds.label_map[1] == 0 and ds.label_map[2] == 255
    assert ds.num_classes == 2 and ds.metainfo['palette'] == [[180, 120, 120], [120, 120, 120]]
    assert set(np.unique(ds[0]['gt_seg'])) <= {0, 1, 255}
    with pytest.raises(ValueError, match='not classes'):
        build(ADE20KDataset, ade_root, data_prefix=dict(img_path='images/training'),
              metainfo=dict(classes=('unicorn',)))


def test_indices_and_lazy_init(ade_root):
    prefix = dict(img_path='images/training', seg_map_path='annotations/training')
    assert len(build(ADE20KDataset, ade_root, data_prefix=prefix, indices=2)) == 2
    ds = build(ADE20KDataset, ade_root, data_prefix=prefix, indices=[2, 0])
    assert [osp.basename(ds.get_data_info(i)['img_path']) for i in range(2)] == ['ADE_train_00000003.jpg',
                                                                                 'ADE_train_00000001.jpg']
    lazy = build(ADE20KDataset, ade_root, data_prefix=prefix, lazy_init=True)
    assert lazy.data_list == [] and len(lazy) == 3


def test_images_without_annotations(ade_root):
    ds = ADE20KDataset(data_root=ade_root, data_prefix=dict(img_path='images/training', seg_map_path=None),
                       pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')])
    assert 'seg_map_path' not in ds.get_data_info(0) and 'gt_seg' not in ds[0]


def test_demo_dataset_metainfo(demo_root):
    ds = DemoShapesDataset(data_root=demo_root, data_prefix=dict(img_path='images/validation',
                                                                 seg_map_path='annotations/validation'),
                           pipeline=PIPELINE)
    assert len(ds) == 4 and ds.num_classes == 7 and ds.reduce_zero_label
    assert len(ds.metainfo['palette']) == 7
