"""The real train -> val -> test loop through tools/run_net.py, and exact resume.

Uses OffSeg-T on a tiny generated copy of the demo dataset (64x64 crops).
"""
import glob
import json
import os
import sys

import cv2
import numpy as np
import pytest

from jseg.datasets import generate_demo_dataset
from jseg.runner.checkpoint import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_offseg_demo.py')
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import run_net  # noqa: E402


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    return generate_demo_dataset(root, num_train=8, num_val=3, size=(64, 96), seed=3)


def options(data_root, *extra):
    return ['--cfg-options', f"train_dataloader.dataset.data_root='{data_root}'",
            f"val_dataloader.dataset.data_root='{data_root}'",
            f"test_dataloader.dataset.data_root='{data_root}'", *extra]


def run(*argv):
    return run_net.main(['--config-file', CONFIG, *argv])


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('work'))
    assert run('--task=train', '--work-dir', work, *options(data_root)) == 0
    return work


def test_train_writes_config_logs_and_checkpoints(trained):
    for name in ('iter_2.npz', 'iter_4.npz', 'last_checkpoint', 'tiny_offseg_demo.py'):
        assert os.path.isfile(os.path.join(trained, name)), name
    with open(os.path.join(trained, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.npz')
    _, meta = read_checkpoint(os.path.join(trained, 'iter_4.npz'))
    assert meta['iteration'] == 4 and meta['optimizer']['type'] == 'AdamW'
    records = [json.loads(line) for path in glob.glob(os.path.join(trained, 'logs', '*.jsonl'))
               for line in open(path)]
    train = [r for r in records if r['mode'] == 'train']
    assert [r['iter'] for r in train] == [2, 4]
    assert all(np.isfinite(r['loss']) and 'decode.loss_ce' in r and 'lr' in r and 'eta_seconds' in r
               for r in train)
    assert [r for r in records if r['mode'] == 'val'][0]['iter'] == 4
    assert glob.glob(os.path.join(trained, 'best_mIoU_iter_4.npz'))


def test_val_prints_and_saves_metrics(trained, data_root, capsys):
    ckpt = os.path.join(trained, 'iter_4.npz')
    assert run('--task=val', f'--resume={ckpt}', '--work-dir', trained, *options(data_root)) == 0
    out = capsys.readouterr().out
    assert 'mIoU' in out and '| circle' in out
    result = json.load(open(sorted(glob.glob(os.path.join(trained, 'val_*.json')))[-1]))
    assert result['num_samples'] == 3 and 0 <= result['mIoU'] <= 1
    assert set(result['per_class']) == {'smooth background', 'grainy background', 'circle', 'square',
                                        'triangle', 'ring', 'stripes'}


def test_test_writes_label_maps_and_overlays(trained, data_root, tmp_path):
    save = str(tmp_path / 'pred')
    ckpt = os.path.join(trained, 'iter_4.npz')
    assert run('--task=test', f'--load-from={ckpt}', '--work-dir', trained, f'--save-dir={save}',
               *options(data_root)) == 0
    images = sorted(glob.glob(os.path.join(data_root, 'images', 'validation', '*.jpg')))
    for path in images:
        name = os.path.splitext(os.path.basename(path))[0]
        label = cv2.imread(os.path.join(save, 'labels', name + '.png'), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(os.path.join(save, 'overlays', name + '.jpg'))
        image = cv2.imread(path)
        assert label.shape == image.shape[:2] and overlay.shape == image.shape
        assert label.max() < 7


def test_val_and_test_refuse_a_checkpoint_without_the_model_weights(data_root, tmp_path, capsys):
    """Issue 11.4: a wrong checkpoint stops val/test (and init_model) instead of evaluating random weights."""
    from jseg.apis import init_model
    from jseg.cli import load_config
    from jseg.runner import CheckpointError, Runner, save_checkpoint
    foreign = str(tmp_path / 'foreign.npz')
    save_checkpoint(foreign, {'encoder.layer.weight': np.zeros(2, np.float32)}, {})
    for task in ('val', 'test'):
        assert run(f'--task={task}', f'--load-from={foreign}', '--work-dir', str(tmp_path / task),
                   *options(data_root)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f'error: {foreign} lacks ') and 'backbone.' in err[0], err
        assert 'load_strict=False' in err[0]
    with pytest.raises(CheckpointError, match='lacks'):
        init_model(CONFIG, foreign)
    model = init_model(CONFIG)
    partial = str(tmp_path / 'partial.npz')
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith('decode_head.')}
    save_checkpoint(partial, weights, {})
    with pytest.raises(CheckpointError, match=r'decode_head\.'):
        init_model(CONFIG, partial)
    init_model(CONFIG, partial, load_strict=False)  # a partial load, asked for
    assert Runner(load_config(CONFIG, ['load_strict=False']), work_dir=str(tmp_path / 'w'))._load_strict() is False


def _train_state(path):
    arrays, meta = read_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(('model/', 'optimizer/'))}, meta


def _max_rel_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-12)) for k in a)


