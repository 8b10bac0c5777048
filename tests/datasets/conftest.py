"""Fixtures of the data tests: tiny datasets written once per session."""
import os.path as osp

import pytest

import jseg  # noqa: F401  (configures Jittor before anything imports it)
from data_helpers import ScriptedRNG, make_ade, make_cityscapes, make_coco_stuff, make_pascal_context


@pytest.fixture(scope='session')
def data_root(tmp_path_factory):
    """``datasets/``-like folder holding tiny ADE20K, Cityscapes, COCO-Stuff and Pascal Context copies."""
    root = str(tmp_path_factory.mktemp('datasets'))
    make_ade(root)
    make_cityscapes(root)
    make_coco_stuff(root)
    make_pascal_context(root)
    return root


@pytest.fixture(scope='session')
def ade_root(data_root):
    return osp.join(data_root, 'ade', 'ADEChallengeData2016')


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A small generated demo dataset (12 + 4 images)."""
    from jseg.datasets import generate_demo_dataset
    root = osp.join(str(tmp_path_factory.mktemp('demo')), 'demo_shapes')
    return generate_demo_dataset(root, num_train=12, num_val=4, size=(64, 96), seed=0)


@pytest.fixture
def scripted_rng():
    return ScriptedRNG
