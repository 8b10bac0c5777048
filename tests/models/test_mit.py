"""MixVisionTransformer (MiT-B0 ... B5): shapes, official parameter names, init, pretrained loading."""
import gzip
import json
import os
import sys

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.backbones.mit import ARCHS, MixVisionTransformer, MultiheadAttentionCore
from jseg.registry import MODELS
from jseg.runner.checkpoint import CheckpointError, load_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, '..', 'fixtures', 'mit', 'official_state_dict_shapes.json.gz')
TESTS_UTILS = os.path.join(HERE, '..', 'utils')


def official_shapes():
    with gzip.open(FIXTURE, 'rt') as f:
        return {name: {k: tuple(s) for k, s in entries} for name, entries in json.load(f).items()}


def own_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def b0():
    jt.set_global_seed(0)
    return MixVisionTransformer(arch='b0').eval()


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_state_dict_equals_official(arch):
    """Names and shapes of every variant equal the official state_dict (minus num_batches_tracked)."""
    expected = official_shapes()[f'mit_{arch}']
    assert len(expected) > 100
    assert own_shapes(MixVisionTransformer(arch=arch)) == expected


def test_official_config_form_builds_the_same_model():
    """The official configs pass sizes explicitly: B1 = embed_dims 64, layers 2-2-2-2, heads 1-2-5-8."""
    cfg = dict(type='MixVisionTransformer', in_channels=3, embed_dims=64, num_stages=4, num_layers=[2, 2, 2, 2],
               num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3),
               mlp_ratio=4, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1)
    assert own_shapes(MODELS.build(cfg)) == official_shapes()['mit_b1']
    # explicit sizes override the arch table
    assert MixVisionTransformer(arch='b0', embed_dims=64).out_channels == [64, 128, 320, 512]
    # no arch: the official class defaults (64, layers 3-4-6-3, heads 1-2-4-8)
    default = MixVisionTransformer()
    assert default.out_channels == [64, 128, 256, 512] and default.num_layers == (3, 4, 6, 3)


def test_output_strides_and_channels(b0):
    outs = b0(jt.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 160, 4, 6), (2, 256, 2, 3)]
    # odd sizes: each patch embedding (padding k // 2) rounds up
    outs = b0(jt.randn(1, 3, 50, 70))
    assert [tuple(o.shape[2:]) for o in outs] == [(13, 18), (7, 9), (4, 5), (2, 3)]
    assert all(np.isfinite(o.numpy()).all() for o in outs)


def test_out_indices():
    model = MixVisionTransformer(arch='b0', out_indices=(1, 3)).eval()
    outs = model(jt.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 256]
    with pytest.raises(ValueError):
        MixVisionTransformer(arch='b0', out_indices=(4,))
    with pytest.raises(KeyError, match='b0'):
        MixVisionTransformer(arch='b9')


def test_every_parameter_gets_a_gradient(b0):
    b0.train()
    try:
        x = jt.randn(1, 3, 64, 64)
        loss = sum([(o * o).mean() for o in b0(x)])
        params = b0.parameters()
        grads = jt.grad(loss, params)
        dead = [name for (name, _), g in zip(b0.named_parameters(), grads) if np.abs(g.numpy()).max() == 0]
        assert not dead
    finally:
        b0.eval()