def test_resume_continues_exactly(trained, data_root, tmp_path):
    """Training 4 iterations in one go equals 2 + resume + 2 (same seed, same augmentation).

    Bit-identity across processes is not guaranteed: vectorised float reductions
    may sum in a different order depending on buffer alignment, which moves
    the last bits. The tolerance (1e-5 relative) is far below what one changed
    augmentation or one shuffled batch does, which the control run shows.
    """
    ckpt = os.path.join(trained, 'iter_2.npz')
    resumed, control = str(tmp_path / 'resumed'), str(tmp_path / 'control')
    assert run('--task=train', f'--resume={ckpt}', '--work-dir', resumed, *options(data_root)) == 0
    straight, _ = _train_state(os.path.join(trained, 'iter_4.npz'))
    again, meta = _train_state(os.path.join(resumed, 'iter_4.npz'))
    assert meta['iteration'] == 4 and straight.keys() == again.keys() and len(straight) > 100
    for key in straight:
        np.testing.assert_allclose(again[key], straight[key], rtol=1e-5, atol=1e-7, err_msg=key)
    # control: the same resume with another seed draws other batches and augmentations
    assert run('--task=train', f'--resume={ckpt}', '--work-dir', control, '--seed=1',
               *options(data_root)) == 0
    other, _ = _train_state(os.path.join(control, 'iter_4.npz'))
    assert _max_rel_diff(other, straight) > 1e-3 > 100 * _max_rel_diff(again, straight)


def test_resume_auto_finds_the_latest(trained, data_root, tmp_path, capsys):
    # everything is done already: auto-resume loads iter_4 and has nothing left to train
    assert run('--task=train', '--resume=auto', '--work-dir', trained, *options(data_root)) == 0
    assert 'resumed from' in capsys.readouterr().out


def test_val_with_test_time_augmentation(trained, data_root, tmp_path):
    ckpt = os.path.join(trained, 'iter_4.npz')
    work = str(tmp_path / 'tta')
    assert run('--task=val', '--tta', f'--resume={ckpt}', '--work-dir', work, *options(data_root)) == 0
    result = json.load(open(glob.glob(os.path.join(work, 'val_*.json'))[0]))
    assert result['num_samples'] == 3 and 0 <= result['mIoU'] <= 1


def test_interrupted_training_saves_and_resumes(data_root, tmp_path):
    """SIGINT (Ctrl-C) or SIGTERM stops after the current iteration with a checkpoint to resume from.

    With loading workers, which inherit the handler when forked: they must end quietly when the
    loader terminates them, not report the signal or raise.
    """
    import signal
    import subprocess
    import time
    work = str(tmp_path / 'interrupted')
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'run_net.py'), '--config-file', CONFIG, '--task=train',
           '--work-dir', work, *options(data_root, 'max_iters=1000', 'checkpoint_interval=1000',
                                                'train_dataloader.num_workers=2')]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not glob.glob(os.path.join(work, 'logs', '*.jsonl')) and time.time() < deadline:
        time.sleep(0.5)  # the first log record (iteration 2) means training is under way
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert 'training stopped at iteration' in out
    assert out.count('received signal') == 1 and 'Traceback' not in out, out
    saved = glob.glob(os.path.join(work, 'iter_*.npz'))
    assert len(saved) == 1
    _, meta = read_checkpoint(saved[0])
    assert 2 <= meta['iteration'] < 1000
    assert os.path.basename(saved[0]) == f'iter_{meta["iteration"]}.npz'
