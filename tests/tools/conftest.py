"""Fixtures of the tool tests: the tiny demo dataset and a checkpoint trained on it for 2 iterations."""
import os

import pytest
from tool_helpers import CONFIG, data_options, load_tool


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The tiny demo dataset of tests/core/test_end_to_end.py (same settings, so the same image sizes)."""
    from jseg.datasets import generate_demo_dataset
    root = str(tmp_path_factory.mktemp('tool_data') / 'shapes')
    return generate_demo_dataset(root, num_train=8, num_val=3, size=(64, 96), seed=3)


@pytest.fixture(scope='session')
def trained(demo_data, tmp_path_factory):
    """(work dir, checkpoint) of a 2-iteration training run of the tiny OffSeg-T demo config."""
    work = str(tmp_path_factory.mktemp('tool_work'))
    run_net = load_tool('run_net')
    assert run_net.main(['--config-file', CONFIG, '--task=train', '--work-dir', work, '--cfg-options',
                         *data_options(demo_data), 'max_iters=2', 'log_interval=1']) == 0
    checkpoint = os.path.join(work, 'iter_2.npz')
    assert os.path.isfile(checkpoint)
    return work, checkpoint
