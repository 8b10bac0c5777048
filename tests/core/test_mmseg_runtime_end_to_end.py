"""A config in mmsegmentation 1.x runtime form trains through tools/run_net.py with its settings honoured.

tests/fixtures/configs/tiny_offseg_demo_mmseg_runtime.py states max_iters, validation,
logging and checkpoint intervals, max_keep_ckpts and save_best only in mmengine's form
(train_cfg, default_hooks); each must show in what the run writes.
"""
import glob
import json
import os
import sys

import pytest

from jseg.datasets import generate_demo_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_offseg_demo_mmseg_runtime.py')
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import run_net  # noqa: E402


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    return generate_demo_dataset(root, num_train=8, num_val=3, size=(64, 96), seed=3)


def test_mmseg_runtime_form_is_honoured(data_root, tmp_path, capsys):
    work = str(tmp_path / 'work')
    options = ['--cfg-options', f"train_dataloader.dataset.data_root='{data_root}'",
               f"val_dataloader.dataset.data_root='{data_root}'"]
    assert run_net.main(['--config-file', CONFIG, '--task=train', '--work-dir', work, *options]) == 0
    out = capsys.readouterr().out
    assert out.count('env_cfg: accepted, no effect') == 1 and out.count('visualizer/vis_backends') == 1
    # checkpoint interval 1 with max_keep_ckpts=2: iterations 3 and 4 remain
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(work, 'iter_*.npz'))) == \
        ['iter_3.npz', 'iter_4.npz']
    records = [json.loads(line) for path in glob.glob(os.path.join(work, 'logs', '*.jsonl')) for line in open(path)]
    assert [r['iter'] for r in records if r['mode'] == 'train'] == [2, 4]   # logger interval 2
    val = [r for r in records if r['mode'] == 'val']
    assert [r['iter'] for r in val] == [4] and 'mDice' in val[0]           # val_interval 4, iou_metrics
    assert glob.glob(os.path.join(work, 'best_mDice_iter_4.npz'))           # save_best='mDice'
