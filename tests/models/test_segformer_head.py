"""SegformerHead and SegformerHeadOffsetLearning: names, shapes, gradient flow, offset learning size."""
import json
import os

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.registry import MODELS

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, '..', 'fixtures', 'segformer', 'official_head_state_dict_shapes.json')

# tiny heads for shapes and gradients: 4 levels of 8/16/24/32 channels, 16 channels, 5 classes
TINY = dict(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=16, num_classes=5,
            norm_cfg=dict(type='BN'), align_corners=False)
# the SegFormer-B0 head of the official configs (ADE20K: 150 classes, SyncBN)
B0 = dict(in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3], channels=256, num_classes=150,
          norm_cfg=dict(type='SyncBN', requires_grad=True), dropout_ratio=0.1, align_corners=False)


def build(kind, **cfg):
    return MODELS.build(dict(type=kind, **cfg))


def feats(batch=2, size=(16, 20), channels=(8, 16, 24, 32)):
    h, w = size
    return [jt.randn(batch, c, -(-h // 2 ** i), -(-w // 2 ** i)) for i, c in enumerate(channels)]


def num_params(model):
    return sum(int(np.prod(v.shape)) for k, v in model.state_dict().items() if 'running_' not in k)


@pytest.mark.parametrize('kind,key', [('SegformerHead', 'segformer_head_b0'),
                                      ('SegformerHeadOffsetLearning', 'segformer_head_offset_learning_b0')])
def test_state_dict_equals_official(kind, key):
    with open(FIXTURE) as f:
        expected = {k: tuple(s) for k, s in json.load(f)[key] if not k.endswith('num_batches_tracked')}
    assert {k: tuple(v.shape) for k, v in build(kind, **B0).state_dict().items()} == expected


def test_output_shapes():
    x = feats(size=(16, 20))
    base, ol = build('SegformerHead', **TINY).eval(), build('SegformerHeadOffsetLearning', **TINY).eval()
    assert tuple(base(x).shape) == (2, 5, 16, 20)              # 1/4 of the image
    assert tuple(ol(x).shape) == (2, 5, 8, 10)                 # max-pooled to 1/8
    x = feats(batch=1, size=(15, 9))                          # odd: the 2x2 max-pool floors
    assert tuple(base(x).shape) == (1, 5, 15, 9)
    assert tuple(ol(x).shape) == (1, 5, 7, 4)


def test_offset_head_is_maxpool_then_offset_learning():
    jt.set_global_seed(0)
    head = build('SegformerHeadOffsetLearning', **TINY).eval()
    x = feats(batch=1, size=(8, 8))
    fused = head.fuse(x).numpy()                               # (1, 16, 8, 8)
    pooled = fused.reshape(1, 16, 4, 2, 4, 2).max(axis=(3, 5))
    expected = head.offset_learning(jt.array(pooled)).numpy()
    assert np.abs(head(x).numpy() - expected).max() < 1e-5


@pytest.mark.parametrize('kind', ['SegformerHead', 'SegformerHeadOffsetLearning'])
def test_gradient_reaches_every_used_parameter(kind):
    """All parameters get a non-zero gradient, except those the head declares unused (its conv_seg)."""
    head = build(kind, **TINY)
    head.train()
    x = feats(size=(16, 16))
    loss = head.loss(x, jt.randint(0, 5, (2, 32, 32)))['loss_ce']
    named = [(n, p) for n, p in head.named_parameters() if not p.is_stop_grad()]
    grads = jt.grad(loss, [p for _, p in named])
    unused = set(head.unused_parameter_names())
    zero = {n for (n, _), g in zip(named, grads) if np.abs(g.numpy()).max() == 0}
    assert zero == unused
    if kind == 'SegformerHead':
        assert not unused
    else:
        assert unused == {'conv_seg.weight', 'conv_seg.bias'}


@pytest.mark.parametrize('cfg', [TINY, B0])
def test_parameter_difference_is_the_offset_learning_module(cfg):
    """The official offset head keeps conv_seg, so it adds exactly K*C + 2*C^2 + 2*K parameters."""
    k, c = cfg['num_classes'], cfg['channels']
    diff = num_params(build('SegformerHeadOffsetLearning', **cfg)) - num_params(build('SegformerHead', **cfg))
    assert diff == k * c + 2 * c * c + 2 * k          # cls_repr, two C x C offset projections, mask_norm


def test_init_weights():
    """conv_seg N(0, 0.01) (BaseDecodeHead's init_cfg); 1x1 ConvModules Kaiming-normal fan_out, norm 1/0."""
    jt.set_global_seed(5)
    head = build('SegformerHead', **B0)
    head.init_weights()
    sd = {k: v.numpy() for k, v in head.state_dict().items()}
    assert abs(sd['conv_seg.weight'].std() - 0.01) < 0.001 and (sd['conv_seg.bias'] == 0).all()
    assert abs(sd['fusion_conv.conv.weight'].std() - np.sqrt(2.0 / 256)) < 0.005
    assert (sd['convs.2.bn.weight'] == 1).all() and (sd['convs.2.bn.bias'] == 0).all()
