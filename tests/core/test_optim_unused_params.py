"""Parameters the forward never uses get no update, as PyTorch's AdamW skips a parameter whose grad is None.

Without this, jseg's AdamW would shrink them by (1 - lr * weight_decay) every step.
"""
import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.runner.optim import build_optimizer, unused_parameter_names


class Head(nn.Module):
    def __init__(self):
        self.used = nn.Linear(2, 2)
        self.conv_seg = nn.Linear(2, 2)  # kept for checkpoints, never called

    def unused_parameter_names(self):
        return ['conv_seg.weight', 'conv_seg.bias']

    def execute(self, x):
        return self.used(x)


class Model(nn.Module):
    def __init__(self):
        self.decode_head = Head()

    def execute(self, x):
        return self.decode_head(x)


@pytest.mark.parametrize('opt', [dict(type='AdamW', lr=0.1, weight_decay=0.5),
                                 dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.5)])
def test_unused_parameters_get_no_update(opt):
    model = Model()
    assert unused_parameter_names(model) == ['decode_head.conv_seg.weight', 'decode_head.conv_seg.bias']
    before = model.decode_head.conv_seg.weight.numpy().copy()
    used_before = model.decode_head.used.weight.numpy().copy()
    optimizer, _ = build_optimizer(model, dict(optimizer=opt))
    assert all('conv_seg' not in n for g in optimizer.param_groups for n in g['names'])
    for _ in range(2):
        optimizer.step(model(jt.ones((1, 2))).sum())
    np.testing.assert_array_equal(model.decode_head.conv_seg.weight.numpy(), before)
    assert not np.allclose(model.decode_head.used.weight.numpy(), used_before)


def test_amp_settings_are_rejected():
    with pytest.raises(ValueError, match='AmpOptimWrapper.*float32'):
        build_optimizer(Model(), dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1)))
    for key, value in (('loss_scale', 'dynamic'), ('dtype', 'float16')):
        with pytest.raises(ValueError, match=key):
            build_optimizer(Model(), dict(optimizer=dict(type='SGD', lr=0.1), **{key: value}))
