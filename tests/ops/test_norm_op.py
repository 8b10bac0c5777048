"""jseg.ops.norm: training-mode BatchNorm and GroupNorm operators against NumPy closed forms,
finite differences and the compositions, and the layers' running statistics."""
import jittor as jt
import numpy as np
import pytest

from jseg.models.utils.norm import BatchNorm2d, GroupNorm
from jseg.ops import fused_ops
from jseg.ops.norm import batch_norm_train, batch_norm_train_reference, group_norm, group_norm_reference
from ops_test_helpers import check_finite_differences, rel_err, var64


def _normalise(x, axes, weight, bias, eps):
    """NumPy closed form: (x - mean) / sqrt(var + eps) * weight + bias, statistics over ``axes``."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [1, -1] + [1] * (x.ndim - 2)
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def _np_batch_norm(x, weight, bias, eps=1e-5):
    return _normalise(x, tuple(i for i in range(x.ndim) if i != 1), weight, bias, eps)


def _np_group_norm(x, groups, weight, bias, eps=1e-5):
    b, c = x.shape[:2]
    grouped = x.reshape(b, groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=2, keepdims=True)
    out = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = [1, -1] + [1] * (x.ndim - 2)
    return out * weight.reshape(shape) + bias.reshape(shape)


def _case(shape, seed, mean=3.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    return (rng.normal(mean, 2.0, shape), rng.normal(1.0, 0.5, c), rng.normal(0.0, 0.5, c),
            rng.standard_normal(shape))


BN_SHAPES = [(3, 5), (2, 4, 7), (2, 6, 5, 3)]


@pytest.mark.parametrize('shape', BN_SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_batch_norm_forward_statistics_and_gradients_in_float64(shape):
    x, w, b, dy = _case(shape, 0)
    xv, wv, bv = var64(x), var64(w), var64(b)
    out, mean, var = batch_norm_train(xv, wv, bv, eps=1e-5)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    np.testing.assert_allclose(out.numpy(), _np_batch_norm(x, w, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean.numpy(), x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), x.var(axis=axes), rtol=1e-12)
    grads = [g.numpy() for g in jt.grad((out * var64(dy)).sum(), [xv, wv, bv])]
    check_finite_differences(lambda a: float((_np_batch_norm(*a) * dy).sum()), [x, w, b], grads,
                             np.random.default_rng(1), tol=1e-6)


@pytest.mark.parametrize('shape,groups', [((2, 6, 5, 3), 3), ((3, 4, 7), 4), ((1, 8, 4, 4), 1)],
                         ids=['4d-3groups', '3d-per-channel', 'one-group'])
def test_group_norm_forward_and_gradients_in_float64(shape, groups):
    x, w, b, dy = _case(shape, 2)
    xv, wv, bv = var64(x), var64(w), var64(b)
    out = group_norm(xv, groups, wv, bv, eps=1e-5)
    np.testing.assert_allclose(out.numpy(), _np_group_norm(x, groups, w, b), rtol=1e-12, atol=1e-12)
    grads = [g.numpy() for g in jt.grad((out * var64(dy)).sum(), [xv, wv, bv])]
    check_finite_differences(lambda a: float((_np_group_norm(a[0], groups, a[1], a[2]) * dy).sum()), [x, w, b],
                             grads, np.random.default_rng(3), tol=1e-6)


def _np_norm_grads(x, groups_first, weight, dy, eps=1e-5):
    """Closed-form gradients of sum(norm(x) * weight * dy) with respect to x (B, C, *), the weight
    and the bias, for statistics over each row of ``groups_first(x)`` (a (rows, n) view of a
    copy of x: one row per normalisation group). Returns (dx, dweight, dbias)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    w = np.broadcast_to(weight.reshape(shape), x.shape)
    xs, dxhat = groups_first(x), groups_first(dy * w)
    mean = xs.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt(((xs - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (xs - mean) * rstd
    dx = rstd * (dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    positions = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    order = groups_first(positions).reshape(-1).astype(np.int64)
    dx_full, xhat_full = np.empty(x.size), np.empty(x.size)
    dx_full[order], xhat_full[order] = dx.reshape(-1), xhat.reshape(-1)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    return dx_full.reshape(x.shape), (dy * xhat_full.reshape(x.shape)).sum(axis=axes), dy.sum(axis=axes)


def test_operators_on_a_big_threaded_input_against_float64():
    # 2 x 64 x 256 x 130 = 4.3M elements: above the kernels' threshold for OpenMP (2^18); the mean of
    # 10 with a spread of 2 makes float32 sums lose digits. The operators accumulate in double: their
    # error stays near float32 rounding (the compositions' float32 reductions lose about 1e-5).
    x, w, b, dy = _case((2, 64, 256, 130), 4, mean=10.0)
    c = x.shape[1]
    bn_grads = _np_norm_grads(x, lambda a: a.transpose(1, 0, 2, 3).reshape(c, -1), w, dy)
    gn_grads = _np_norm_grads(x, lambda a: a.reshape(2 * 16, -1), w, dy)
    cases = {
        'batch norm': (lambda *a: batch_norm_train(*a)[0], [_np_batch_norm(x, w, b), *bn_grads]),
        'group norm': (lambda *a: group_norm(a[0], 16, *a[1:]), [_np_group_norm(x, 16, w, b), *gn_grads]),
    }
    for name, (fn, want) in cases.items():
        xv, wv, bv = (jt.array(a.astype(np.float32)) for a in (x, w, b))
        out = fn(xv, wv, bv)
        got = [out.numpy()] + [g.numpy() for g in jt.grad((out * jt.array(dy.astype(np.float32))).sum(), [xv, wv, bv])]
        for what, g, e in zip(('output', 'dx', 'dweight', 'dbias'), got, want):
            assert rel_err(g, e) < 3e-6, f'{name} {what}: relative error {rel_err(g, e)}'


def test_without_affine_parameters_and_with_fused_ops_off():
    x, _, _, dy = _case((2, 4, 3, 3), 5)
    ones, zeros = np.ones(4), np.zeros(4)
    want_dx = _np_norm_grads(x, lambda a: a.transpose(1, 0, 2, 3).reshape(4, -1), ones, dy)[0]
    xv = var64(x)
    np.testing.assert_allclose(group_norm(xv, 2, None, None).numpy(), _np_group_norm(x, 2, ones, zeros),
                               rtol=1e-12, atol=1e-12)
    # the composition's float64 gradient is about 1e-9 off here (Jittor's reductions), the operator's 1e-13
    for fused, tol in ((True, 1e-12), (False, 1e-8)):
        with fused_ops(fused):
            out = batch_norm_train(xv, None, None)[0]
            np.testing.assert_allclose(out.numpy(), _np_batch_norm(x, ones, zeros), rtol=1e-12, atol=1e-12)
            grad = jt.grad((out * var64(dy)).sum(), xv).numpy()
        np.testing.assert_allclose(grad, want_dx, rtol=0, atol=tol * np.abs(want_dx).max(), err_msg=f'fused={fused}')


def test_batchnorm_layer_updates_running_statistics_as_pytorch():
    x, w, b, _ = _case((4, 3, 5, 5), 6)
    layer = BatchNorm2d(3, momentum=0.25)
    layer.weight.assign(jt.array(w.astype(np.float32)))
    layer.bias.assign(jt.array(b.astype(np.float32)))
    layer.train()
    out = layer(jt.array(x.astype(np.float32)))
    np.testing.assert_allclose(out.numpy(), _np_batch_norm(x, w, b), rtol=1e-5, atol=1e-5)
    n = 4 * 5 * 5
    np.testing.assert_allclose(layer.running_mean.numpy(), 0.75 * 0 + 0.25 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    unbiased = x.var(axis=(0, 2, 3)) * n / (n - 1)
    np.testing.assert_allclose(layer.running_var.numpy(), 0.75 * 1 + 0.25 * unbiased, rtol=1e-5)
    layer.eval()
    rm, rv = layer.running_mean.numpy(), layer.running_var.numpy()
    want = (x - rm.reshape(1, -1, 1, 1)) / np.sqrt(rv.reshape(1, -1, 1, 1) + 1e-5) * w.reshape(1, -1, 1, 1) \
        + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(layer(jt.array(x.astype(np.float32))).numpy(), want, rtol=1e-5, atol=1e-5)


def test_groupnorm_layer_matches_the_closed_form():
    x, w, b, _ = _case((2, 8, 3, 3), 7)
    layer = GroupNorm(4, 8)
    layer.weight.assign(jt.array(w.astype(np.float32)))
    layer.bias.assign(jt.array(b.astype(np.float32)))
    np.testing.assert_allclose(layer(jt.array(x.astype(np.float32))).numpy(), _np_group_norm(x, 4, w, b),
                               rtol=1e-5, atol=1e-5)