def test_official_random_init():
    """Linear: trunc-normal(0.02) + zero bias; LN: 1/0; conv: N(0, sqrt(2 / fan_out)); MHA in_proj: Xavier."""
    jt.set_global_seed(1)
    model = MixVisionTransformer(arch='b1')
    model.init_weights()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    w = sd['layers.2.1.0.attn.attn.out_proj.weight']                # (320, 320)
    assert abs(w.std() - 0.02) < 0.002 and np.abs(w).max() <= 2.0
    assert (sd['layers.2.1.0.attn.attn.out_proj.bias'] == 0).all()
    assert (sd['layers.2.1.0.attn.attn.in_proj_bias'] == 0).all()
    bound = np.sqrt(6.0 / (320 + 960))
    w = sd['layers.2.1.0.attn.attn.in_proj_weight']
    assert np.abs(w).max() <= bound and w.std() > 0.5 * bound
    assert (sd['layers.0.2.weight'] == 1).all() and (sd['layers.0.2.bias'] == 0).all()
    w = sd['layers.1.1.0.ffn.layers.1.weight']                      # depth-wise 3x3, fan_out = 9
    assert abs(w.std() - np.sqrt(2.0 / 9)) < 0.05 and (sd['layers.1.1.0.ffn.layers.1.bias'] == 0).all()
    w = sd['layers.0.0.projection.weight']                          # 7x7, 64 outputs
    assert abs(w.std() - np.sqrt(2.0 / (49 * 64))) < 0.003


def _write_pth(path, state):
    sys.path.insert(0, TESTS_UTILS)
    try:
        import torch_format_writer
    finally:
        sys.path.remove(TESTS_UTILS)
    torch_format_writer.save_zip({'state_dict': state}, str(path))


def test_pretrained_pth_loads_by_official_names(tmp_path):
    """A PyTorch file with the official names (mit_b0.pth layout) loads; extra keys are reported."""
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in official_shapes()['mit_b0'].items()}
    state['head.weight'] = np.zeros((1000, 256), np.float32)         # an ImageNet classifier: unexpected
    path = tmp_path / 'mit_b0.pth'
    _write_pth(path, state)
    model = MODELS.build(dict(type='MixVisionTransformer', arch='b0',
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    report = model.init_weights()
    assert report.unexpected == ['head.weight'] and not report.missing and not report.mismatched
    loaded = model.state_dict()
    for key in ['layers.0.0.projection.weight', 'layers.3.1.1.attn.attn.in_proj_weight', 'layers.2.2.bias']:
        assert (loaded[key].numpy() == state[key]).all()
    # the deprecated ``pretrained`` argument means the same
    assert MixVisionTransformer(arch='b0', pretrained=str(path)).init_cfg == dict(type='Pretrained',
                                                                                  checkpoint=str(path))
    with pytest.raises(ValueError):
        MixVisionTransformer(arch='b0', pretrained=str(path), init_cfg=dict(type='Pretrained', checkpoint='x'))
    with pytest.raises(FileNotFoundError, match='not found'):
        MixVisionTransformer(arch='b0', pretrained=str(tmp_path / 'missing.pth')).init_weights()


def test_strict_load_names_mismatches(b0):
    state = {k: v.numpy() for k, v in b0.state_dict().items()}
    state['layers.0.2.weight'] = np.ones(33, np.float32)
    del state['layers.1.0.norm.bias']
    with pytest.raises(CheckpointError, match='layers.1.0.norm.bias'):
        load_state_dict(MixVisionTransformer(arch='b0'), state, strict=True)


def test_attention_matches_a_direct_computation():
    """softmax(q k^T / sqrt(d)) v per head, with the stacked in_proj_weight rows q, k, v."""
    jt.set_global_seed(3)
    attn = MultiheadAttentionCore(8, 2).eval()
    rng = np.random.default_rng(0)
    q_in, kv_in = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 3, 8))
    w, b = attn.in_proj_weight.numpy(), rng.standard_normal(24)
    attn.in_proj_bias.assign(jt.array(b.astype(np.float32)))
    q, k, v = (q_in @ w[:8].T + b[:8]), (kv_in @ w[8:16].T + b[8:16]), (kv_in @ w[16:].T + b[16:])
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        logits = q[..., s] @ k[..., s].transpose(0, 2, 1) / 2.0
        p = np.exp(logits - logits.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ v[..., s])
    expected = np.concatenate(heads, -1) @ attn.out_proj.weight.numpy().T + attn.out_proj.bias.numpy()
    out = attn(jt.array(q_in.astype(np.float32)), jt.array(kv_in.astype(np.float32))).numpy()
    assert np.abs(out - expected).max() < 1e-5
