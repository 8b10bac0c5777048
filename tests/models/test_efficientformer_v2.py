"""EfficientFormerV2 backbone: shapes, official names, parity with the official PyTorch model, modes.

Fixtures (tests/fixtures/efficientformer_v2, see its README): the official
``state_dict()`` names/shapes/dtypes of S0/S1/S2/L, and the official model's
stage outputs for seeded weights (:func:`seeded_value`) and seeded inputs.
"""
import gzip
import json
import math
import os
import sys
import zlib

import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.models.backbones import EfficientFormerV2
from jseg.models.backbones import efficientformer_v2 as eff
from jseg.models.backbones import efficientformer_v2_utils as ops
from jseg.models.utils import BatchNorm2d
from jseg.registry import MODELS
from jseg.runner.checkpoint import load_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fixtures',
                        'efficientformer_v2')
TESTS_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'utils')
ARCH_NAMES = ['s0', 's1', 's2', 'l']
TOL = 1e-4  # max |error| / max |reference| per stage output (float32)

# name, arch, bias resolution, (H, W), weight seed, input seed -- as in the fixture
PARITY_CASES = [
    ('s1_r64_64x64', 's1', 64, (64, 64), 1, 11),      # native size: bias resize is the identity
    ('s1_r64_64x128', 's1', 64, (64, 128), 2, 12),    # biases upsampled, non-square
    ('s0_r512_32x64', 's0', 512, (32, 64), 3, 13),    # 512 tables downsampled, non-square
    ('s2_r512_32x32', 's2', 512, (32, 32), 4, 14),
    ('l_r512_32x32', 'l', 512, (32, 32), 5, 15),
]


def seeded_value(name, shape, seed):
    """Deterministic test weights: uniform draws from a generator seeded by (seed, crc32(name)).

    Every framework gets the same array for the same name, whatever the order
    of its state dict. Layer scales and bias tables are large enough for
    every branch to matter.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    u = rng.random(tuple(shape))
    leaf = name.rsplit('.', 1)[-1]
    if leaf == 'running_var':
        v = 0.5 + u
    elif leaf == 'running_mean':
        v = 0.2 * (u - 0.5)
    elif leaf.startswith('layer_scale'):
        v = 0.1 + 0.4 * u
    elif leaf == 'attention_biases_seg':
        v = 2.0 * (u - 0.5)
    elif leaf == 'weight' and len(shape) == 1:   # norm scale
        v = 0.8 + 0.4 * u
    elif leaf == 'weight':                       # conv: variance 1 / fan_in
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(3.0 / fan_in)
    else:                                        # biases, legacy buffers
        v = 0.1 * (u - 0.5)
    return v.astype(np.float32)


def seeded_model(arch, seed, **kwargs):
    model = EfficientFormerV2(arch, **kwargs)
    weights = {k: seeded_value(k, v.shape, seed) if v.dtype == jt.float32 else v.numpy()
               for k, v in model.state_dict().items()}     # index tables keep their values
    load_state_dict(model, weights, strict=True)
    return model


def seeded_input(shape, seed):
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 4 - 2


def rel_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.abs(actual - expected).max() / np.abs(expected).max()


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, BatchNorm2d)]


@pytest.fixture(scope='module')
def official_keys():
    with gzip.open(os.path.join(FIXTURES, 'official_state_dict.json.gz'), 'rt') as f:
        keys = json.load(f)
    assert sorted(keys) == sorted(ARCH_NAMES)
    return keys


@pytest.fixture(scope='module')
def official_outputs():
    with np.load(os.path.join(FIXTURES, 'official_outputs.npz')) as data:
        outputs = {k: data[k] for k in data.files}
    assert len(outputs) == 4 * len(PARITY_CASES)
    return outputs


# ---------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_stage_strides_and_channels(arch):
    model = EfficientFormerV2(arch).eval()
    widths = eff.ARCHS[arch]['widths']
    for h, w in [(64, 64), (64, 96)]:
        outs = model(jt.randn(2, 3, h, w))
        assert len(outs) == 4
        for i, out in enumerate(outs):
            stride = 2 ** (i + 2)
            assert tuple(out.shape) == (2, widths[i], h // stride, w // stride)


def test_sizes_that_are_not_multiples_of_32_round_up_like_the_convolutions():
    outs = EfficientFormerV2('s0').eval()(jt.randn(1, 3, 50, 64))   # ceil(50 / 16) = 4 is even
    assert [tuple(o.shape[2:]) for o in outs] == [(13, 16), (7, 8), (4, 4), (2, 2)]


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_state_dict_matches_official(arch, official_keys):
    """Names, shapes and dtypes equal the official model's ``state_dict()`` (less BN counters)."""
    official = {name: (tuple(shape), dtype) for name, shape, dtype in official_keys[arch]
                if not name.endswith('num_batches_tracked')}
    assert len(official) > 400
    ours = {name: (tuple(var.shape), str(var.dtype)) for name, var in EfficientFormerV2(arch).state_dict().items()}
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_official_type_names_build():
    for arch in ARCH_NAMES:
        model = MODELS.build(dict(type=f'efficientformerv2_{arch}_feat', style='pytorch',
                                  init_cfg=dict(type='Pretrained', checkpoint='not/loaded/yet.pth')))
        assert isinstance(model, EfficientFormerV2)
        assert model.widths == eff.ARCHS[arch]['widths']
    assert isinstance(MODELS.build(dict(type='EfficientFormerV2', arch='s1')), EfficientFormerV2)


