"""The packed GEMM operator against NumPy float64 products and their closed-form gradients."""
import itertools

import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.ops.gemm import GemmFunction, gemm, gemm_fused, gemm_reference
from ops_test_helpers import count_calls, rel_err, var64

TRANSPOSES = list(itertools.product([False, True], [False, True]))

# (M, K, N): single elements, primes, K = 1, sizes that are not multiples of the register tile
# (6 x 16 floats with AVX2), K above the 256-deep packed block (two reduction blocks), M above the
# 144-row packed A block (two A blocks), N above the 2048-column B panel (two panels).
SIZES = [(1, 1, 1), (7, 13, 5), (13, 1, 37), (150, 300, 40), (3, 5, 2100)]


def _op(x, trans):
    return np.swapaxes(x, -1, -2) if trans else x


def _stored(rng, batch, rows, cols, trans):
    """A random operand whose op() is (rows, cols), stored transposed when ``trans``; batch None: 2-D."""
    shape = (cols, rows) if trans else (rows, cols)
    if batch is not None:
        shape = (batch,) + shape
    return rng.standard_normal(shape).astype(np.float32)


def _np_product(a, b, ta, tb, sum_batch=False):
    c = np.matmul(_op(a.astype(np.float64), ta), _op(b.astype(np.float64), tb))
    return c.sum(0) if sum_batch and c.ndim == 3 else c


def _np_grads(a, b, ta, tb, dc, sum_batch=False):
    """Closed form: d op(A) = dC op(B)^T, d op(B) = op(A)^T dC, a 2-D operand summed over the batch."""
    a64, b64, dc64 = a.astype(np.float64), b.astype(np.float64), dc.astype(np.float64)
    batched = a.ndim == 3 or b.ndim == 3
    if sum_batch and batched:
        n = (a if a.ndim == 3 else b).shape[0]
        dc64 = np.broadcast_to(dc64, (n,) + dc64.shape)
    d_opa = np.matmul(dc64, np.swapaxes(_op(b64, tb), -1, -2))
    d_opb = np.matmul(np.swapaxes(_op(a64, ta), -1, -2), dc64)
    da, db = _op(d_opa, ta), _op(d_opb, tb)
    if a.ndim == 2 and da.ndim == 3:
        da = da.sum(0)
    if b.ndim == 2 and db.ndim == 3:
        db = db.sum(0)
    return da, db


@pytest.mark.parametrize('ta,tb', TRANSPOSES, ids=lambda t: 'T' if t else 'N')
@pytest.mark.parametrize('m,k,n', SIZES, ids=str)
def test_2d_products_match_numpy(m, k, n, ta, tb):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = _stored(rng, None, m, k, ta), _stored(rng, None, k, n, tb)
    c = gemm_fused(jt.array(a), jt.array(b), ta, tb).numpy()
    assert c.shape == (m, n)
    assert rel_err(c, _np_product(a, b, ta, tb)) < 2e-6


# (a batched, b batched, sum_batch): shared A, shared B, both batched; and the summed variants
BATCH_CASES = [(False, True, False), (True, False, False), (True, True, False),
               (True, True, True), (False, True, True), (True, False, True)]


@pytest.mark.parametrize('ta,tb', TRANSPOSES, ids=lambda t: 'T' if t else 'N')
@pytest.mark.parametrize('a_batched,b_batched,sum_batch', BATCH_CASES, ids=str)
def test_batched_forward_and_gradients_match_numpy(a_batched, b_batched, sum_batch, ta, tb):
    rng = np.random.default_rng(3)
    batch, m, k, n = 3, 9, 20, 19
    a = _stored(rng, batch if a_batched else None, m, k, ta)
    b = _stored(rng, batch if b_batched else None, k, n, tb)
    expected = _np_product(a, b, ta, tb, sum_batch)
    av, bv = jt.array(a), jt.array(b)
    c = gemm_fused(av, bv, ta, tb, sum_batch)
    assert c.shape == expected.shape
    assert rel_err(c.numpy(), expected) < 2e-6
    dc = rng.standard_normal(expected.shape).astype(np.float32)
    da, db = jt.grad((gemm_fused(av, bv, ta, tb, sum_batch) * jt.array(dc)).sum(), [av, bv])
    exp_da, exp_db = _np_grads(a, b, ta, tb, dc, sum_batch)
    assert da.shape == a.shape and db.shape == b.shape
    assert rel_err(da.numpy(), exp_da) < 2e-6
    assert rel_err(db.numpy(), exp_db) < 2e-6


@pytest.mark.parametrize('ta,tb', TRANSPOSES, ids=lambda t: 'T' if t else 'N')
def test_2d_gradients_match_numpy_at_edge_sizes(ta, tb):
    rng = np.random.default_rng(5)
    m, k, n = 150, 300, 40
    a, b = _stored(rng, None, m, k, ta), _stored(rng, None, k, n, tb)
    dc = rng.standard_normal((m, n)).astype(np.float32)
    av, bv = jt.array(a), jt.array(b)
    da, db = jt.grad((gemm_fused(av, bv, ta, tb) * jt.array(dc)).sum(), [av, bv])
    exp_da, exp_db = _np_grads(a, b, ta, tb, dc)
    assert rel_err(da.numpy(), exp_da) < 2e-6
    assert rel_err(db.numpy(), exp_db) < 2e-6


