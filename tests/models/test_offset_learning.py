"""Offset learning against a direct float64 NumPy evaluation of the official formulas."""
import jittor as jt
import numpy as np
import pytest

from jseg.models.utils.offset_learning import OffsetLearning, OffsetLearningMask
from jseg.ops import offset_attention, offset_attention_reference, set_offset_attention_kernel


def softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def numpy_offset_align(E, W, P_cls, P_feat):
    """Official Offset_Learning math on E (B, HW, C), W (B, K, C); Linear(x) = x P^T."""
    A = E @ W.transpose(0, 2, 1)                                   # (B, HW, K) coupled attention
    A_cls = softmax(A, 1).transpose(0, 2, 1)                       # softmax over positions -> (B, K, HW)
    A_pos = softmax(A, 2)                                          # softmax over classes
    W_adj = W + (A_cls @ E) @ P_cls.T
    E_adj = E + (A_pos @ W) @ P_feat.T
    return W_adj, E_adj


def random_module(module, rng):
    params = {}
    for name, var in module.state_dict().items():
        if name == 'mask_norm.weight':
            value = 1 + 0.2 * rng.randn(*var.shape)
        elif name == 'cls_repr':
            value = rng.randn(*var.shape)
        else:
            value = rng.randn(*var.shape) * (0.3 if var.ndim == 2 else 0.5)
        params[name] = value
        var.assign(jt.array(value.astype(np.float32)))
    return params


@pytest.mark.parametrize('shape', [(2, 8, 3, 5, 6), (1, 16, 4, 4, 3)])
def test_offset_learning_matches_numpy(shape):
    b, c, h, w, k = shape
    rng = np.random.RandomState(0)
    module = OffsetLearning(k, c)
    p = random_module(module, rng)
    x = rng.randn(b, c, h, w).astype(np.float32)
    out = module(jt.array(x)).numpy()

    E = x.astype(np.float64).transpose(0, 2, 3, 1).reshape(b, h * w, c)
    W = np.broadcast_to(p['cls_repr'], (b, k, c))
    W_adj, E_adj = numpy_offset_align(E, W, p['cls_offset_proj.weight'], p['feat_offset_proj.weight'])
    masks = E_adj @ W_adj.transpose(0, 2, 1)                        # (B, HW, K)
    masks = (masks - masks.mean(2, keepdims=True)) / np.sqrt(masks.var(2, keepdims=True) + 1e-5)
    masks = masks * p['mask_norm.weight'] + p['mask_norm.bias']
    expected = masks.transpose(0, 2, 1).reshape(b, k, h, w)
    assert out.shape == (b, k, h, w)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-5)


def test_offset_learning_mask_matches_numpy():
    b, c, h, w, k = 2, 8, 3, 4, 5
    rng = np.random.RandomState(1)
    module = OffsetLearningMask(c)
    p = random_module(module, rng)
    embed = rng.randn(b, k, c).astype(np.float32)
    feats = rng.randn(b, c, h, w).astype(np.float32)
    cls_out, feat_out = module(jt.array(embed), jt.array(feats))
    E = feats.astype(np.float64).transpose(0, 2, 3, 1).reshape(b, h * w, c)
    W_adj, E_adj = numpy_offset_align(E, embed.astype(np.float64), p['cls_offset_proj.weight'],
                                      p['feat_offset_proj.weight'])
    np.testing.assert_allclose(cls_out.numpy(), W_adj, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feat_out.numpy(), E_adj.reshape(b, h, w, c).transpose(0, 3, 1, 2),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('impl', [offset_attention, offset_attention_reference])
def test_offset_attention_layouts_and_batching(impl):
    b, n, c, k = 3, 7, 4, 5
    rng = np.random.RandomState(2)
    E = rng.randn(b, n, c).astype(np.float32)
    W = rng.randn(b, k, c).astype(np.float32)
    f_cls, f_pos = impl(jt.array(E), jt.array(W))
    A = E.astype(np.float64) @ W.astype(np.float64).transpose(0, 2, 1)
    np.testing.assert_allclose(f_cls.numpy(), softmax(A, 1).transpose(0, 2, 1) @ E, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f_pos.numpy(), softmax(A, 2) @ W, rtol=1e-4, atol=1e-5)
    f_cls_cf, f_pos_cf = impl(jt.array(E.transpose(0, 2, 1).copy()), jt.array(W), channels_first=True)
    np.testing.assert_allclose(f_cls_cf.numpy(), f_cls.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_pos_cf.numpy(), f_pos.numpy().transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    shared = impl(jt.array(E), jt.array(W[:1]))[1].numpy()       # (1, K, C) is broadcast
    expected = softmax(E[2].astype(np.float64) @ W[0].T.astype(np.float64), 1) @ W[0]
    np.testing.assert_allclose(shared[2], expected, rtol=1e-4, atol=1e-5)


def test_offset_attention_dispatches_to_registered_kernel():
    calls = []

    def fake_kernel(img_feat, cls_repr, channels_first=False):
        calls.append(channels_first)
        return offset_attention_reference(img_feat, cls_repr, channels_first)

    module = OffsetLearning(3, 4)
    x = jt.array(np.random.RandomState(3).randn(1, 4, 2, 2).astype(np.float32))
    expected = module(x).numpy()
    previous = set_offset_attention_kernel(fake_kernel)
    try:
        out = module(x).numpy()
    finally:
        set_offset_attention_kernel(previous)
    assert calls == [True]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_official_parameter_names_and_init():
    module = OffsetLearning(150, 64)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == {'cls_repr': (1, 150, 64), 'cls_offset_proj.weight': (64, 64),
                      'feat_offset_proj.weight': (64, 64), 'mask_norm.weight': (150,), 'mask_norm.bias': (150,)}
    assert abs(module.cls_repr.numpy().std() - 0.02) < 0.002
    assert np.all(module.mask_norm.weight.numpy() == 1) and np.all(module.mask_norm.bias.numpy() == 0)
    assert set(OffsetLearningMask(64).state_dict()) == {'cls_offset_proj.weight', 'feat_offset_proj.weight'}
    with pytest.raises(ValueError, match='LayerNorm'):
        OffsetLearning(3, 8, norm_cfg=dict(type='GN', num_groups=1))
