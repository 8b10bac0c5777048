"""Fixtures of the tool tests: the tiny demo config, its data, a checkpoint trained for 2 iterations."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_offseg_demo.py')


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (under a name no other module uses)."""
    module_name = f'_jseg_tool_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def data_options(data_root):
    """--cfg-options pointing every split of the tiny config at ``data_root``."""
    return [f"{split}_dataloader.dataset.data_root='{data_root}'" for split in ('train', 'val', 'test')]


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
