"""Mask2Former head: attention masks, mask products, predict, GT instances and losses against NumPy.

The head-level pieces are checked on the tiny parity shapes (memories 2x3, 4x6, 8x12, mask
features 16x24); the losses of :class:`Mask2FormerLoss` against a NumPy re-implementation of
mmdet's rules (point sampling, brute-force matching, weighted CE, dice, BCE) on replayed
random points; and a one-batch overfit of a tiny segmentor.
"""
import itertools

import jittor as jt
import numpy as np
import pytest

from jseg.models.decode_heads.mask2former_head import (attention_mask_from_logits, clear_fully_blocked_rows,
                                                      mask_logits)
from jseg.models.decode_heads.mask2former_loss import Mask2FormerLoss, seg_to_instances

from model_helpers import bilinear_resize_matrix

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------- forward pieces

def test_mask_logits_is_the_per_query_dot_product():
    rng = np.random.RandomState(0)
    embed, feat = rng.randn(2, 5, 8).astype(np.float32), rng.randn(2, 8, 4, 6).astype(np.float32)
    out = mask_logits(jt.array(embed), jt.array(feat)).numpy()
    np.testing.assert_allclose(out, np.einsum('bqc,bchw->bqhw', embed, feat), rtol=1e-5, atol=1e-5)


def test_attention_mask_blocks_where_the_resized_mask_is_background():
    rng = np.random.RandomState(1)
    logits = rng.randn(2, 3, 16, 24).astype(np.float32)
    blocked = attention_mask_from_logits(jt.array(logits), (4, 6), num_heads=4).numpy()
    resized = np.einsum('yh,bqhw,xw->bqyx', bilinear_resize_matrix(4, 16), logits.astype(np.float64),
                        bilinear_resize_matrix(6, 24)).reshape(2, 3, 24)
    assert np.abs(resized).min() > 1e-4            # no near-tie at the threshold in this draw
    expected = sigmoid(resized) < 0.5
    assert blocked.shape == (8, 3, 24) and blocked.dtype == bool
    for b in range(2):
        for h in range(4):                          # row b * num_heads + h is image b, head h
            np.testing.assert_array_equal(blocked[b * 4 + h], expected[b])


def test_attention_mask_is_detached():
    logits = jt.array(np.random.RandomState(2).randn(1, 2, 8, 8).astype(np.float32))
    mask = attention_mask_from_logits(logits, (4, 4), num_heads=2)
    assert mask.is_stop_grad()


def test_fully_blocked_rows_are_unblocked_and_others_kept():
    mask = np.zeros((2, 3, 5), dtype=bool)
    mask[0, 0] = True                     # all keys blocked -> cleared
    mask[0, 1, [1, 3]] = True             # partial -> kept
    mask[1, 2, :4] = True                 # partial -> kept
    mask[1, 0] = True                     # all blocked -> cleared
    out = clear_fully_blocked_rows(jt.array(mask)).numpy()
    expected = mask.copy()
    expected[0, 0] = expected[1, 0] = False
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------- ground truth

def test_seg_to_instances_one_mask_per_present_class_without_ignore():
    seg = np.array([[[3, 3, 255], [0, 7, 7]],
                    [[255, 255, 255], [255, 255, 255]]], dtype=np.int64)
    (labels0, masks0), (labels1, masks1) = seg_to_instances(seg, ignore_index=255)
    np.testing.assert_array_equal(labels0, [0, 3, 7])
    np.testing.assert_array_equal(masks0, [[[0, 0, 0], [1, 0, 0]],
                                           [[1, 1, 0], [0, 0, 0]],
                                           [[0, 0, 0], [0, 1, 1]]])
    assert labels1.shape == (0,) and masks1.shape == (0, 2, 3)
    (labels, _), _ = seg_to_instances(seg[:, None], ignore_index=255)     # (B, 1, H, W) accepted
    np.testing.assert_array_equal(labels, [0, 3, 7])


def test_seg_to_instances_rejects_bad_shapes():
    with pytest.raises(ValueError, match='label maps'):
        seg_to_instances(np.zeros((4, 4), np.int64))


# ---------------------------------------------------------------------------- losses vs NumPy

NUM_CLASSES, QUERIES, POINTS = 7, 5, 16
CLASS_WEIGHT = [1.0] * NUM_CLASSES + [0.1]