def test_norm_eval_default_follows_the_official_backbone():
    # Official: train() freezes nn.BatchNorm2d, but a backbone built with init_cfg/pretrained has
    # already converted them to SyncBatchNorm, which train() does not freeze.
    assert EfficientFormerV2('s0').norm_eval is True
    assert EfficientFormerV2('s0', init_cfg=dict(type='Pretrained', checkpoint='a.pth')).norm_eval is False
    assert EfficientFormerV2('s0', pretrained='a.pth').norm_eval is False
    assert EfficientFormerV2('s0', norm_eval=True, pretrained='a.pth').norm_eval is True


def test_drop_path_rates_follow_the_official_schedule():
    def rates(model):
        return [getattr(block.drop_path, 'drop_prob', 0.0)
                for stage in list(model.network)[::2] for block in stage]

    s2 = rates(EfficientFormerV2('s2'))
    assert len(s2) == 28 and s2[0] == 0.0 and s2[-1] == pytest.approx(0.02)
    assert s2[5] == pytest.approx(0.02 * 5 / 27)
    assert rates(EfficientFormerV2('l'))[-1] == pytest.approx(0.1)
    assert set(rates(EfficientFormerV2('s1'))) == {0.0}
    assert rates(EfficientFormerV2('s1', drop_path_rate=0.2))[-1] == pytest.approx(0.2)


def test_attention_bias_index_tables():
    """The tables equal the official first-appearance numbering (closed forms for these grids)."""
    index, count = ops.relative_offset_index(16, 16, 1)
    qy, qx = np.divmod(np.arange(256), 16)
    expected = np.abs(qy[:, None] - qy[None]) * 16 + np.abs(qx[:, None] - qx[None])
    assert count == 256 and (index == expected).all()

    index, count = ops.relative_offset_index(16, 32, 2)
    ky, kx = np.divmod(np.arange(1024), 32)
    expected = np.abs(2 * qy[:, None] - ky[None]) * 32 + np.abs(2 * qx[:, None] - kx[None])
    assert count == 1024 and (index == expected).all()

    model = EfficientFormerV2('s1')
    attn = model.network[4][8].token_mixer
    assert attn.attention_bias_idxs_seg.dtype == jt.int64
    assert tuple(attn.attention_biases_seg.shape) == (8, 256)
    assert (attn.attention_bias_idxs_seg.numpy() == ops.relative_offset_index(16, 16, 1)[0]).all()


# ---------------------------------------------------------------------------------------------
# numerics


