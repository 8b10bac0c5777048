"""Hungarian matching: SciPy-identical assignment solver, mmdet's match costs, batched assigner."""
import itertools
import os

import jittor as jt
import numpy as np
import pytest

from jseg.models.utils.assigner import (ClassificationCost, CrossEntropyLossCost, DiceCost, HungarianAssigner,
                                        build_mask_assigner, linear_sum_assignment)

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'lsap', 'lsap_scipy.npz')


# ------------------------------------------------------------------------------------------- solver

def brute_force_minimum(cost):
    """Least total cost over all assignments of min(R, C) pairs."""
    r, c = cost.shape
    if r <= c:
        return min(cost[np.arange(r), list(p)].sum() for p in itertools.permutations(range(c), r))
    return min(cost[list(p), np.arange(c)].sum() for p in itertools.permutations(range(r), c))


def check_assignment(cost, rows, cols):
    r, c = cost.shape
    assert rows.dtype == cols.dtype == np.int64
    assert len(rows) == len(cols) == min(r, c)
    assert np.all(np.diff(rows) > 0), 'rows ascending and distinct'
    assert len(set(cols.tolist())) == len(cols), 'columns distinct'
    assert rows.min() >= 0 and rows.max() < r and cols.min() >= 0 and cols.max() < c


@pytest.mark.parametrize('kind', ['normal', 'ties', 'tenths'])
def test_solver_is_optimal_against_brute_force(kind):
    rng = np.random.RandomState({'normal': 0, 'ties': 1, 'tenths': 2}[kind])
    for _ in range(60):
        shape = (rng.randint(1, 7), rng.randint(1, 7))               # wide, tall and square
        if kind == 'normal':
            cost = rng.standard_normal(shape)
        elif kind == 'ties':
            cost = rng.randint(0, 3, shape).astype(np.float64)
        else:
            cost = rng.randint(-2, 2, shape) * 0.1
        rows, cols = linear_sum_assignment(cost)
        check_assignment(cost, rows, cols)
        assert cost[rows, cols].sum() == pytest.approx(brute_force_minimum(cost), abs=1e-9)


def test_solver_equals_scipy_on_fixture():
    """Same (rows, cols) as scipy.optimize.linear_sum_assignment (tools/dev/make_lsap_fixture.py)."""
    data = np.load(FIXTURE)
    names = sorted(k[:-len('_cost')] for k in data.files if k.endswith('_cost'))
    assert len(names) == 130
    for name in names:
        cost = data[f'{name}_cost']
        rows, cols = linear_sum_assignment(cost)
        np.testing.assert_array_equal(rows, data[f'{name}_rows'], err_msg=name)
        np.testing.assert_array_equal(cols, data[f'{name}_cols'], err_msg=name)