def np_point_sample(maps, points):
    """maps (C, H, W), points (P, 2) as (x, y) in [0, 1] -> (C, P); bilinear, zeros outside."""
    c, h, w = maps.shape
    x = points[:, 0] * w - 0.5
    y = points[:, 1] * h - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    out = np.zeros((c, len(points)))
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out += np.where(inside, maps[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0) * wgt
    return out


def bce(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def np_losses(cls_preds, mask_preds, seg, draws, importance_ratio):
    """mmdet's Mask2Former losses in NumPy; ``draws`` are consumed in the documented order."""
    draws = list(draws)
    instances = seg_to_instances(seg)
    weights = np.array(CLASS_WEIGHT)
    n_mask = max(sum(max(min(len(lab), QUERIES), 1) for lab, _ in instances), 1)
    losses = {}
    for l, (cls, masks) in enumerate(zip(cls_preds, mask_preds)):
        cls, masks = cls.astype(np.float64), masks.astype(np.float64)
        labels = np.full((len(cls), QUERIES), NUM_CLASSES)
        matched_preds, matched_targets = [], []
        for i, (gt_labels, gt_masks) in enumerate(instances):
            points = draws.pop(0)[0]
            pred = np_point_sample(masks[i], points)                           # (Q, P)
            gt = np_point_sample(gt_masks.astype(np.float64), points)          # (k, P)
            prob = np.exp(cls[i] - cls[i].max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            cost_cls = -prob[:, gt_labels]
            cost_ce = (bce(pred, 1) @ gt.T + bce(pred, 0) @ (1 - gt).T) / POINTS
            sig = sigmoid(pred)
            cost_dice = 1 - (2 * sig @ gt.T + 1) / (sig.sum(1)[:, None] + gt.sum(1)[None] + 1)
            cost = 2 * cost_cls + 5 * cost_ce + 5 * cost_dice
            k = len(gt_labels)
            if k <= QUERIES:      # each GT gets a distinct query
                pairs = min(([(r, c) for c, r in enumerate(rows)]
                             for rows in itertools.permutations(range(QUERIES), k)),
                            key=lambda p: sum(cost[r, c] for r, c in p))
            else:                 # each query gets a distinct GT
                pairs = min(([(r, c) for r, c in enumerate(cols)]
                             for cols in itertools.permutations(range(k), QUERIES)),
                            key=lambda p: sum(cost[r, c] for r, c in p))
            for query, gt_index in sorted(pairs):
                labels[i, query] = gt_labels[gt_index]
                matched_preds.append(masks[i, query])
                matched_targets.append(gt_masks[gt_index].astype(np.float64))
        logp = cls - np.log(np.exp(cls - cls.max(2, keepdims=True)).sum(2, keepdims=True)) - cls.max(2, keepdims=True)
        nll = -np.take_along_axis(logp, labels[..., None], 2)[..., 0]
        w = weights[labels]
        loss_cls = 2.0 * (w * nll).sum() / (w.sum() + np.finfo(np.float32).eps)
        n = len(matched_preds)
        if n:
            oversampled, random = draws.pop(0), (draws.pop(0) if importance_ratio < 1 else None)
            num_uncertain = int(importance_ratio * POINTS)
            preds, targets = [], []
            for j in range(n):
                logit = np_point_sample(matched_preds[j][None], oversampled[j])[0]
                keep = np.argsort(np.abs(logit), kind='stable')[:num_uncertain]
                points = oversampled[j][keep]
                if random is not None:
                    points = np.concatenate([points, random[j]])
                preds.append(np_point_sample(matched_preds[j][None], points)[0])
                targets.append(np_point_sample(matched_targets[j][None], points)[0])
            p, t = np.array(preds), np.array(targets)
            s = sigmoid(p)
            dice = 1 - (2 * (s * t).sum(1) + 1) / (s.sum(1) + t.sum(1) + 1)
            eps = np.finfo(np.float32).eps
            loss_dice = 5.0 * dice.sum() / (n_mask + eps)
            loss_mask = 5.0 * bce(p, t).sum() / (n_mask * POINTS + eps)
        else:
            loss_dice = loss_mask = 0.0
        prefix = '' if l == len(cls_preds) - 1 else f'd{l}.'
        losses.update({f'{prefix}loss_cls': loss_cls, f'{prefix}loss_mask': loss_mask,
                       f'{prefix}loss_dice': loss_dice})
    assert not draws
    return losses


def build_criterion(importance_ratio):
    return Mask2FormerLoss(
        num_classes=NUM_CLASSES,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                      class_weight=CLASS_WEIGHT),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
                       eps=1.0, loss_weight=5.0),
        train_cfg=dict(num_points=POINTS, oversample_ratio=3.0, importance_sample_ratio=importance_ratio,
                       assigner=dict(type='HungarianAssigner', match_costs=[
                           dict(type='ClassificationCost', weight=2.0),
                           dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                           dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
                       sampler=dict(type='MaskPseudoSampler')))


class RecordingRand:
    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.draws = []

    def __call__(self, shape):
        array = self.rng.rand(*shape).astype(np.float32)
        self.draws.append(array)
        return array


def loss_case(seed, seg):
    rng = np.random.RandomState(seed)
    b = len(seg)
    cls = [rng.randn(b, QUERIES, NUM_CLASSES + 1).astype(np.float32) for _ in range(2)]
    masks = [(2 * rng.randn(b, QUERIES, 6, 8)).astype(np.float32) for _ in range(2)]
    return cls, masks


@pytest.mark.parametrize('importance_ratio', [0.75, 1.0])
def test_losses_match_numpy(importance_ratio):
    seg = np.full((2, 12, 16), 255, dtype=np.int64)
    seg[0, :6, :10], seg[0, 6:, 3:] = 2, 0          # image 0: classes 0 and 2, some ignored pixels
    seg[1, 2:9, 4:12] = 1                           # image 1: class 1 only
    cls, masks = loss_case(3, seg)
    criterion = build_criterion(importance_ratio)
    criterion.point_rand = RecordingRand(4)
    losses = criterion([jt.array(c) for c in cls], [jt.array(m) for m in masks], jt.array(seg))
    expected = np_losses(cls, masks, seg, criterion.point_rand.draws, importance_ratio)
    assert list(losses) == ['loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls', 'd0.loss_mask', 'd0.loss_dice']
    for key, value in expected.items():
        np.testing.assert_allclose(float(losses[key].item()), value, rtol=1e-4, err_msg=key)


def test_image_without_classes_counts_one_mask_and_all_queries_are_no_object():
    seg = np.full((2, 12, 16), 255, dtype=np.int64)
    seg[0, 3:9, 2:7] = 1                            # image 0: one class; image 1: all ignored
    cls, masks = loss_case(5, seg)
    criterion = build_criterion(0.75)
    criterion.point_rand = RecordingRand(6)
    losses = criterion([jt.array(c) for c in cls], [jt.array(m) for m in masks], seg)
    expected = np_losses(cls, masks, seg, criterion.point_rand.draws, 0.75)   # n_mask = 1 + 1
    for key, value in expected.items():
        np.testing.assert_allclose(float(losses[key].item()), value, rtol=1e-4, err_msg=key)


def test_no_ground_truth_gives_zero_mask_losses_with_gradients():
    seg = np.full((1, 12, 16), 255, dtype=np.int64)
    cls, masks = loss_case(7, seg)
    criterion = build_criterion(0.75)
    mask_vars = [jt.array(m) for m in masks]
    losses = criterion([jt.array(c) for c in cls], mask_vars, seg)
    expected = np_losses(cls, masks, seg, [np.zeros((1, POINTS, 2))] * 2, 0.75)
    for key, value in expected.items():
        np.testing.assert_allclose(float(losses[key].item()), value, rtol=1e-5, atol=1e-7, err_msg=key)
    grads = jt.grad(sum(losses.values()), mask_vars)
    assert all(np.all(g.numpy() == 0) for g in grads)


def test_more_classes_than_queries_matches_every_query():
    """As mmdet: with k > Q the assignment covers every query, and Q masks are averaged over."""
    seg = (np.arange(12 * 16).reshape(1, 12, 16) // 32) % 6          # 6 classes > 5 queries
    cls, masks = loss_case(8, seg)
    criterion = build_criterion(0.75)
    criterion.point_rand = RecordingRand(9)
    losses = criterion([jt.array(c) for c in cls], [jt.array(m) for m in masks], seg)
    expected = np_losses(cls, masks, seg, criterion.point_rand.draws, 0.75)
    for key, value in expected.items():
        np.testing.assert_allclose(float(losses[key].item()), value, rtol=1e-4, err_msg=key)