@pytest.mark.parametrize('case', PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_parity_with_official(case, official_outputs):
    name, arch, resolution, (h, w), weight_seed, input_seed = case
    model = seeded_model(arch, weight_seed, resolution=resolution).eval()
    outs = model(jt.array(seeded_input((1, 3, h, w), input_seed)))
    for i, out in enumerate(outs):
        expected = official_outputs[f'{name}/stage{i}']
        assert tuple(out.shape) == expected.shape
        assert rel_error(out.numpy(), expected) < TOL, (name, i)


def test_batched_forward_matches_official_and_single_samples(official_outputs):
    name, arch, resolution, (h, w), weight_seed, input_seed = PARITY_CASES[1]
    model = seeded_model(arch, weight_seed, resolution=resolution).eval()
    first, second = seeded_input((1, 3, h, w), input_seed), seeded_input((1, 3, h, w), 99)
    batched = model(jt.array(np.concatenate([first, second])))
    alone = model(jt.array(second))
    for i, (both, single) in enumerate(zip(batched, alone)):
        assert rel_error(both.numpy()[:1], official_outputs[f'{name}/stage{i}']) < TOL
        assert rel_error(both.numpy()[1:], single.numpy()) < 1e-5


def numpy_bicubic(image, size):
    """Direct 16-tap bicubic of a 2-D array, PyTorch rules (a=-0.75, align_corners=False)."""
    def cubic(x):
        x = abs(x)
        if x <= 1:
            return (1.25 * x - 2.25) * x * x + 1
        if x < 2:
            return ((-0.75 * x + 3.75) * x - 6) * x + 3
        return 0.0

    (n1, n2), (m1, m2) = image.shape, size
    out = np.zeros(size)
    for i in range(m1):
        sy = (i + 0.5) * n1 / m1 - 0.5
        for j in range(m2):
            sx = (j + 0.5) * n2 / m2 - 0.5
            y0, x0 = math.floor(sy), math.floor(sx)
            for yy in range(y0 - 1, y0 + 3):
                for xx in range(x0 - 1, x0 + 3):
                    weight = cubic(sy - yy) * cubic(sx - xx)
                    out[i, j] += weight * image[min(max(yy, 0), n1 - 1), min(max(xx, 0), n2 - 1)]
    return out


def test_bias_resize_is_identity_at_native_size_and_bicubic_otherwise():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((2, 16)).astype(np.float32)
    index, _ = ops.relative_offset_index(4, 4, 1)                       # (16, 16) tokens
    gathered = table[:, index]
    native = ops.gather_attention_bias(jt.array(table), jt.array(index), (16, 16)).numpy()
    assert (native == gathered).all()                                    # exact, no resize
    for size in [(4, 4), (36, 36), (4, 64), (25, 9)]:
        resized = ops.gather_attention_bias(jt.array(table), jt.array(index), size).numpy()
        expected = np.stack([numpy_bicubic(g.astype(np.float64), size) for g in gathered])
        assert np.abs(resized - expected).max() < 1e-5, size


def test_bilinear_upsample_matches_numpy():
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 4)).astype(np.float32)
    out = ops.upsample2x_bilinear(jt.array(x)).numpy()

    def taps(n):
        src = np.maximum((np.arange(2 * n) + 0.5) / 2 - 0.5, 0)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, n - 1), src - low

    y0, y1, fy = taps(3)
    x0, x1, fx = taps(4)
    rows = x[:, :, y0] * (1 - fy)[:, None] + x[:, :, y1] * fy[:, None]
    expected = rows[..., x0] * (1 - fx) + rows[..., x1] * fx
    assert out.shape == (1, 2, 6, 8) and np.abs(out - expected).max() < 1e-6


@pytest.mark.parametrize('batch', [1, 2])
def test_gemm_helpers_match_plain_jittor_forward_and_backward(batch):
    rng = np.random.default_rng(batch)
    a = jt.array(rng.standard_normal((batch, 3, 5, 4)).astype(np.float32))
    b = jt.array(rng.standard_normal((batch, 3, 4, 6)).astype(np.float32))
    weight = jt.array(rng.standard_normal((batch, 3, 5, 6)).astype(np.float32))
    ours, plain = ops.batched_matmul(a, b), jt.matmul(a, b)
    assert np.abs(ours.numpy() - plain.numpy()).max() < 1e-5
    for g1, g2 in zip(jt.grad((ours * weight).sum(), [a, b]), jt.grad((plain * weight).sum(), [a, b])):
        assert np.abs(g1.numpy() - g2.numpy()).max() < 1e-5

    pointwise, conv = ops.PointwiseConv(4, 6), nn.Conv2d(4, 6, 1)
    conv.weight.assign(pointwise.weight)
    conv.bias.assign(pointwise.bias)
    x = jt.array(rng.standard_normal((batch, 4, 3, 5)).astype(np.float32))
    y1, y2 = pointwise(x), conv(x)
    assert np.abs(y1.numpy() - y2.numpy()).max() < 1e-5
    grads1 = jt.grad((y1 * y1).sum(), [x, pointwise.weight, pointwise.bias])
    grads2 = jt.grad((y2 * y2).sum(), [x, conv.weight, conv.bias])
    for g1, g2 in zip(grads1, grads2):
        assert np.abs(g1.numpy() - g2.numpy()).max() < 1e-4