def test_solver_tie_rules_by_hand():
    # constant costs: SciPy's reverse column order gives the identity (scipy issue 11602)
    rows, cols = linear_sum_assignment(np.zeros((3, 3)))
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]
    # a tall constant matrix is solved transposed: the first rows take the columns
    rows, cols = linear_sum_assignment(np.ones((4, 2)))
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]
    # the example of SciPy's documentation
    rows, cols = linear_sum_assignment([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
    assert cols.tolist() == [1, 0, 2]


def test_solver_edge_cases_and_errors():
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.shape == cols.shape == (0,)
    cost = np.array([[np.inf, 1.0], [2.0, np.inf]])                   # +inf forbids a pair
    assert linear_sum_assignment(cost)[1].tolist() == [1, 0]
    with pytest.raises(ValueError, match='infeasible'):
        linear_sum_assignment(np.array([[np.inf, np.inf], [1.0, 2.0]]))
    with pytest.raises(ValueError, match='invalid numeric'):
        linear_sum_assignment(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match='invalid numeric'):
        linear_sum_assignment(np.array([[-np.inf, 1.0]]))
    with pytest.raises(ValueError, match='2-D'):
        linear_sum_assignment(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------------------------------- costs

Q, P, K = 5, 8, 4                      # queries, points, classes (+1 no-object column)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_costs(cls, masks, labels, gts):
    """mmdet's three costs for one prediction, written out: (Q, k) each, unweighted."""
    probs = np.exp(cls - cls.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    cls_cost = -probs[:, labels]
    bce_pos = np.log1p(np.exp(-masks))                                # BCE(x, 1)
    bce_neg = np.log1p(np.exp(masks))                                 # BCE(x, 0)
    ce_cost = np.array([[(bce_pos[q] * g + bce_neg[q] * (1 - g)).mean() for g in gts] for q in range(len(masks))])
    sig = sigmoid(masks)
    dice_cost = np.array([[1 - (2 * (s * g).sum() + 1) / (s.sum() + g.sum() + 1) for g in gts] for s in sig])
    return cls_cost, ce_cost, dice_cost


@pytest.fixture(scope='module')
def predictions():
    """Five predictions: k = 2, 3, 0, 2, 3 GT masks (soft targets included)."""
    rng = np.random.RandomState(5)
    out = []
    for k in (2, 3, 0, 2, 3):
        cls = rng.standard_normal((Q, K + 1)).astype(np.float32)
        masks = (3 * rng.standard_normal((Q, P))).astype(np.float32)
        labels = rng.choice(K, k, replace=False).astype(np.int64)
        gts = (rng.rand(k, P) < 0.4).astype(np.float32)
        if k == 3:
            gts[0, :2] = 0.5                                         # bilinear samples of a mask edge
        out.append((cls, masks, labels, gts))
    return out


def test_cost_terms_match_numpy(predictions):
    cls, masks, labels, gts = zip(*[p for p in predictions if len(p[2]) == 2])
    cls_v, masks_v = jt.array(np.stack(cls)), jt.array(np.stack(masks))
    labels_v, gts_v = jt.array(np.stack(labels).astype(np.int32)), jt.array(np.stack(gts))
    got = [c(cls_v, masks_v, labels_v, gts_v).numpy() for c in (
        ClassificationCost(weight=2.0), CrossEntropyLossCost(weight=5.0), DiceCost(pred_act=True, eps=1.0, weight=5.0))]
    for n in range(2):
        expected = numpy_costs(cls[n].astype(np.float64), masks[n].astype(np.float64), labels[n], gts[n])
        for g, e, w in zip(got, expected, (2.0, 5.0, 5.0)):
            np.testing.assert_allclose(g[n], w * e, rtol=1e-5, atol=1e-6)


def test_dice_cost_options():
    rng = np.random.RandomState(6)
    preds = rng.rand(1, Q, P).astype(np.float32)
    gts = (rng.rand(1, 2, P) < 0.5).astype(np.float32)
    got = DiceCost(pred_act=False, eps=1e-3, naive_dice=False)(None, jt.array(preds), None, jt.array(gts)).numpy()
    expected = 1 - (2 * preds[0] @ gts[0].T + 1e-3) / ((preds[0] ** 2).sum(1)[:, None] + (gts[0] ** 2).sum(1)[None]
                                                       + 1e-3)
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


def test_assign_batch_solves_every_prediction(predictions):
    assigner = build_mask_assigner(dict(type='mmdet.HungarianAssigner', match_costs=[
        dict(type='mmdet.ClassificationCost', weight=2.0),
        dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
        dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]))
    results = assigner.assign_batch([jt.array(p[0]) for p in predictions], [jt.array(p[1]) for p in predictions],
                                    [p[2] for p in predictions],
                                    [jt.array(p[3]) if len(p[2]) else None for p in predictions])
    assert len(results) == len(predictions)
    for (cls, masks, labels, gts), (rows, cols) in zip(predictions, results):
        if not len(labels):
            assert rows.shape == cols.shape == (0,)
            continue
        c1, c2, c3 = numpy_costs(cls.astype(np.float64), masks.astype(np.float64), labels, gts)
        cost = 2 * c1 + 5 * c2 + 5 * c3                              # (Q, k)
        assert cost[rows, cols].sum() == pytest.approx(brute_force_minimum(cost), abs=1e-5)
        exp_rows, exp_cols = linear_sum_assignment(cost)
        np.testing.assert_array_equal(rows, exp_rows)
        np.testing.assert_array_equal(cols, exp_cols)


def test_assigner_defaults_and_config_errors():
    default = build_mask_assigner(None)
    assert [type(c).__name__ for c in default.match_costs] == ['ClassificationCost', 'CrossEntropyLossCost',
                                                               'DiceCost']
    assert [c.weight for c in default.match_costs] == [2.0, 5.0, 5.0]
    assert default.match_costs[2].pred_act and default.match_costs[2].eps == 1.0
    with pytest.raises(ValueError, match='HungarianAssigner only'):
        build_mask_assigner(dict(type='MaxIoUAssigner'))
    with pytest.raises(ValueError, match='unknown match cost'):
        HungarianAssigner([dict(type='FocalLossCost')])
    with pytest.raises(ValueError, match='DiceCost'):
        HungarianAssigner([dict(type='DiceCost', gamma=2)])
    with pytest.raises(ValueError, match='must not be empty'):
        HungarianAssigner([])
