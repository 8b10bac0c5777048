"""The dataset configs of project/_base_/datasets load the tiny fixtures and give well-shaped batches."""
import glob
import os.path as osp

import numpy as np
import pytest

from jseg.config import Config
from jseg.datasets import build_dataloader

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO, 'project', '_base_', 'datasets')
# config -> (folder under the fixture data root, number of classes)
CONFIGS = {
    'ade20k.py': ('ade/ADEChallengeData2016', 150),
    'cityscapes_1024x1024.py': ('cityscapes', 19),
    'coco-stuff164k.py': ('coco_stuff164k', 171),
    'pascal_context_59.py': ('VOCdevkit/VOC2010', 59),
}


def test_every_dataset_config_is_covered():
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')))
    assert found and set(CONFIGS) | {'demo_shapes.py'} == set(found)


def load(name, root, **options):
    overrides = {'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
                 'val_dataloader.num_workers': 0}
    for key in ('train_dataloader', 'val_dataloader'):
        overrides[f'{key}.dataset.data_root'] = root
    overrides.update(options)
    return Config.fromfile(osp.join(CONFIG_DIR, name), overrides)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_trains_and_validates_on_fixture(name, data_root):
    folder, num_classes = CONFIGS[name]
    cfg = load(name, osp.join(data_root, folder))
    assert cfg.data_root.startswith('datasets/')
    assert cfg.val_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'])
    for key in ('dataset_type', 'crop_size', 'train_pipeline', 'test_pipeline', 'img_ratios', 'tta_pipeline',
                'test_dataloader', 'test_evaluator'):
        assert key in cfg

    train = build_dataloader(cfg.train_dataloader, seed=0, training=True)
    assert train.shuffle and train.drop_last and train.dataset.num_classes == num_classes
    batch = next(iter(train))
    h, w = cfg.crop_size
    assert batch['inputs'].shape == (2, 3, h, w) and batch['inputs'].dtype == np.uint8
    assert batch['gt_seg'].shape == (2, h, w) and batch['gt_seg'].dtype == np.uint8
    assert set(np.unique(batch['gt_seg'])) <= set(range(num_classes)) | {255}
    assert len(batch['metas']) == 2 and all(m['pad_shape'] == (h, w) for m in batch['metas'])

    val = build_dataloader(cfg.val_dataloader, training=False)
    batch = next(iter(val))
    meta = batch['metas'][0]
    assert batch['inputs'].shape[:2] == (1, 3) and batch['inputs'].shape[2:] == meta['img_shape']
    assert batch['gt_seg'].shape == (1,) + meta['ori_shape']    # labels stay at the original size
    scale = cfg.test_pipeline[1]['scale']
    assert min(meta['img_shape']) == min(scale) or max(meta['img_shape']) == max(scale)


@pytest.mark.parametrize('name', ['ade20k.py', 'pascal_context_59.py'])
def test_tta_pipeline_gives_views(name, data_root):
    folder, _ = CONFIGS[name]
    cfg = load(name, osp.join(data_root, folder))
    cfg.val_dataloader.dataset.pipeline = cfg.tta_pipeline
    batch = next(iter(build_dataloader(cfg.val_dataloader)))
    views = batch['views']
    assert len(views) == 2 * len(cfg.img_ratios)
    assert [v['metas'][0]['flip'] for v in views[:2]] == [False, True]
    ori = views[0]['metas'][0]['ori_shape']
    assert all(v['gt_seg'].shape == (1,) + ori for v in views)
    assert views[0]['inputs'].shape[2:] == views[1]['inputs'].shape[2:]
    np.testing.assert_array_equal(views[1]['inputs'], views[0]['inputs'][..., ::-1])


def test_demo_config_generates_its_data(tmp_path):
    root = str(tmp_path / 'demo_shapes')
    cfg = load('demo_shapes.py', root, **{'+train_dataloader.dataset.num_train': 8,
                                          '+train_dataloader.dataset.num_val': 2,
                                          '+val_dataloader.dataset.num_train': 8,
                                          '+val_dataloader.dataset.num_val': 2})
    train = build_dataloader(cfg.train_dataloader, training=True)
    assert len(train.dataset) == 8 and train.dataset.num_classes == 7
    batch = next(iter(train))
    assert batch['inputs'].shape == (2, 3) + tuple(cfg.crop_size)
    assert len(build_dataloader(cfg.val_dataloader).dataset) == 2
