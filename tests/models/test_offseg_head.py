"""OffSegHead: parity with the official head (committed fixture), layout, unused conv_seg."""
import os
import warnings

import jittor as jt
import numpy as np
from model_helpers import is_buffer, max_errors, seeded_inputs, seeded_params

from jseg.registry import MODELS
from jseg.runner.checkpoint import load_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'offseg_head')
# OffSeg-T head (local_configs/offseg/Tiny), 19 classes
TINY_HEAD = dict(type='OffSegHead', in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128],
                 in_index=[0, 1, 2, 3], channels=256, dropout_ratio=0.1, num_classes=19,
                 norm_cfg=dict(type='GN', num_groups=32, requires_grad=True), align_corners=False,
                 loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
# backbone levels of a 64x96 image, batch 2
FEATURE_SHAPES = [(2, 32, 16, 24), (2, 48, 8, 12), (2, 120, 4, 6), (2, 224, 2, 3)]


def build_head(cfg=TINY_HEAD):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        head = MODELS.build(cfg)
    jt.sync_all()  # materialise the lazily computed init values once
    return head


def test_offseg_head_matches_official():
    fixture = np.load(os.path.join(FIXTURES, 'offseg_t_head.npz'))
    head = build_head()
    head.eval()
    state = {k: v.numpy() for k, v in head.state_dict().items()}
    shapes = {k: v.shape for k, v in state.items() if not is_buffer(k)}
    assert sorted(shapes) == list(fixture['param_names'])               # official parameter names
    state.update(seeded_params(shapes, 0))
    load_state_dict(head, state, strict=True)
    np.testing.assert_array_equal(head.freqfusions[0].dysampler.init_pos.numpy(), fixture['init_pos'])
    out = head([jt.array(f) for f in seeded_inputs(FEATURE_SHAPES, 100)]).numpy()
    abs_err, rel_err = max_errors(out, fixture['output'])
    assert out.shape == (2, 19, 16, 24)
    assert abs_err < 1e-4 and rel_err < 2e-5, (abs_err, rel_err)


def test_offseg_head_layout():
    head = build_head()
    state = head.state_dict()
    assert len(state) == 91
    # compressed channels (lr + hr) // 4 along the cascade 128 -> 64 -> 32 -> 32
    assert [ff.compressed_channels for ff in head.freqfusions] == [48, 56, 64]
    assert state['freqfusions.2.lr_channel_compressor.weight'].shape == (64, 224, 1, 1)
    assert state['align.conv.weight'].shape == (256, 256, 1, 1) and 'align.gn.weight' in state
    assert state['pre.3.gn.weight'].shape == (128,)
    assert state['offset_learning.cls_repr'].shape == (1, 19, 256)
    assert head.unused_parameter_names() == ['conv_seg.weight', 'conv_seg.bias']
    assert all(name in state for name in head.unused_parameter_names())


def test_conv_seg_is_unused():
    head = build_head()
    feats = [jt.array(f) for f in seeded_inputs(FEATURE_SHAPES, 5)]
    before = head(feats).numpy()
    head.conv_seg.weight.assign(jt.ones_like(head.conv_seg.weight) * 100)
    np.testing.assert_array_equal(head(feats).numpy(), before)
