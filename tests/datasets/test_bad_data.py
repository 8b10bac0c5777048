"""Every kind of bad data gives one DataError that names the file and the problem."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest

from data_helpers import make_ade, make_cityscapes, random_label, write_image, write_label
from jseg.datasets import ADE20KDataset, CityscapesDataset, DataError, PascalContextDataset59, build_dataloader

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
PREFIX = dict(img_path='images/training', seg_map_path='annotations/training')


@pytest.fixture
def ade(tmp_path):
    """A private ADE20K copy the test may damage."""
    return make_ade(str(tmp_path))


def image_path(root, i=1):
    return osp.join(root, 'images', 'training', f'ADE_train_{i:08d}.jpg')


def label_path(root, i=1):
    return osp.join(root, 'annotations', 'training', f'ADE_train_{i:08d}.png')


def ade_dataset(root, **kwargs):
    return ADE20KDataset(data_root=root, data_prefix=PREFIX, pipeline=PIPELINE, **kwargs)


# ------------------------------------------------------------------ found at construction

def test_missing_data_root_says_where_it_looked(tmp_path):
    missing = str(tmp_path / 'datasets' / 'ade' / 'ADEChallengeData2016')
    with pytest.raises(DataError) as info:
        ade_dataset(missing)
    message = str(info.value)
    assert osp.abspath(missing) in message and 'datasets/README.md' in message and 'not found' in message


def test_missing_image_folder(ade):
    with pytest.raises(DataError, match='image folder not found'):
        ADE20KDataset(data_root=ade, data_prefix=dict(img_path='images/train', seg_map_path='annotations/training'))


def test_missing_annotation_names_the_image(ade):
    os.remove(label_path(ade, 2))
    with pytest.raises(DataError) as info:
        ade_dataset(ade)
    assert image_path(ade, 2) in str(info.value) and 'no annotation' in str(info.value)
    assert label_path(ade, 2) in str(info.value)


def test_empty_folder(tmp_path):
    root = tmp_path / 'ade'
    (root / 'images' / 'training').mkdir(parents=True)
    (root / 'annotations' / 'training').mkdir(parents=True)
    with pytest.raises(DataError) as info:
        ade_dataset(str(root))
    assert str(root / 'images' / 'training') in str(info.value) and "'.jpg'" in str(info.value)


def test_empty_split_file(tmp_path):
    root = tmp_path / 'VOC2010'
    write_image(str(root / 'JPEGImages' / 'a.jpg'), 8, 8)
    (root / 'SegmentationClassContext').mkdir()
    split = root / 'train.txt'
    split.write_text('\n')
    with pytest.raises(DataError) as info:
        PascalContextDataset59(data_root=str(root), ann_file='train.txt',
                               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'))
    assert str(split) in str(info.value) and 'lists no images' in str(info.value)


def test_split_file_naming_a_missing_image(tmp_path):
    root = tmp_path / 'VOC2010'
    write_image(str(root / 'JPEGImages' / 'a.jpg'), 8, 8)
    write_label(str(root / 'SegmentationClassContext' / 'a.png'), np.zeros((8, 8)))
    (root / 'train.txt').write_text('a\nb\n')
    with pytest.raises(DataError) as info:
        PascalContextDataset59(data_root=str(root), ann_file='train.txt',
                               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'))
    assert str(root / 'JPEGImages' / 'b.jpg') in str(info.value)


def test_missing_split_file(tmp_path):
    root = tmp_path / 'VOC2010'
    write_image(str(root / 'JPEGImages' / 'a.jpg'), 8, 8)
    (root / 'SegmentationClassContext').mkdir()
    with pytest.raises(DataError, match='split file'):
        PascalContextDataset59(data_root=str(root), ann_file='nope.txt',
                               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'))


# ------------------------------------------------------------------------ found at load time

def test_unreadable_image(ade):
    with open(image_path(ade, 1), 'wb') as f:
        f.write(b'this is not a jpeg')
    ds = ade_dataset(ade)
    with pytest.raises(DataError) as info:
        ds[0]
    assert image_path(ade, 1) in str(info.value) and 'cannot decode image' in str(info.value)


def test_truncated_image(ade):
    data = open(image_path(ade, 2), 'rb').read()
    with open(image_path(ade, 2), 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(DataError, match='truncated') as info:
        ade_dataset(ade)[1]
    assert image_path(ade, 2) in str(info.value)


def test_empty_image_file(ade):
    open(image_path(ade, 1), 'wb').close()
    with pytest.raises(DataError, match='empty'):
        ade_dataset(ade)[0]


def test_truncated_annotation(ade):
    data = open(label_path(ade, 1), 'rb').read()
    with open(label_path(ade, 1), 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(DataError) as info:
        ade_dataset(ade)[0]
    assert label_path(ade, 1) in str(info.value)


def test_annotation_size_differs_from_image(ade):
    write_label(label_path(ade, 1), np.ones((47, 64)))  # the image is 48 x 64
    with pytest.raises(DataError) as info:
        ade_dataset(ade)[0]
    message = str(info.value)
    assert label_path(ade, 1) in message and '64x47' in message and '64x48' in message


def test_annotation_checked_at_original_size_when_loaded_after_resize(ade):
    ds = ADE20KDataset(data_root=ade, data_prefix=PREFIX, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(100, 20), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')])
    sample = ds[0]
    assert sample['inputs'].shape[1:] != sample['gt_seg'].shape == (48, 64)


def test_label_values_out_of_range_after_reduce_zero_label(ade):
    write_label(label_path(ade, 3), random_label(40, 40, [0, 1, 151, 200]))  # 151 -> 150 and 200 -> 199
    with pytest.raises(DataError) as info:
        ade_dataset(ade)[2]
    message = str(info.value)
    assert label_path(ade, 3) in message and '150, 199' in message and '[0, 150)' in message


def test_cityscapes_label_ids_instead_of_train_ids_points_to_the_converter(tmp_path):
    root = make_cityscapes(str(tmp_path))
    bad = osp.join(root, 'gtFine', 'val', 'frankfurt', 'frankfurt_000000_000019_gtFine_labelTrainIds.png')
    write_label(bad, random_label(48, 64, [7, 26, 33]))
    ds = CityscapesDataset(data_root=root, data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
                           pipeline=PIPELINE)
    with pytest.raises(DataError) as info:
        ds[0]
    assert bad in str(info.value) and 'tools/convert_datasets/cityscapes.py' in str(info.value)


def test_colour_annotation(ade):
    write_image(label_path(ade, 1), 48, 64)  # an RGB png where ids belong
    with pytest.raises(DataError, match='colour image'):
        ade_dataset(ade)[0]


# --------------------------------------------------------------------- through the loader

@pytest.mark.parametrize('num_workers', [0, 2])
def test_bad_file_in_a_worker_raises_data_error_in_the_main_process(ade, num_workers):
    with open(image_path(ade, 2), 'wb') as f:
        f.write(b'garbage')
    loader = build_dataloader(ade_dataset(ade), batch_size=1, num_workers=num_workers)
    with pytest.raises(DataError) as info:
        list(loader)
    assert image_path(ade, 2) in str(info.value) and 'cannot decode image' in str(info.value)
    loader.close()


def test_bug_in_a_transform_is_reported_with_file_and_traceback(ade):
    def broken(results):
        raise TypeError('broken transform')

    ds = ADE20KDataset(data_root=ade, data_prefix=PREFIX, pipeline=[dict(type='LoadImageFromFile'), broken])
    loader = build_dataloader(ds, batch_size=2, num_workers=2)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    message = str(info.value)
    assert 'TypeError: broken transform' in message and 'ADE_train_0000000' in message and 'traceback' in message
    loader.close()


@pytest.mark.parametrize('num_workers', [0, 2])
def test_skip_bad_samples_counts_and_warns(ade, num_workers):
    with open(image_path(ade, 2), 'wb') as f:
        f.write(b'garbage')
    ds = ade_dataset(ade, skip_bad_samples=True)
    loader = build_dataloader(ds, batch_size=3, num_workers=num_workers)
    with pytest.warns(UserWarning, match='skipped bad sample'):
        batches = list(loader)
    assert len(batches) == 1 and len(batches[0]['metas']) == 3
    assert loader.num_skipped == 1
    assert all(m['img_path'] != image_path(ade, 2) for m in batches[0]['metas'])
    loader.close()


def test_removing_the_folder_after_construction_is_reported(ade):
    ds = ade_dataset(ade)
    shutil.rmtree(osp.join(ade, 'images'))
    with pytest.raises(DataError, match='image file not found'):
        ds[0]
