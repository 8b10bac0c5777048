"""SegFormer and SegNeXt with offset learning: train, validate and test through tools/run_net.py.

The demo configs (project/{segformer,segnext}/demo) train from scratch on the
synthetic shapes; here on 8 generated images for 10 iterations at a constant
learning rate, after which the training loss must have fallen, and the saved
checkpoint must go through --task=val and --task=test.
"""
import glob
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'segformer': 'project/segformer/demo/segformer_b0_offset_learning_128x128_demo_shapes_2k.py',
    'segnext': 'project/segnext/demo/segnext_tiny_offset_learning_128x128_demo_shapes_2k.py',
}
ITERS = 10


def run_net(argv):
    spec = importlib.util.spec_from_file_location('run_net', osp.join(ROOT, 'tools', 'run_net.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def data_options(root):
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root!r}', f'+{loader}.dataset.num_train=8',
                 f'+{loader}.dataset.num_val=2', f'+{loader}.dataset.size=(96, 96)', f'{loader}.num_workers=0']
    return opts


@pytest.mark.parametrize('family', sorted(CONFIGS))
def test_train_val_test(family, tmp_path):
    config = osp.join(ROOT, CONFIGS[family])
    work_dir = str(tmp_path / 'work')
    data = data_options(str(tmp_path / 'demo_shapes'))
    train_opts = data + [
        f'max_iters={ITERS}', 'log_interval=1', f'eval_interval={ITERS}', f'checkpoint_interval={ITERS}',
        'train_dataloader.batch_size=4',
        "param_scheduler=[{'type': 'ConstantLR', 'factor': 1.0, 'by_epoch': False, 'begin': 0, 'end': 1000}]"]
    assert run_net(['--config-file', config, '--task=train', '--work-dir', work_dir,
                    '--cfg-options', *train_opts]) == 0

    records = []
    for path in glob.glob(osp.join(work_dir, 'logs', '*.jsonl')):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    losses = [r['loss'] for r in records if r.get('mode', 'train') == 'train' and 'loss' in r]
    assert len(losses) == ITERS and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses

    checkpoint = osp.join(work_dir, f'iter_{ITERS}.npz')
    assert osp.isfile(checkpoint)
    assert run_net(['--config-file', config, '--task=val', '--work-dir', work_dir, '--resume', checkpoint,
                    '--cfg-options', *data]) == 0
    save_dir = str(tmp_path / 'predictions')
    assert run_net(['--config-file', config, '--task=test', '--work-dir', work_dir, '--resume', checkpoint,
                    '--save-dir', save_dir, '--cfg-options', *data]) == 0
    written = [f for _, _, files in os.walk(save_dir) for f in files if f.endswith('.png')]
    assert len(written) >= 2