def test_train_mode_matches_eval_mode():
    """BN stays in eval and drop path is 0 for S1: training forward (no bias cache) = eval forward."""
    model = seeded_model('s1', 2, resolution=64)
    x = jt.array(seeded_input((1, 3, 64, 128), 12))
    model.eval()
    expected = [o.numpy() for o in model(x)]
    model.train()
    for out, ref in zip(model(x), expected):
        assert rel_error(out.numpy(), ref) < 1e-6


# ---------------------------------------------------------------------------------------------
# modes, gradients, caches


class _Wrapper(nn.Module):
    def __init__(self, backbone):
        self.backbone = backbone

    def execute(self, x):
        return self.backbone(x)


def test_train_keeps_batchnorm_in_eval():
    model = seeded_model('s0', 3)
    parent = _Wrapper(model)
    for switch in (model.train, parent.train):  # Jittor's train() never calls the child's train()
        switch()
        assert model.is_training()
        norms = batch_norms(model)
        assert len(norms) > 50 and not any(bn.is_training() for bn in norms)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items() if 'running_' in k}
    parent(jt.randn(2, 3, 32, 32))[-1].sync()
    after = {k: v.numpy() for k, v in model.state_dict().items() if 'running_' in k}
    assert all((before[k] == after[k]).all() for k in before)

    model.norm_eval = False
    parent.train()
    assert all(bn.is_training() for bn in batch_norms(model))
    parent(jt.randn(2, 3, 32, 32))[-1].sync()
    after = {k: v.numpy() for k, v in model.state_dict().items() if 'running_' in k}
    assert any((before[k] != after[k]).any() for k in before)
    model.eval()
    assert not any(bn.is_training() for bn in batch_norms(model))


def test_gradients_reach_every_trainable_parameter():
    model = seeded_model('s0', 3).train()          # 64x64: non-native size, bias resize in the graph
    outs = model(jt.array(seeded_input((2, 3, 64, 64), 5)))
    loss = sum((o * jt.array(seeded_input(o.shape, 6 + i))).sum() for i, o in enumerate(outs))
    named = model.state_dict()
    trainable = {k: v for k, v in named.items() if not v.is_stop_grad()}
    frozen = set(named) - set(trainable)
    assert frozen == {k for k in named if k.rsplit('.', 1)[-1] in (
        'running_mean', 'running_var', 'attention_biases', 'attention_bias_idxs', 'attention_bias_idxs_seg')}
    grads = jt.grad(loss, list(trainable.values()))
    dead = [k for k, g in zip(trainable, grads) if not np.abs(g.numpy()).max() > 0]
    assert dead == []
    assert any(k.endswith('attention_biases_seg') for k in trainable)


def test_optimizer_leaves_index_and_legacy_buffers_alone():
    model = seeded_model('s0', 3).train()
    buffers = {k: v.numpy().copy() for k, v in model.state_dict().items()
               if k.rsplit('.', 1)[-1] in ('attention_biases', 'attention_bias_idxs', 'attention_bias_idxs_seg')}
    assert len(buffers) == 3 * 5
    optimizer = jt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    outs = model(jt.randn(1, 3, 32, 32))
    optimizer.step(sum(o.sum() for o in outs))
    state = model.state_dict()
    assert all((state[k].numpy() == v).all() for k, v in buffers.items())


