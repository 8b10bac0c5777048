"""LightHamHead, LightHamHeadOffsetLearning and NMF2D: names, shapes, update rule, gradients."""
import json
import os

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.decode_heads.ham_head import NMF2D
from jseg.registry import MODELS

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, '..', 'fixtures', 'segnext', 'official_head_state_dict_shapes.json')

GN8 = dict(type='GN', num_groups=8, requires_grad=True)
TINY = dict(in_channels=[8, 16, 24], in_index=[1, 2, 3], channels=16, ham_channels=16, num_classes=5,
            norm_cfg=GN8, ham_kwargs=dict(MD_S=1, MD_R=4, train_steps=6, eval_steps=7, inv_t=100, rand_init=True))
# the SegNeXt-T head of the official configs (ADE20K)
TINY_T = dict(in_channels=[64, 160, 256], in_index=[1, 2, 3], channels=256, ham_channels=256, num_classes=150,
              dropout_ratio=0.1, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True), align_corners=False,
              ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7, inv_t=100, rand_init=True))


def build(kind, **cfg):
    return MODELS.build(dict(type=kind, **cfg))


def feats(batch=2, size=(8, 10)):
    h, w = size
    levels = [jt.randn(batch, 4, 2 * h, 2 * w)]                 # stride-4 level, not selected
    return levels + [jt.randn(batch, c, -(-h // 2 ** i), -(-w // 2 ** i)) for i, c in enumerate([8, 16, 24])]


def num_params(model):
    return sum(int(np.prod(v.shape)) for k, v in model.state_dict().items() if 'running_' not in k)


def nmf_reference(x, bases, steps):
    """NumPy float64 multiplicative updates, as the official NMF2D (inv_t = 1)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h * w).astype(np.float64)
    bases = bases.astype(np.float64)
    logits = x.transpose(0, 2, 1) @ bases
    coef = np.exp(logits - logits.max(-1, keepdims=True))
    coef /= coef.sum(-1, keepdims=True)

    def coef_step(bases, coef):
        return coef * (x.transpose(0, 2, 1) @ bases) / (coef @ (bases.transpose(0, 2, 1) @ bases) + 1e-6)

    for _ in range(steps):
        coef = coef_step(bases, coef)
        bases = bases * (x @ coef) / (bases @ (coef.transpose(0, 2, 1) @ coef) + 1e-6)
    coef = coef_step(bases, coef)
    return (bases @ coef.transpose(0, 2, 1)).reshape(b, c, h, w)


@pytest.fixture
def fixed_bases(monkeypatch):
    """Replace the random bases by seeded ones (as the parity test does)."""
    rng = np.random.default_rng(0)
    table = {}

    def build_bases(self, batch, S, D, R):
        if (D, R) not in table:
            raw = rng.uniform(0, 1, (1, D, R))
            table[(D, R)] = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
        return jt.array(np.repeat(table[(D, R)], batch * S, axis=0))

    monkeypatch.setattr(NMF2D, '_build_bases', build_bases)
    return table


@pytest.mark.parametrize('kind,key', [('LightHamHead', 'light_ham_head_t'),
                                      ('LightHamHeadOffsetLearning', 'light_ham_head_offset_learning_t')])
def test_state_dict_equals_official(kind, key):
    with open(FIXTURE) as f:
        expected = {k: tuple(s) for k, s in json.load(f)[key]}
    assert {k: tuple(v.shape) for k, v in build(kind, **TINY_T).state_dict().items()} == expected


def test_output_shapes():
    x = feats(size=(8, 10))
    for kind in ['LightHamHead', 'LightHamHeadOffsetLearning']:
        assert tuple(build(kind, **TINY).eval()(x).shape) == (2, 5, 8, 10)


def test_nmf_matches_the_multiplicative_update_rule(fixed_bases):
    nmf = NMF2D(MD_R=4, inv_t=100)
    assert nmf.inv_t == 1                                       # the official NMF2D ignores inv_t
    x = np.random.default_rng(1).uniform(0, 1, (2, 16, 3, 5)).astype(np.float32)
    for train, steps in [(True, 6), (False, 7)]:
        nmf.train() if train else nmf.eval()
        out = nmf(jt.array(x)).numpy()
        bases = np.repeat(fixed_bases[(16, 4)], 2, axis=0)
        expected = nmf_reference(x, bases, steps)
        assert np.abs(out - expected).max() / np.abs(expected).max() < 1e-4
        other = nmf_reference(x, bases, 13 - steps)            # the other mode's step count differs
        assert np.abs(out - other).max() / np.abs(expected).max() > 1e-4


def test_nmf_groups_and_random_bases():
    """MD_S splits channels into groups; fresh random bases each call (rand_init), unit norm over D."""
    nmf = NMF2D(MD_S=2, MD_R=3).eval()
    bases = nmf._build_bases(2, 2, 8, 3).numpy()
    assert bases.shape == (4, 8, 3) and (bases >= 0).all()
    assert np.allclose(np.linalg.norm(bases, axis=1), 1, atol=1e-5)
    x = jt.array(np.random.default_rng(2).uniform(0, 1, (2, 16, 4, 4)).astype(np.float32))
    first, second = nmf(x).numpy(), nmf(x).numpy()
    assert first.shape == (2, 16, 4, 4) and (first >= 0).all()
    assert np.abs(first - second).max() > 0


def test_fixed_bases_are_a_buffer():
    """rand_init=False: bases drawn once, kept as the (S, D, R) buffer 'bases', never trained."""
    head = build('LightHamHead', **dict(TINY, ham_kwargs=dict(MD_R=4, rand_init=False))).eval()
    bases = head.state_dict()['hamburger.ham.bases']
    assert tuple(bases.shape) == (1, 16, 4) and bases.is_stop_grad()
    x = feats(batch=1)
    assert np.abs(head(x).numpy() - head(x).numpy()).max() == 0


def test_gradient_flows_through_every_update_step(fixed_bases):
    """Official mmseg 1.x / OffSeg: no no_grad around the iterations; one_step_grad=True is HamNet's variant."""
    x0 = np.random.default_rng(3).uniform(0.1, 1, (1, 8, 3, 3)).astype(np.float32)
    weight = jt.array(np.random.default_rng(4).standard_normal((1, 8, 3, 3)).astype(np.float32))
    grads = {}
    for one_step in (False, True):
        nmf = NMF2D(MD_R=2, one_step_grad=one_step).eval()
        x = jt.array(x0)
        grads[one_step] = jt.grad((nmf(x) * weight).sum(), x).numpy().astype(np.float64)
    # finite differences of the NumPy reference agree with the full gradient only
    bases = fixed_bases[(8, 2)]
    numeric = np.zeros_like(x0, dtype=np.float64)
    for idx in np.ndindex(x0.shape):
        plus, minus = x0.astype(np.float64), x0.astype(np.float64)
        plus[idx] += 1e-5
        minus[idx] -= 1e-5
        numeric[idx] = ((nmf_reference(plus, bases, 7) - nmf_reference(minus, bases, 7))
                        * weight.numpy()).sum() / 2e-5
    scale = np.abs(numeric).max()
    assert np.abs(grads[False] - numeric).max() / scale < 1e-3
    assert np.abs(grads[True] - numeric).max() / scale > 1e-2


@pytest.mark.parametrize('kind', ['LightHamHead', 'LightHamHeadOffsetLearning'])
def test_gradient_reaches_every_used_parameter(kind):
    head = build(kind, **TINY)
    head.train()
    loss = head.loss(feats(size=(8, 8)), jt.randint(0, 5, (2, 32, 32)))['loss_ce']
    named = [(n, p) for n, p in head.named_parameters() if not p.is_stop_grad()]
    grads = jt.grad(loss, [p for _, p in named])
    zero = {n for (n, _), g in zip(named, grads) if np.abs(g.numpy()).max() == 0}
    assert zero == set(head.unused_parameter_names())
    assert zero == (set() if kind == 'LightHamHead' else {'conv_seg.weight', 'conv_seg.bias'})


@pytest.mark.parametrize('cfg', [TINY, TINY_T])
def test_parameter_difference_is_the_offset_learning_module(cfg):
    k, c = cfg['num_classes'], cfg['channels']
    diff = num_params(build('LightHamHeadOffsetLearning', **cfg)) - num_params(build('LightHamHead', **cfg))
    assert diff == k * c + 2 * c * c + 2 * k


def test_init_weights():
    jt.set_global_seed(6)
    head = build('LightHamHead', **TINY_T)
    head.init_weights()
    sd = {k: v.numpy() for k, v in head.state_dict().items()}
    assert abs(sd['conv_seg.weight'].std() - 0.01) < 0.001
    assert abs(sd['hamburger.ham_in.conv.weight'].std() - np.sqrt(2.0 / 256)) < 0.005
    assert (sd['hamburger.ham_in.conv.bias'] == 0).all()
    assert (sd['align.gn.weight'] == 1).all() and (sd['squeeze.gn.bias'] == 0).all()
