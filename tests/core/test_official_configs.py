"""The official config files, unchanged, resolve to the same experiment as our project/ configs.

Each project config whose header names its official file (``Official: local_configs/...py``
or ``configs/...py``) is compared with that file read from a local clone of the official
OffSeg repository (HVision-NKU/OffSeg, an mmsegmentation 1.2.2 fork holding both
``configs/`` and ``local_configs/``): model, optimizer, schedule, pipelines, evaluator and
runtime after mmseg's runtime keys are read, and the global batch (the official per-GPU
batch times the GPUs its file name states, 8 when it states none).

Set ``JSEG_OFFSEG_REPO`` to the clone's root to run them; the clone is never committed.
"""
import glob
import os
import re

import pytest

from jseg.config import Config
from jseg.config.mmseg_compat import resolve_runtime_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLONE = os.environ.get('JSEG_OFFSEG_REPO')
OFFICIAL_HEADER = re.compile(r'official[^:\n]*:\s*((?:local_)?configs/\S+?\.py)', re.IGNORECASE)


def _pairs():
    pairs = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'project', '**', '*.py'), recursive=True)):
        if '_base_' in path.split(os.sep):
            continue
        with open(path) as f:
            head = ''.join(f.readline() for _ in range(4))
        match = OFFICIAL_HEADER.search(head)
        if match and not head.lower().lstrip('# ').startswith(('no official', 'segnext-b on cityscapes')):
            pairs.append((os.path.relpath(path, ROOT), match.group(1)))
    return pairs


PAIRS = _pairs()
# Keys whose values name local files or loader mechanics, not the experiment.
IGNORED = {'data_root', 'persistent_workers', 'sampler', 'shuffle', 'num_workers', 'checkpoint', 'pretrained'}


def _normalised(value):
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if k not in IGNORED and v is not None}
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    return value


def _model(model):
    """The model config with our ``arch='b0'`` shorthand (MiT, MSCAN) spelt out as the official files write it."""
    from jseg.models.backbones import mit, mscan
    archs = {'MixVisionTransformer': mit.ARCHS, 'MSCAN': mscan.ARCHS}
    model = _normalised(model)
    backbone = model.get('backbone', {})
    if backbone.get('type') in archs and 'arch' in backbone:
        sizes = archs[backbone['type']][backbone.pop('arch')]
        backbone.update({k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()})
    return model


def _experiment(cfg):
    train = cfg.train_dataloader
    return dict(model=_model(cfg.model), optim_wrapper=_normalised(cfg.optim_wrapper),
                param_scheduler=_normalised(cfg.param_scheduler), train=_normalised(train['dataset']),
                val=_normalised(cfg.val_dataloader['dataset']), evaluator=_normalised(cfg.get('val_evaluator')),
                runtime={k: cfg.get(k) for k in ('max_iters', 'eval_interval', 'checkpoint_interval',
                                                 'log_interval')})


def test_the_project_configs_name_their_official_files():
    assert len(PAIRS) >= 30
    assert ('project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py',
            'local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py') in PAIRS


@pytest.mark.skipif(not CLONE, reason='set JSEG_OFFSEG_REPO to a clone of HVision-NKU/OffSeg to compare with '
                                      'the official config files')
@pytest.mark.parametrize('ours, official', PAIRS, ids=[p for p, _ in PAIRS])
def test_official_config_resolves_to_ours(ours, official):
    official_path = os.path.join(CLONE, official)
    if not os.path.isfile(official_path):
        pytest.skip(f'{official} is not in {CLONE}')
    theirs = Config.fromfile(official_path)
    resolve_runtime_keys(theirs)
    mine = Config.fromfile(os.path.join(ROOT, ours))
    resolve_runtime_keys(mine)
    assert _experiment(theirs) == _experiment(mine)
    gpus = re.search(r'(\d+)xb\d+', official)
    per_process = theirs.train_dataloader['batch_size'] * (int(gpus.group(1)) if gpus else 8)
    assert theirs.get('batch_size_per_process') and not mine.get('batch_size_per_process', False)
    assert per_process == mine.train_dataloader['batch_size']


OFFSEG_T_ADE = 'local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py'
# The demo-sized run: data, weights, iterations and sizes overridden, the file itself unchanged.
DEMO_OPTIONS = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
    'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'model.backbone.init_cfg=None', 'model.data_preprocessor.size=(64, 64)',
    'train_dataloader.dataset.pipeline.2.scale=(256, 64)', 'train_dataloader.dataset.pipeline.3.crop_size=(64, 64)',
    'val_dataloader.dataset.pipeline.1.scale=(256, 64)', 'model.test_cfg.crop_size=(64, 64)',
    'model.test_cfg.stride=(48, 48)',
]


@pytest.mark.skipif(not CLONE, reason='set JSEG_OFFSEG_REPO to a clone of HVision-NKU/OffSeg to train from '
                                      'the official config file')
def test_official_offseg_t_config_trains_through_run_net(tmp_path):
    import sys

    from jseg.datasets import generate_demo_dataset
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import run_net
    config = os.path.join(CLONE, OFFSEG_T_ADE)
    if not os.path.isfile(config):
        pytest.skip(f'{OFFSEG_T_ADE} is not in {CLONE}')
    data = generate_demo_dataset(str(tmp_path / 'shapes'), num_train=4, num_val=2, size=(64, 96), seed=3)
    work = str(tmp_path / 'work')
    assert run_net.main(['--config-file', config, '--task=train', '--data-root', data, '--work-dir', work,
                         '--cfg-options', *DEMO_OPTIONS]) == 0
    assert sorted(os.listdir(work)) == ['best_mIoU_iter_2.npz', 'iter_2.npz', 'last_checkpoint', 'logs',
                                        'offseg-t_ade20k_160k-512x512.py']
