"""The JIT-compiled softmax operator against NumPy, Jittor's nn.softmax and finite differences."""
import jittor as jt
import numpy as np
import pytest
from jittor import nn

import jseg.ops as ops
from jseg.ops.softmax import SoftmaxFunction, softmax_fused, softmax_reference
from ops_test_helpers import check_finite_differences, count_calls, rel_err, var64

# (shape, dim): the last-dim kernel (inner == 1) and the middle-dim kernel (inner > 1), odd sizes,
# a single position along dim, inner sizes below, at and above the kernel's 128-column block.
# All are checked against NumPy; the first three also against nn.softmax (each new shape compiles
# Jittor's composition, forward and backward, so only a few do).
CASES = [
    ((3, 5, 37), -1),         # rows of 37: vector tails
    ((2, 9, 6, 5), 1),        # a middle dim, inner 30
    ((5, 4, 3), 0),           # the first dim
    ((2, 1000), 1),           # one long row per batch item
    ((4, 1), -1),             # n = 1: every output is 1
    ((7,), 0),                # 1-D
    ((2, 3, 25, 4, 5), 2),    # FreqFusion's layout (B, G, k*k, H, W)
    ((2, 3, 300), 1),         # inner 300: blocks of 128, 128 and 44 columns
]
JITTOR_CHECKED = CASES[:3]


def _np_softmax(x, dim, weight=None):
    """float64 closed form, with the weight broadcast along ``dim``."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(dim, keepdims=True))
    if weight is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        e = e * np.asarray(weight, dtype=np.float64).reshape(shape)
    return e / e.sum(dim, keepdims=True)


def _np_softmax_grad(y, dy, dim):
    """dx = y * (dy - sum(dy * y, dim)) (the same with a weight)."""
    return y * (dy - (dy * y).sum(dim, keepdims=True))


def _data(shape, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(shape)).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize('shape,dim', CASES, ids=lambda c: str(c))
def test_forward_and_gradient_match_numpy_and_nn_softmax(shape, dim):
    x, dy = _data(shape)
    xv = jt.array(x)
    y = softmax_fused(xv, dim)
    assert y.shape == shape and y.dtype == jt.float32
    expected = _np_softmax(x, dim)
    assert rel_err(y.numpy(), expected) < 1e-6
    dx = jt.grad((softmax_fused(xv, dim) * jt.array(dy)).sum(), xv).numpy()
    assert rel_err(dx, _np_softmax_grad(expected, dy, dim)) < 1e-5
    if (shape, dim) in JITTOR_CHECKED:
        assert rel_err(y.numpy(), nn.softmax(xv, dim).numpy()) < 1e-6
        dx_jittor = jt.grad((nn.softmax(xv, dim) * jt.array(dy)).sum(), xv).numpy()
        assert rel_err(dx, dx_jittor) < 1e-5


@pytest.mark.parametrize('window', ['hamming', 'scalar'])
@pytest.mark.parametrize('shape,dim', [((2, 3, 25, 4, 5), 2), ((3, 5, 25), -1)], ids=['middle', 'last'])
def test_weighted_softmax_matches_numpy_and_the_composition(shape, dim, window):
    """softmax, times the window, renormalised (FreqFusion's kernel normaliser) in one operator."""
    x, dy = _data(shape, seed=1)
    weight = np.outer(np.hamming(5), np.hamming(5)).astype(np.float32) if window == 'hamming' \
        else np.array([0.7], dtype=np.float32)
    xv, wv = jt.array(x), jt.array(weight)
    y = softmax_fused(xv, dim, wv)
    expected = _np_softmax(x, dim, weight.reshape(-1) if window == 'hamming' else None)
    assert rel_err(y.numpy(), expected) < 1e-6
    assert rel_err(y.numpy(), softmax_reference(xv, dim, wv).numpy()) < 1e-6
    dx = jt.grad((softmax_fused(xv, dim, wv) * jt.array(dy)).sum(), xv).numpy()
    assert rel_err(dx, _np_softmax_grad(expected, dy, dim)) < 1e-5
    dx_ref = jt.grad((softmax_reference(xv, dim, wv) * jt.array(dy)).sum(), xv).numpy()
    assert rel_err(dx, dx_ref) < 1e-5


@pytest.mark.parametrize('shape,dim,weighted', [((2, 3, 4), -1, False), ((2, 4, 3), 1, False), ((2, 4, 3), 1, True)],
                         ids=['last', 'middle', 'middle-weighted'])
def test_gradient_matches_finite_differences_float64(shape, dim, weighted):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    weight = var64(rng.random(shape[dim]) + 0.5) if weighted else None
    d = dim % len(shape)
    x3_shape = (int(np.prod(shape[:d])), shape[d], int(np.prod(shape[d + 1:])))

    def loss(arrays):
        args = (var64(arrays[0].reshape(x3_shape)),) + ((weight,) if weighted else ())
        y = SoftmaxFunction().execute(*args)
        return float((y.numpy().reshape(shape) * dy).sum())

    xv = var64(x)
    y = softmax_fused(xv, dim, weight)
    assert y.dtype == jt.float64
    dx = jt.grad((y * var64(dy)).sum(), xv).numpy()
    check_finite_differences(loss, [x], [dx], rng, tol=1e-7)


def test_exponential_over_the_float_range():
    """Rows [t, 0]: y0 = e^t / (e^t + 1), for t across the range of float32's exp, underflow included."""
    t = np.concatenate([np.linspace(-104.0, 0.0, 2001), -np.logspace(-7, 0, 50)]).astype(np.float32)
    x = np.stack([t, np.zeros_like(t)], axis=1)
    y = softmax_fused(jt.array(x), -1).numpy()
    t64 = t.astype(np.float64)
    expected = np.exp(t64) / (np.exp(t64) + 1.0)
    np.testing.assert_allclose(y[:, 0], expected, rtol=5e-7, atol=2e-38)
    np.testing.assert_allclose(y[:, 1], 1.0 / (np.exp(t64) + 1.0), rtol=5e-7)


def test_stability_and_non_finite_rows_like_nn_softmax():
    big = np.array([[1e4, 1e4 - 1.0, -1e4]], dtype=np.float32)                  # no overflow
    np.testing.assert_allclose(softmax_fused(jt.array(big), -1).numpy(), _np_softmax(big, -1), rtol=1e-6)
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [2.0, np.inf, 0.0]], dtype=np.float32)
    y = softmax_fused(jt.array(x), -1).numpy()
    y_jittor = nn.softmax(jt.array(x), -1).numpy()
    assert y[0, 1] == 0.0 and abs(y[0].sum() - 1.0) < 1e-6                        # masked entry: exactly 0
    assert np.isnan(y[1]).all() and np.isnan(y_jittor[1]).all()                    # all masked: NaN, as Jittor
    assert np.isnan(y[2]).all() and np.isnan(y_jittor[2]).all()                    # +inf: NaN, as Jittor
    cols = softmax_fused(jt.array(np.ascontiguousarray(x.T)), 0).numpy()           # middle-dim kernel
    np.testing.assert_array_equal(np.isnan(cols), np.isnan(y.T))
    assert cols[1, 0] == 0.0


