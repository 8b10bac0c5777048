"""MSCAN (SegNeXt T/S/B/L): shapes, official parameter names, init, pretrained loading."""
import gzip
import json
import os
import sys

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.backbones.mscan import ARCHS, MSCAN, MSCAAttention
from jseg.registry import MODELS

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, '..', 'fixtures', 'mscan', 'official_state_dict_shapes.json.gz')
TESTS_UTILS = os.path.join(HERE, '..', 'utils')
BN = dict(type='BN', requires_grad=True)   # the SegNeXt configs' norm


def official_shapes():
    with gzip.open(FIXTURE, 'rt') as f:
        return {name: {k: tuple(s) for k, s in entries if not k.endswith('num_batches_tracked')}
                for name, entries in json.load(f).items()}


def own_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def tiny():
    jt.set_global_seed(0)
    return MSCAN(arch='t', norm_cfg=BN).eval()


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_state_dict_equals_official(arch):
    expected = official_shapes()[f'mscan_{arch}']
    assert len(expected) > 300
    assert own_shapes(MSCAN(arch=arch, norm_cfg=BN)) == expected


def test_official_config_form_builds_the_same_model():
    cfg = dict(type='MSCAN', embed_dims=[32, 64, 160, 256], mlp_ratios=[8, 8, 4, 4], drop_rate=0.0,
               drop_path_rate=0.1, depths=[3, 3, 5, 2], attention_kernel_sizes=[5, [1, 7], [1, 11], [1, 21]],
               attention_kernel_paddings=[2, [0, 3], [0, 5], [0, 10]], act_cfg=dict(type='GELU'), norm_cfg=BN)
    assert own_shapes(MODELS.build(cfg)) == official_shapes()['mscan_t']
    assert MSCAN(arch='t', depths=[1, 1, 1, 1]).depths == (1, 1, 1, 1)
    assert MSCAN().out_channels == [64, 128, 256, 512]          # the official class defaults
    with pytest.raises(KeyError, match="'t'"):
        MSCAN(arch='xl')


def test_output_strides_and_channels(tiny):
    outs = tiny(jt.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 160, 4, 6), (2, 256, 2, 3)]
    outs = tiny(jt.randn(1, 3, 50, 70))
    assert [tuple(o.shape[2:]) for o in outs] == [(13, 18), (7, 9), (4, 5), (2, 3)]
    assert all(np.isfinite(o.numpy()).all() for o in outs)


def test_every_parameter_gets_a_gradient(tiny):
    tiny.train()
    try:
        loss = sum([(o * o).mean() for o in tiny(jt.randn(2, 3, 64, 64))])
        names, params = zip(*[(n, p) for n, p in tiny.named_parameters() if not p.is_stop_grad()])
        grads = jt.grad(loss, list(params))
        dead = [n for n, g in zip(names, grads) if np.abs(g.numpy()).max() == 0]
        assert not dead
        assert not any('running' in n for n in names)
    finally:
        tiny.eval()


def test_msca_attention_is_the_sum_of_its_branches():
    """conv3(conv0(x) + sum_j strip_j(conv0(x))) * x, with 1xk then kx1 depth-wise strips."""
    jt.set_global_seed(4)
    m = MSCAAttention(4)
    assert tuple(m.conv1_1.weight.shape) == (4, 1, 1, 11) and tuple(m.conv1_2.weight.shape) == (4, 1, 11, 1)
    x = jt.randn(1, 4, 9, 9)
    a = m.conv0(x)
    expected = m.conv3(a + m.conv0_2(m.conv0_1(a)) + m.conv1_2(m.conv1_1(a)) + m.conv2_2(m.conv2_1(a))) * x
    assert np.abs(m(x).numpy() - expected.numpy()).max() < 1e-5


def test_official_random_init():
    jt.set_global_seed(1)
    model = MSCAN(arch='s', norm_cfg=BN)
    model.init_weights()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.allclose(sd['block2.1.layer_scale_1'], 1e-2)
    assert (sd['norm3.weight'] == 1).all() and (sd['norm3.bias'] == 0).all()
    w = sd['block3.0.attn.spatial_gating_unit.conv2_1.weight']      # (320, 1, 1, 21): fan_out 21
    assert abs(w.std() - np.sqrt(2.0 / 21)) < 0.02
    assert (sd['block3.0.attn.spatial_gating_unit.conv2_1.bias'] == 0).all()
    w = sd['block1.0.mlp.fc1.weight']                               # (512, 64, 1, 1): fan_out 512
    assert abs(w.std() - np.sqrt(2.0 / 512)) < 0.01
    assert (sd['patch_embed1.proj.1.weight'] == 1).all() and (sd['patch_embed1.proj.1.running_var'] == 1).all()


def test_pretrained_pth_loads_by_official_names(tmp_path):
    """mscan_t.pth layout: BN counters are skipped, an ImageNet head is reported as unexpected."""
    sys.path.insert(0, TESTS_UTILS)
    try:
        import torch_format_writer
    finally:
        sys.path.remove(TESTS_UTILS)
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in official_shapes()['mscan_t'].items()}
    state['patch_embed1.proj.1.num_batches_tracked'] = np.array(7, np.int64)
    state['head.weight'] = np.zeros((1000, 256), np.float32)
    path = tmp_path / 'mscan_t.pth'
    torch_format_writer.save_zip({'state_dict': state}, str(path))
    model = MSCAN(arch='t', norm_cfg=BN, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.init_weights()
    assert report.unexpected == ['head.weight'] and not report.missing and not report.mismatched
    loaded = model.state_dict()
    for key in ['patch_embed1.proj.4.running_var', 'block3.4.attn.spatial_gating_unit.conv2_2.weight', 'norm4.bias']:
        assert (loaded[key].numpy() == state[key]).all()