def test_weight_changes_refresh_the_cached_bias():
    x = jt.array(seeded_input((1, 3, 64, 64), 11))
    model = seeded_model('s1', 1, resolution=64).eval()
    first = model(x)[3].numpy()
    model(x)                                                    # served from the cache
    attn = model.network[6][5].token_mixer
    assert attn._bias_cache is not None

    other = seeded_model('s1', 7, resolution=64).eval()
    expected = other(x)[3].numpy()
    load_state_dict(model, other.state_dict())                  # the loader calls invalidate_cache()
    assert rel_error(model(x)[3].numpy(), expected) < 1e-6

    table = attn.attention_biases_seg                           # direct assignment: cache key changes
    table.assign(table + jt.array(seeded_input(table.shape, 3)))  # (a constant would cancel in softmax)
    changed = model(x)[3].numpy()
    assert rel_error(changed, expected) > 1e-3
    fresh = EfficientFormerV2('s1', resolution=64).eval()
    load_state_dict(fresh, model.state_dict())
    assert rel_error(fresh(x)[3].numpy(), changed) < 1e-6
    assert rel_error(first, expected) > 1e-3


# ---------------------------------------------------------------------------------------------
# weights and options


def _write_pth(path, state):
    sys.path.insert(0, TESTS_UTILS)
    try:
        import torch_format_writer
    finally:
        sys.path.remove(TESTS_UTILS)
    torch_format_writer.save_zip({'model': state}, str(path))


def test_init_weights_loads_official_imagenet_layout(tmp_path):
    source = seeded_model('s0', 4)
    state = {k: v.numpy() for k, v in source.state_dict().items()
             if not k.endswith('_seg')}                          # ImageNet files have no *_seg keys
    state['head.weight'] = np.zeros((1000, 176), np.float32)     # classifier: unexpected, reported
    state['dist_head.bias'] = np.zeros(1000, np.float32)
    path = tmp_path / 'eformer_s0_450.pth'
    _write_pth(path, state)

    model = MODELS.build(dict(type='efficientformerv2_s0_feat',
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    report = model.init_weights()
    assert sorted(report.unexpected) == ['dist_head.bias', 'head.weight']
    assert all(k.endswith('_seg') for k in report.missing)
    loaded = model.state_dict()
    for key in ['patch_embed.0.weight', 'network.6.3.token_mixer.v.1.running_var', 'network.5.attn.q.local.0.weight']:
        assert (loaded[key].numpy() == state[key]).all()
    assert (loaded['network.5.attn.attention_biases_seg'].numpy() == 0).all()
    assert (loaded['network.5.attn.attention_bias_idxs_seg'].numpy()
            == ops.relative_offset_index(16, 32, 2)[0]).all()


def test_init_weights_without_checkpoint_is_the_official_random_init():
    model = EfficientFormerV2('s0')
    assert model.init_weights() is None
    fc1 = model.network[0][0].mlp.fc1
    assert abs(float(fc1.weight.numpy().std()) - 0.02) < 0.004 and (fc1.bias.numpy() == 0).all()
    ls = model.network[6][3].layer_scale_1.numpy()
    assert ls.shape == (176, 1, 1) and np.allclose(ls, 1e-5)


def test_missing_pretrained_file_raises_one_clear_error(tmp_path):
    path = str(tmp_path / 'missing' / 'eformer_s1_450.pth')
    model = EfficientFormerV2('s1', pretrained=path)
    with pytest.raises(FileNotFoundError, match='eformer_s1_450.pth'):
        model.init_weights()


@pytest.mark.parametrize('kwargs, error', [
    (dict(fork_feat=False), ValueError),
    (dict(use_layer_scale=False), ValueError),
    (dict(arch='xl'), KeyError),
    (dict(init_cfg=dict(type='Kaiming')), ValueError),
    (dict(init_cfg=dict(type='Pretrained', checkpoint='a'), pretrained='b'), ValueError),
    (dict(num_classes=1000), TypeError),
])
def test_rejected_options(kwargs, error):
    with pytest.raises(error):
        EfficientFormerV2(**kwargs)


def test_odd_stride16_feature_map_is_rejected():
    model = EfficientFormerV2('s0').eval()
    with pytest.raises(ValueError, match='even'):
        model(jt.randn(1, 3, 48, 64))                 # ceil(48 / 16) = 3