def test_above_the_openmp_threshold():
    """512^3 multiply-adds (above PAR_MIN_WORK, 2^20) run the parallel path: one panel, four row chunks."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 520)).astype(np.float32)
    c = gemm_fused(jt.array(a), jt.array(b)).numpy()
    assert rel_err(c, _np_product(a, b, False, False)) < 2e-6
    batched = gemm_fused(jt.array(np.stack([a, -a])), jt.array(b)).numpy()
    assert rel_err(batched, _np_product(np.stack([a, -a]), b, False, False)) < 2e-6


def test_float64_matches_numpy_closely():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, 17, 33)), rng.standard_normal((33, 10))
    c = gemm_fused(var64(a), var64(b))
    assert c.dtype == jt.float64
    assert rel_err(c.numpy(), np.matmul(a, b)) < 1e-13


def test_bad_operands_raise_clear_errors():
    a = jt.zeros((4, 5))
    with pytest.raises(ValueError, match='inner sizes differ'):
        gemm(a, jt.zeros((4, 5)))
    with pytest.raises(ValueError, match='batch sizes differ'):
        gemm(jt.zeros((2, 4, 5)), jt.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match='2-D or 3-D'):
        gemm(jt.zeros((5,)), a)


def test_talking_heads_stay_on_jt_matmul(monkeypatch):
    from jseg.models.backbones.efficientformer_v2_utils import GEMM_MIN_CHANNELS, PointwiseConv
    calls = count_calls(monkeypatch, GemmFunction)
    heads = GEMM_MIN_CHANNELS // 2
    PointwiseConv(heads, heads)(jt.ones((1, heads, 3, 3))).sync()
    assert len(calls) == 0


def test_public_gemm_routes_by_switch(monkeypatch):
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((2, 7, 13)).astype(np.float32), rng.standard_normal((13, 5)).astype(np.float32)
    calls = count_calls(monkeypatch, GemmFunction)
    expected = _np_product(a, b, False, False)
    assert rel_err(gemm(jt.array(a), jt.array(b)).numpy(), expected) < 2e-6
    assert len(calls) == 1
    with ops.fused_ops(False):
        assert rel_err(gemm(jt.array(a), jt.array(b)).numpy(), expected) < 2e-6
        assert rel_err(gemm_reference(jt.array(a), jt.array(b)).numpy(), expected) < 2e-6
    assert len(calls) == 1


def test_routed_pointwise_convolutions_match_nn_conv2d(monkeypatch):
    """PointwiseConv (from GEMM_MIN_CHANNELS channels on) and a 1x1 ConvModule run the operator,
    with nn.Conv2d's result and gradients."""
    from jseg.models.backbones.efficientformer_v2_utils import PointwiseConv
    from jseg.models.utils import conv_module
    from jseg.models.utils.conv_module import ConvModule
    small = ConvModule(17, 19, 1, act_cfg=None)
    calls = count_calls(monkeypatch, GemmFunction)
    small(jt.ones((1, 17, 2, 2))).sync()
    assert len(calls) == 0              # below GEMM_MIN_MACS: nn.Conv2d
    monkeypatch.undo()
    monkeypatch.setattr(conv_module, 'GEMM_MIN_MACS', 1)
    rng = np.random.default_rng(17)
    x = jt.array(rng.standard_normal((2, 17, 5, 7)).astype(np.float32))
    g = jt.array(rng.standard_normal((2, 19, 5, 7)).astype(np.float32))
    for module in (PointwiseConv(17, 19), small):
        conv = module if isinstance(module, PointwiseConv) else module.conv
        params = [x, conv.weight, conv.bias]
        results = {}
        for fused in (True, False):
            calls = count_calls(monkeypatch, GemmFunction)
            with ops.fused_ops(fused):
                y = module(x)
                grads = jt.grad((y * g).sum(), params)
            results[fused] = [y.numpy()] + [d.numpy() for d in grads]
            assert len(calls) == (1 if fused else 0)   # (each count_calls wraps the previous one)
        expected = results[False]
        assert rel_err(expected[0], jt.nn.conv2d(x, conv.weight, conv.bias).numpy()) < 1e-6
        for actual, want in zip(results[True], expected):
            assert rel_err(actual, want) < 2e-6


def test_batched_matmul_routes_narrow_products_by_gradient(monkeypatch):
    """Heads' products use the operator, except narrow ones (attn @ v) without a gradient."""
    from jseg.models.backbones.efficientformer_v2_utils import GEMM_NARROW_COLS, batched_matmul
    rng = np.random.default_rng(19)
    a = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    b = rng.standard_normal((2, 3, 7, GEMM_NARROW_COLS)).astype(np.float32)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    calls = count_calls(monkeypatch, GemmFunction)
    av, bv = jt.array(a), jt.array(b)
    assert rel_err(batched_matmul(av, bv).numpy(), expected) < 2e-6
    assert len(calls) == 1
    with jt.no_grad():
        assert rel_err(batched_matmul(av, bv).numpy(), expected) < 2e-6
        assert len(calls) == 1
        wide = np.concatenate([b, b], -1)
        assert rel_err(batched_matmul(av, jt.array(wide)).numpy(), np.concatenate([expected] * 2, -1)) < 2e-6
        assert len(calls) == 2
