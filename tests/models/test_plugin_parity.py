"""SegFormer-B0 and SegNeXt-T, baseline and offset learning, against the official PyTorch code.

The official models (OffSeg's mmseg 1.x files) were run in PyTorch on weights drawn
by :func:`seeded_array` and a seeded 1x3x64x64 image; tests/fixtures/{segformer,segnext}
hold their backbone outputs, logits (19 classes) and the gradient of
``sum(logits * r)`` (r seeded) with respect to the image, in eval mode. Here the
same weights go through a PyTorch-format checkpoint file with the official
segmentor names (``backbone.*``, ``decode_head.*``, BatchNorm counters included),
are loaded by ``load_checkpoint`` and the outputs compared.
"""
import os
import sys
import zlib

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.decode_heads.ham_head import NMF2D
from jseg.registry import MODELS
from jseg.runner.checkpoint import load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures')
TESTS_UTILS = os.path.join(HERE, '..', 'utils')
SEED = 2025
NUM_CLASSES = 19

SEGFORMER_HEAD = dict(in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3], channels=256, num_classes=NUM_CLASSES,
                      norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False)
HAM_HEAD = dict(in_channels=[64, 160, 256], in_index=[1, 2, 3], channels=256, ham_channels=256,
                num_classes=NUM_CLASSES, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
                align_corners=False,
                ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7, inv_t=100, rand_init=True))
CASES = {
    'segformer_head': ('segformer/segformer_b0_parity.npz', dict(type='MixVisionTransformer', arch='b0'),
                       dict(type='SegformerHead', **SEGFORMER_HEAD)),
    'segformer_head_offset_learning': ('segformer/segformer_b0_parity.npz',
                                       dict(type='MixVisionTransformer', arch='b0'),
                                       dict(type='SegformerHeadOffsetLearning', **SEGFORMER_HEAD)),
    'light_ham_head': ('segnext/segnext_t_parity.npz', dict(type='MSCAN', arch='t', norm_cfg=dict(type='BN')),
                       dict(type='LightHamHead', **HAM_HEAD)),
    'light_ham_head_offset_learning': ('segnext/segnext_t_parity.npz',
                                       dict(type='MSCAN', arch='t', norm_cfg=dict(type='BN')),
                                       dict(type='LightHamHeadOffsetLearning', **HAM_HEAD)),
}


def seeded_array(key, shape, seed):
    """Deterministic weights for one state-dict entry, from its name (the fixtures' rule).

    running_var U(0.5, 1.5); running_mean 0.1 N; layer scales U(0.05, 0.3);
    tensors of rank >= 2 N(0, 1 / fan_in) (fan_in = C for cls_repr); other
    weights 1 + 0.1 N; other vectors 0.1 N. One generator per name:
    ``default_rng([seed, crc32(name)])``.
    """
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    shape = tuple(shape)
    if key.endswith('running_var'):
        a = rng.uniform(0.5, 1.5, shape)
    elif key.endswith('running_mean'):
        a = 0.1 * rng.standard_normal(shape)
    elif 'layer_scale' in key:
        a = rng.uniform(0.05, 0.3, shape)
    elif len(shape) >= 2:
        fan_in = shape[-1] if key.endswith('cls_repr') else int(np.prod(shape[1:]))
        a = rng.standard_normal(shape) / np.sqrt(fan_in)
    elif key.endswith('weight'):
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        a = 0.1 * rng.standard_normal(shape)
    return a.astype(np.float32)


def seeded_bases(batch):
    """The NMF bases the fixture used instead of random ones: (batch, 256, 16), unit norm over D."""
    raw = np.random.default_rng([SEED, 3]).uniform(0, 1, (1, 256, 16))
    raw = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    return jt.array(np.repeat(raw.astype(np.float32), batch, axis=0))


def official_checkpoint(model, path):
    """A torch.save zip file of ``model``'s seeded weights under the official names."""
    sys.path.insert(0, TESTS_UTILS)
    try:
        import torch_format_writer
    finally:
        sys.path.remove(TESTS_UTILS)
    state = {}
    for name, value in model.state_dict().items():
        state[name] = seeded_array(name, value.shape, SEED)
        if name.endswith('running_var'):                     # PyTorch BatchNorms carry a counter
            state[name.replace('running_var', 'num_batches_tracked')] = np.array(1000, np.int64)
    torch_format_writer.save_zip({'meta': {'iter': 160000}, 'state_dict': state}, str(path))


def rel_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize('head', sorted(CASES))
def test_matches_official(head, tmp_path, monkeypatch):
    fixture, backbone, decode_head = CASES[head]
    ref = np.load(os.path.join(FIXTURES, fixture))
    monkeypatch.setattr(NMF2D, '_build_bases', lambda self, batch, S, D, R: seeded_bases(batch * S))
    model = MODELS.build(dict(type='EncoderDecoder', backbone=backbone, decode_head=decode_head))
    path = tmp_path / 'official.pth'
    official_checkpoint(model, path)
    report, _ = load_checkpoint(model, str(path), strict=True)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    model.eval()

    image = jt.array(np.random.default_rng([SEED, 1]).standard_normal((1, 3, 64, 64)).astype(np.float32))
    feats = model.backbone(image)
    for i, feat in enumerate(feats):
        assert rel_error(feat.numpy(), ref[f'backbone_{i}']) < 2e-5
    logits = model.decode_head(feats)
    assert rel_error(logits.numpy(), ref[f'{head}_logits']) < 1e-4
    r = jt.array(np.random.default_rng([SEED, 7]).standard_normal(tuple(logits.shape)).astype(np.float32))
    grad = jt.grad((logits * r).sum(), image)
    assert rel_error(grad.numpy(), ref[f'{head}_image_grad']) < 2e-4
