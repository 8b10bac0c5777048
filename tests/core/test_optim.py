"""Optimizers follow PyTorch's update rules; paramwise custom_keys follow mmengine's matching rule."""
import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.runner.optim import build_optimizer, param_groups


class Net(nn.Module):
    def __init__(self):
        self.backbone = nn.Sequential(nn.Linear(3, 4))
        self.backbone_norm = nn.Linear(4, 4)  # name contains 'norm'
        self.decode_head = nn.Linear(4, 2)
        self.pos_block = nn.Linear(2, 2)

    def execute(self, x):
        return self.pos_block(self.decode_head(self.backbone_norm(self.backbone(x))))


CUSTOM = {'pos_block': dict(decay_mult=0.), 'norm': dict(decay_mult=0.), 'head': dict(lr_mult=10.)}


def test_custom_keys_longest_first_then_alphabetical():
    groups = param_groups(Net(), base_lr=1.0, base_wd=0.5, paramwise_cfg=dict(custom_keys=CUSTOM))
    by_name = {n: (g['lr'], g['weight_decay']) for g in groups for n in g['names']}
    assert by_name['backbone.0.weight'] == (1.0, 0.5)
    assert by_name['backbone_norm.weight'] == (1.0, 0.0)
    assert by_name['decode_head.weight'] == (10.0, 0.5)
    assert by_name['pos_block.bias'] == (1.0, 0.0)  # 'pos_block' (longest) wins
    with pytest.raises(ValueError, match='unknown options'):
        param_groups(Net(), 1.0, 0.0, dict(custom_keys={'x': dict(lr=1)}))


def _run(optimizer_cfg, steps=4):
    jt.set_seed(0)
    w = jt.array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))

    class M(nn.Module):
        def __init__(self):
            self.w = w

    model = M()
    opt, _ = build_optimizer(model, dict(optimizer=optimizer_cfg))
    xs = [np.random.RandomState(i).randn(2, 3).astype(np.float32) for i in range(steps)]
    for x in xs:
        loss = (model.w * jt.array(x)).sum() + (model.w * model.w).sum() * 0.5
        opt.step(loss)
    return model.w.numpy(), xs


def test_adamw_matches_pytorch_rule():
    cfg = dict(type='AdamW', lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    got, xs = _run(cfg)
    p = np.linspace(-1, 1, 6).reshape(2, 3)
    expect_p = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, x in enumerate(xs, 1):
        g = x + expect_p  # gradient of sum(w * x) + 0.5 * |w|^2
        expect_p = expect_p * (1 - 0.1 * 0.05)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        expect_p = expect_p - 0.1 / (1 - 0.9 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.99 ** t) + 1e-8)
    np.testing.assert_allclose(got, expect_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_matches_pytorch_rule(nesterov):
    cfg = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
    got, xs = _run(cfg)
    p = np.linspace(-1, 1, 6).reshape(2, 3)
    buf = None
    for x in xs:
        g = x + p + 1e-2 * p
        buf = g.copy() if buf is None else 0.9 * buf + g
        p = p - 0.05 * ((g + 0.9 * buf) if nesterov else buf)
    np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-6)


def test_bad_optim_wrapper_is_rejected():
    with pytest.raises(ValueError, match='unknown keys'):
        build_optimizer(Net(), dict(optimizer=dict(type='SGD', lr=0.1), bogus=1))
    with pytest.raises(ValueError, match='clip_grad'):
        build_optimizer(Net(), dict(optimizer=dict(type='SGD', lr=0.1), clip_grad=dict(norm=1)))
