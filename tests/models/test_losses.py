"""CrossEntropyLoss and accuracy against NumPy, with mmseg's reduction rules."""
import warnings

import jittor as jt
import numpy as np
import pytest

from jseg.models.losses import CrossEntropyLoss, accuracy
from jseg.registry import MODELS

EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def data():
    rng = np.random.RandomState(0)
    pred = (2 * rng.randn(2, 5, 4, 6)).astype(np.float32)
    label = rng.randint(0, 5, (2, 4, 6))
    label[0, 0] = 255
    label[1, 2, :3] = 255
    return pred, label


def numpy_nll(pred, label, ignore=255):
    p = pred.astype(np.float64)
    m = p.max(1, keepdims=True)
    lse = np.log(np.exp(p - m).sum(1)) + m[:, 0]
    valid = label != ignore
    safe = np.where(valid, label, 0)
    return lse - np.take_along_axis(p, safe[:, None], 1)[:, 0], valid, safe


def ce(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return CrossEntropyLoss(**kwargs)


@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_cross_entropy_mean_over_all_or_labelled_pixels(data, avg_non_ignore):
    pred, label = data
    nll, valid, _ = numpy_nll(pred, label)
    loss = ce(avg_non_ignore=avg_non_ignore)(jt.array(pred), jt.array(label), ignore_index=255)
    divisor = valid.sum() if avg_non_ignore else label.size        # mmseg: all pixels by default
    assert loss.shape == (1,)
    np.testing.assert_allclose(loss.item(), (nll * valid).sum() / (divisor + EPS), rtol=1e-6)


def test_cross_entropy_class_weights_loss_weight_and_reductions(data):
    pred, label = data
    weights = [0.5, 1.0, 2.0, 1.5, 0.25]
    nll, valid, safe = numpy_nll(pred, label)
    w = np.asarray(weights)[safe] * valid
    loss_fn = ce(class_weight=weights, loss_weight=2.0)
    got = loss_fn(jt.array(pred), jt.array(label), ignore_index=255).item()
    np.testing.assert_allclose(got, 2.0 * (nll * w).sum() / (w.sum() + EPS), rtol=1e-6)
    # without ignored pixels the divisor is mmseg's sum of class weights over every pixel
    clean = np.where(label == 255, 1, label)
    nll_c, _, _ = numpy_nll(pred, clean)
    w_c = np.asarray(weights)[clean]
    got = ce(class_weight=weights)(jt.array(pred), jt.array(clean), ignore_index=255).item()
    np.testing.assert_allclose(got, (nll_c * w_c).sum() / (w_c.sum() + EPS), rtol=1e-6)
    none = ce()(jt.array(pred), jt.array(label), ignore_index=255, reduction_override='none').numpy()
    np.testing.assert_allclose(none, nll * valid, rtol=1e-5, atol=1e-6)
    total = ce(reduction='sum')(jt.array(pred), jt.array(label), ignore_index=255).item()
    np.testing.assert_allclose(total, (nll * valid).sum(), rtol=1e-6)


def test_cross_entropy_gradient_and_registry(data):
    pred, label = data
    loss_fn = MODELS.build(dict(type='CrossEntropyLoss', avg_non_ignore=True, loss_name='loss_x'))
    assert loss_fn.loss_name == 'loss_x'
    x = jt.array(pred)
    grad = jt.grad(loss_fn(x, jt.array(label), ignore_index=255), x).numpy()
    p = pred.astype(np.float64)
    soft = np.exp(p - p.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    valid = label != 255
    onehot = np.eye(5)[np.where(valid, label, 0)].transpose(0, 3, 1, 2)
    expected = (soft - onehot) * valid[:, None] / valid.sum()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_binary_cross_entropy(data):
    pred, label = data
    logits = pred[:, :1]
    binary = np.where(label == 255, 255, label % 2)
    loss = ce(use_sigmoid=True, avg_non_ignore=True)(jt.array(logits), jt.array(binary), ignore_index=255)
    x = logits[:, 0].astype(np.float64)
    valid = binary != 255
    y = np.where(valid, binary, 0)
    elementwise = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(loss.item(), (elementwise * valid).sum() / (valid.sum() + EPS), rtol=1e-5)


def test_accuracy(data):
    pred, label = data
    valid = label != 255
    top1 = accuracy(jt.array(pred), jt.array(label), ignore_index=255).item()
    correct = ((pred.argmax(1) == label) & valid).sum()
    np.testing.assert_allclose(top1, (correct + EPS) * 100 / (valid.sum() + EPS), rtol=1e-6)
    top1_all, top3 = accuracy(jt.array(pred), jt.array(label), topk=(1, 3))
    ranks = np.argsort(-pred, axis=1)[:, :3]
    in_top3 = (ranks == label[:, None]).any(1).sum()
    np.testing.assert_allclose(top3.item(), (in_top3 + EPS) * 100 / (label.size + EPS), rtol=1e-6)
    np.testing.assert_allclose(top1_all.item(), (correct + EPS) * 100 / (label.size + EPS), rtol=1e-6)
    strict = accuracy(jt.array(pred), jt.array(label), thresh=1.0, ignore_index=255).item()
    correct_t = ((pred.argmax(1) == label) & valid & (pred.max(1) > 1.0)).sum()
    np.testing.assert_allclose(strict, (correct_t + EPS) * 100 / (valid.sum() + EPS), rtol=1e-6)
    # an all-ignored batch reports 100 as mmseg does ((0 + eps) / (0 + eps))
    assert accuracy(jt.array(pred), jt.full(label.shape, 255, 'int32'), ignore_index=255).item() == \
        pytest.approx(100.0)
