"""Data-parallel training and validation under mpirun (2 CPU processes) equal one process.

Skipped only when mpirun is absent (``apt-get install openmpi-bin libopenmpi-dev``; .ci/run installs it).
"""
import json
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jseg.datasets import generate_demo_dataset
from jseg.runner.checkpoint import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_offseg_demo.py')
RUN_NET = os.path.join(ROOT, 'tools', 'run_net.py')
MPIRUN = shutil.which('mpirun')

pytestmark = pytest.mark.skipif(MPIRUN is None or shutil.which('mpicc') is None,
                                reason='mpirun/mpicc not installed (apt-get install openmpi-bin libopenmpi-dev)')

# SGD keeps the update linear in the gradient (AdamW would turn rounding noise into sign flips);
# no dropout, so that one process and two see the same network.
COMMON = ["optim_wrapper.optimizer={'type': 'SGD', 'lr': 0.01, 'momentum': 0.9}",
          'model.decode_head.dropout_ratio=0.0', 'train_dataloader.batch_size=4', 'max_iters=2',
          'checkpoint_interval=1', 'eval_interval=100']
# Two ranks sum their gradients in another order than one process: float32 rounding of ~1e-7 on
# weights of scale ~0.1, far below one SGD step (lr 0.01 times the gradient).
ATOL = 1e-6


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return generate_demo_dataset(str(tmp_path_factory.mktemp('mpidata') / 'shapes'), num_train=8, num_val=3,
                                 size=(64, 96), seed=3)


def run(procs, data_root, *argv):
    opts = [f"{k}.dataset.data_root='{data_root}'" for k in ('train_dataloader', 'val_dataloader',
                                                             'test_dataloader')]
    cmd = [sys.executable, RUN_NET, '--config-file', CONFIG, *argv, '--cfg-options', *opts, *COMMON]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    if procs > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1', OMPI_MCA_rmaps_base_oversubscribe='1')
        cmd = [MPIRUN, '-np', str(procs), '-x', 'OMP_NUM_THREADS', *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def runs(data_root, tmp_path_factory):
    single, double = str(tmp_path_factory.mktemp('single')), str(tmp_path_factory.mktemp('double'))
    run(1, data_root, '--task=train', '--work-dir', single)
    out = run(2, data_root, '--task=train', '--work-dir', double)
    return single, double, out


def _model(path):
    arrays, meta = read_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith('model/')}, meta


def test_two_ranks_train_like_one_process_with_the_global_batch(runs):
    single, double, _ = runs
    for it in (1, 2):
        a, _ = _model(os.path.join(single, f'iter_{it}.npz'))
        b, meta = _model(os.path.join(double, f'iter_{it}.npz'))
        assert meta['iteration'] == it and a.keys() == b.keys()
        moved = 0
        start, _ = _model(os.path.join(single, 'iter_1.npz')) if it == 2 else (None, None)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=ATOL, err_msg=f'iter {it}: {key}')
            if start is not None and not np.array_equal(a[key], start[key]):
                moved += 1
        assert it == 1 or moved > 100  # the second step really changed the weights


def test_only_rank_zero_writes_and_logs(runs):
    _, double, out = runs
    assert len(glob.glob(os.path.join(double, 'logs', '*.jsonl'))) == 1
    assert out.count('Iter(train) [2/2]') == 1  # one log line, not one per rank


def test_two_rank_validation_equals_one(runs, data_root):
    single, _, _ = runs
    ckpt = os.path.join(single, 'iter_2.npz')
    results = []
    for procs in (1, 2):
        work = os.path.join(single, f'val{procs}')
        run(procs, data_root, '--task=val', f'--resume={ckpt}', '--work-dir', work)
        results.append(json.load(open(glob.glob(os.path.join(work, 'val_*.json'))[0])))
    one, two = results
    assert one['num_samples'] == two['num_samples'] == 3  # the odd sample is not counted twice
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert two[key] == pytest.approx(one[key], abs=1e-9)


def test_resume_under_mpirun(runs, data_root, tmp_path):
    _, double, _ = runs
    work = str(tmp_path / 'resumed')
    run(2, data_root, '--task=train', f'--resume={os.path.join(double, "iter_1.npz")}', '--work-dir', work)
    a, _ = _model(os.path.join(double, 'iter_2.npz'))
    b, meta = _model(os.path.join(work, 'iter_2.npz'))
    assert meta['iteration'] == 2
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=ATOL, err_msg=key)