def test_permuted_input():
    x, _ = _data((2, 6, 5, 3), seed=4)
    xv = jt.array(x).permute(0, 3, 1, 2)                                           # (2, 3, 6, 5), a view
    y = softmax_fused(xv, 2).numpy()
    assert rel_err(y, _np_softmax(x.transpose(0, 3, 1, 2), 2)) < 1e-6


def test_public_softmax_dispatch(monkeypatch):
    x = jt.array(_data((2, 3, 4))[0])
    calls = count_calls(monkeypatch, SoftmaxFunction)
    with ops.fused_ops(True):
        fused = ops.softmax(x, -1).numpy()
    assert len(calls) == 1
    with ops.fused_ops(False):
        plain = ops.softmax(x, -1).numpy()
    assert len(calls) == 1                                                         # the composition ran
    np.testing.assert_allclose(fused, plain, rtol=1e-6, atol=1e-7)
    with ops.fused_ops(True):
        everything = ops.softmax(x, None).numpy()                                  # dim=None: over all elements
        planes = ops.softmax(x, (1, 2)).numpy()                                    # a tuple: over both dims
    assert len(calls) == 1 and abs(everything.sum() - 1.0) < 1e-5
    np.testing.assert_allclose(planes.sum((1, 2)), 1.0, rtol=1e-5)


def test_bad_arguments_are_named():
    x = jt.array(_data((2, 3, 4))[0])
    with pytest.raises(ValueError, match='dim 3 is out of range'):
        softmax_fused(x, 3)
    with pytest.raises(ValueError, match='weight has 2 values; expected 1 or 3'):
        softmax_fused(x, 1, jt.ones(2))
    with pytest.raises(TypeError, match='dim must be an int'):
        softmax_fused(x, 1.0)
    with pytest.raises(TypeError, match='float32 or float64'):
        softmax_fused(jt.array(np.ones((2, 3), dtype=np.int32)), 1)


def test_model_call_sites_use_the_operator(monkeypatch):
    """FreqFusion's kernel normaliser, EfficientFormerV2's attentions and MultiheadAttentionCore call it."""
    from jseg.models.backbones.efficientformer_v2 import Attention4D, Attention4DDownsample
    from jseg.models.decode_heads.freqfusion import FreqFusion
    from jseg.models.utils.transformer import MultiheadAttentionCore
    calls = count_calls(monkeypatch, SoftmaxFunction)
    rng = np.random.default_rng(5)
    with ops.fused_ops(True):
        fusion = FreqFusion(hr_channels=8, lr_channels=8, compressed_channels=8)
        fusion.kernel_normalizer(jt.array(rng.standard_normal((1, 9, 3, 4)).astype(np.float32)), 3,
                                 fusion.hamming_highpass).sync()
        assert len(calls) == 1 and len(calls[0]) == 2                              # x and the window
        feat = jt.array(rng.standard_normal((1, 8, 4, 4)).astype(np.float32))
        for attention in (Attention4D(8, resolution=4, key_dim=4, num_heads=2),
                          Attention4DDownsample(8, 8, resolution=4, key_dim=4, num_heads=2)):
            attention.eval()
            attention(feat).sync()
        assert len(calls) == 3
        tokens = jt.array(rng.standard_normal((1, 5, 8)).astype(np.float32))
        MultiheadAttentionCore(8, 2)(tokens, tokens).sync()
        assert len(calls) == 4
