"""DiceLoss (mmdet semantics) against closed forms in NumPy."""
import jittor as jt
import numpy as np
import pytest

from jseg.models.losses import DiceLoss
from jseg.registry import MODELS

N, P = 3, 8


@pytest.fixture(scope='module')
def data():
    rng = np.random.RandomState(0)
    logits = (2 * rng.standard_normal((N, P))).astype(np.float32)
    target = (rng.rand(N, P) < 0.4).astype(np.float32)
    target[1, :3] = 0.25                                             # soft targets (bilinear point samples)
    return logits, target


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def naive(p, t, eps):
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def vnet(p, t, eps):
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)


def test_mask2former_dice_with_avg_factor(data):
    logits, target = data
    loss = MODELS.build(dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
                             eps=1.0, loss_weight=5.0))
    got = loss(jt.array(logits), jt.array(target), avg_factor=2.5).item()
    expected = 5.0 * naive(sigmoid(logits), target, 1.0).sum() / (2.5 + np.finfo(np.float32).eps)
    assert got == pytest.approx(expected, rel=1e-5)
    assert loss.loss_name == 'loss_dice'


def test_vnet_form_reductions_and_weight(data):
    logits, target = data
    p = sigmoid(logits)
    per_mask = vnet(p, target, 1e-3)
    loss = DiceLoss()                                                # mmdet defaults: V-Net form, eps 1e-3, mean
    np.testing.assert_allclose(loss(jt.array(logits), jt.array(target)).item(), per_mask.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(jt.array(logits), jt.array(target), reduction_override='none').numpy(),
                               per_mask, rtol=1e-5)
    weight = np.array([1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(
        loss(jt.array(logits), jt.array(target), weight=jt.array(weight), reduction_override='sum').item(),
        (per_mask * weight).sum(), rtol=1e-5)


def test_activate_false_takes_probabilities_and_any_trailing_shape(data):
    logits, target = data
    p = sigmoid(logits).astype(np.float32)
    loss = DiceLoss(activate=False, naive_dice=True, eps=1.0, reduction='none')
    got = loss(jt.array(p.reshape(N, 2, 4)), jt.array(target.reshape(N, 2, 4))).numpy()
    np.testing.assert_allclose(got, naive(p.astype(np.float64), target, 1.0), rtol=1e-5)


def test_gradient_matches_closed_form(data):
    logits, target = data
    x = jt.array(logits)
    loss = DiceLoss(naive_dice=True, eps=1.0, reduction='sum')
    grad = jt.grad(loss(x, jt.array(target)), x).numpy()
    p = sigmoid(logits)
    inter = (p * target).sum(1, keepdims=True)
    denom = p.sum(1, keepdims=True) + target.sum(1, keepdims=True) + 1.0
    d_loss_d_p = -(2 * target * denom - (2 * inter + 1.0)) / denom ** 2   # d/dp of 1 - (2I + eps) / (S + eps)
    np.testing.assert_allclose(grad, d_loss_d_p * p * (1 - p), rtol=1e-4, atol=1e-6)


def test_bad_arguments(data):
    logits, target = data
    with pytest.raises(NotImplementedError, match='sigmoid'):
        DiceLoss(use_sigmoid=False)
    with pytest.raises(ValueError, match='reduction'):
        DiceLoss(reduction='max')
    with pytest.raises(ValueError, match='differ in size'):
        DiceLoss()(jt.array(logits), jt.array(target[:, :4]))
    with pytest.raises(ValueError, match='weight must be'):
        DiceLoss()(jt.array(logits), jt.array(target), weight=jt.ones((N, 1)))
    with pytest.raises(ValueError, match='avg_factor'):
        DiceLoss(reduction='sum')(jt.array(logits), jt.array(target), avg_factor=2.0)
