"""Every config under project/ resolves, names registered types and builds its model and optimizer."""
import glob
import os

import jittor as jt
import pytest

from jseg.config import Config
from jseg.config.mmseg_compat import resolve_runtime_keys
from jseg.registry import DATASETS, MODELS, SCHEDULERS
from jseg.runner.lr_scheduler import build_schedulers
from jseg.runner.optim import build_optimizer, unused_parameter_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'project', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))


def test_the_sweep_is_not_empty():
    names = {os.path.relpath(p, ROOT) for p in CONFIGS}
    assert len(CONFIGS) > 40
    assert 'project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py' in names
    assert 'project/offseg/demo/offset_learning_tiny_demo_shapes.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, 'project')))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert resolve_runtime_keys(cfg) == []  # every top-level key known, none accepted without effect
    for key in ('max_iters', 'optim_wrapper', 'train_dataloader', 'val_dataloader'):
        assert key in cfg, key
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key]['dataset']['type'] in DATASETS
    assert all(s['type'] in SCHEDULERS for s in cfg.get('param_scheduler', []))
    cfg.model.backbone.pop('init_cfg', None)  # pretrained files are not needed to build
    model = MODELS.build(cfg.model)             # lazy: no weight is computed
    optimizer, _ = build_optimizer(model, cfg.optim_wrapper)
    trained = {name for group in optimizer.param_groups for name in group['names']}
    assert not trained & set(unused_parameter_names(model))
    build_schedulers(optimizer, cfg.get('param_scheduler'))
    num_classes = len(DATASETS.get(cfg.val_dataloader.dataset.type).METAINFO['classes'])
    assert model.num_classes == num_classes
    jt.clean_graph()
