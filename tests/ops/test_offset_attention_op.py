"""The JIT-compiled coupled attention against the pure-Jittor composition and finite differences."""
import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.ops.offset_attention import offset_attention_reference
from jseg.ops.csrc_bundle import bundle_source
from jseg.ops.offset_attention_gemm import CPU_IMPLS, gemm_source, softmax_stats
from jseg.ops.offset_attention_kernel import (FusedOffsetAttention, GemmOffsetAttention, offset_attention_fused)
from ops_test_helpers import (DEVICES, check_finite_differences, assert_compiles_with_nvcc, count_calls, cuda_stub,
                              on_device, rel_err, var64)

# (B, HW, C, K, B of cls_repr, channels_first): odd sizes, K not a multiple of anything, batch > 1,
# shared (1, K, C) class representations, both layouts, partial position blocks, HW = 1,
# and shapes large enough to run on several threads (per-thread softmax states merged).
CASES = [
    (2, 77, 19, 13, 2, False),
    (1, 200, 40, 11, 1, True),
    (3, 65, 33, 7, 1, False),
    (2, 130, 70, 37, 2, True),
    (1, 64, 32, 150, 1, True),
    (2, 1, 5, 3, 1, False),
    (2, 1100, 50, 45, 2, False),   # above the fused kernels' threshold for several threads
    (2, 1500, 48, 41, 1, True),
]
STRATEGIES = ['fused', 'gemm']
FUNCTIONS = {'fused': FusedOffsetAttention, 'gemm': GemmOffsetAttention}
_cache = {}


def _inputs(case, rng, dtype=np.float32, scale=0.3):
    b, n, c, k, bw, cf = case
    e = rng.standard_normal((b, c, n) if cf else (b, n, c)).astype(dtype)
    w = (scale * rng.standard_normal((bw, k, c))).astype(dtype)
    g_cls = rng.standard_normal((b, k, c)).astype(dtype)
    g_pos = rng.standard_normal(e.shape).astype(dtype)
    return e, w, g_cls, g_pos


def _case_data(case):
    """float32 inputs, output gradients, and the composition's outputs and gradients, once per case."""
    if case not in _cache:
        e, w, g_cls, g_pos = _inputs(case, np.random.default_rng(sum(case)))
        ev, wv = jt.array(e), jt.array(w)
        f_cls, f_pos = offset_attention_reference(ev, wv, case[5])
        d_e, d_w = jt.grad((f_cls * jt.array(g_cls)).sum() + (f_pos * jt.array(g_pos)).sum(), [ev, wv])
        _cache[case] = dict(e=e, w=w, g_cls=g_cls, g_pos=g_pos, f_cls=f_cls.numpy(), f_pos=f_pos.numpy(),
                            d_e=d_e.numpy(), d_w=d_w.numpy())
    return _cache[case]


def _case_id(case):
    return 'B{}N{}C{}K{}Bw{}{}'.format(*case[:5], 'cf' if case[5] else 'tm')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('strategy', STRATEGIES)
@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_forward_and_gradients_match_composition(case, strategy, device):
    if strategy == 'fused' and device == 'cuda':
        pytest.skip("the 'fused' operator has a CPU source only; on CUDA 'auto' picks 'gemm'")
    d = _case_data(case)
    with on_device(device):
        ev, wv = jt.array(d['e']), jt.array(d['w'])
        f_cls, f_pos = offset_attention_fused(ev, wv, case[5], strategy=strategy)
        assert f_cls.shape == d['f_cls'].shape and f_pos.shape == d['f_pos'].shape
        assert rel_err(f_cls.numpy(), d['f_cls']) < 1e-5
        assert rel_err(f_pos.numpy(), d['f_pos']) < 1e-5
        d_e, d_w = jt.grad((f_cls * jt.array(d['g_cls'])).sum() + (f_pos * jt.array(d['g_pos'])).sum(), [ev, wv])
        assert rel_err(d_e.numpy(), d['d_e']) < 1e-5
        assert rel_err(d_w.numpy(), d['d_w']) < 1e-5


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('strategy', STRATEGIES)
@pytest.mark.parametrize('case', [(2, 9, 4, 3, 1, False), (2, 70, 5, 4, 2, True)], ids=_case_id)
def test_gradients_match_finite_differences_float64(case, strategy, device):
    """The backward (called directly) against central differences of the forward, in float64."""
    if strategy == 'fused' and device == 'cuda':
        pytest.skip("the 'fused' operator has a CPU source only")
    rng = np.random.default_rng(11)
    e, w, g_cls, g_pos = _inputs(case, rng, np.float64, scale=0.5)
    cf, function = case[5], FUNCTIONS[strategy]
    with on_device(device):
        def loss(arrays):
            f_cls, f_pos = function().execute(var64(arrays[0]), var64(arrays[1]), cf)
            return float((f_cls.numpy() * g_cls).sum() + (f_pos.numpy() * g_pos).sum())

        fn = function()
        f_cls, f_pos = fn.execute(var64(e), var64(w), cf)
        assert f_cls.dtype == jt.float64 and f_pos.dtype == jt.float64
        d_e, d_w, _ = fn.grad(var64(g_cls), var64(g_pos))
        check_finite_differences(loss, [e, w], [d_e.numpy(), d_w.numpy()], rng, tol=1e-7)
        # one output unused: its gradient arrives as None
        fn = function()
        fn.execute(var64(e), var64(w), cf)
        d_e_cls, d_w_cls, _ = fn.grad(var64(g_cls), None)

        def loss_cls(arrays):
            f_cls, _ = function().execute(var64(arrays[0]), var64(arrays[1]), cf)
            return float((f_cls.numpy() * g_cls).sum())

        check_finite_differences(loss_cls, [e, w], [d_e_cls.numpy(), d_w_cls.numpy()], rng, entries=4,
                                 directions=1, tol=1e-7)


@pytest.mark.parametrize('case', [CASES[0], CASES[3], CASES[4], CASES[7]], ids=_case_id)
def test_gemm_cuda_twin_matches_composition(case):
    """The 'gemm' strategy with its two operators run as the CUDA kernels' CPU twins (each CUDA thread's
    arithmetic of csrc/offset_attention_gemm.h, thread after thread) against the composition."""
    d = _case_data(case)
    ev, wv = jt.array(d['e']), jt.array(d['w'])
    f_cls, f_pos = GemmOffsetAttention.apply(ev, wv, case[5], 'cuda_twin')
    assert rel_err(f_cls.numpy(), d['f_cls']) < 1e-5
    assert rel_err(f_pos.numpy(), d['f_pos']) < 1e-5
    d_e, d_w = jt.grad((f_cls * jt.array(d['g_cls'])).sum() + (f_pos * jt.array(d['g_pos'])).sum(), [ev, wv])
    assert rel_err(d_e.numpy(), d['d_e']) < 1e-5
    assert rel_err(d_w.numpy(), d['d_w']) < 1e-5


@pytest.mark.parametrize('impl', CPU_IMPLS)
@pytest.mark.parametrize('k, n, scale', [(4, 3, 1.0), (7, 300, 1.0), (3, 1000, 30.0)],
                         ids=['N3-most-lanes-empty', 'N300-uneven-lanes', 'N1000-large-logits'])
def test_gemm_softmax_stats_match_float64(k, n, scale, impl):
    """Both softmaxes and log-sum-exps of softmax_stats against NumPy in float64. With 'cuda_twin' this is
    cls_softmax_kernel's block reduction (256 lane states merged by lse_merge in a tree: lanes without
    positions, lanes with 1-4 positions, logits up to about +-100 so that each merge branch rescales)."""
    rng = np.random.default_rng(k * n)
    a = (scale * rng.standard_normal((k, n))).astype(np.float32)
    p_cls, p_pos, lse_cls, lse_pos = softmax_stats(jt.array(a), impl)
    a64 = a.astype(np.float64)
    m_row, m_col = a64.max(1, keepdims=True), a64.max(0, keepdims=True)
    ref_lse_cls = (m_row + np.log(np.exp(a64 - m_row).sum(1, keepdims=True)))[:, 0]
    ref_lse_pos = (m_col + np.log(np.exp(a64 - m_col).sum(0, keepdims=True)))[0]
    assert np.abs(lse_cls.numpy() - ref_lse_cls).max() < 1e-5 * max(1.0, np.abs(ref_lse_cls).max())
    assert np.abs(lse_pos.numpy() - ref_lse_pos).max() < 1e-5 * max(1.0, np.abs(ref_lse_pos).max())
    assert rel_err(p_cls.numpy(), np.exp(a64 - ref_lse_cls[:, None])) < 1e-5
    assert rel_err(p_pos.numpy(), np.exp(a64 - ref_lse_pos[None, :])) < 1e-5


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_float64_forward_and_large_logits(strategy):
    """Logits up to about +-60: both softmaxes stay finite and match the composition (float64)."""
    rng = np.random.default_rng(5)
    e, w, _, _ = _inputs((2, 90, 16, 9, 2, True), rng, np.float64, scale=3.0)
    out = offset_attention_fused(var64(e), var64(w), True, strategy=strategy)
    ref = offset_attention_reference(var64(e), var64(w), True)
    for a, r in zip(out, ref):
        assert a.dtype == jt.float64 and np.isfinite(a.numpy()).all()
        assert rel_err(a.numpy(), r.numpy()) < 1e-12


@pytest.mark.parametrize('impl, fused_calls', [('cpu', 1), ('cuda_twin', 0)])
def test_gemm_backward_on_cpu_is_the_fused_backward(monkeypatch, impl, fused_calls):
    """The documented CPU rule of the 'gemm' strategy: its backward runs the fused backward operator
    from the statistics its forward saved; 'cuda_twin' keeps the CUDA kernels' backward."""
    import jseg.ops.offset_attention_gemm as gemm
    calls, original = [], gemm.fused_backward
    monkeypatch.setattr(gemm, 'fused_backward', lambda *args: calls.append(args) or original(*args))
    case = CASES[3]
    d = _case_data(case)
    ev, wv = jt.array(d['e']), jt.array(d['w'])
    f_cls, f_pos = GemmOffsetAttention.apply(ev, wv, case[5], impl)
    d_e, d_w = jt.grad((f_cls * jt.array(d['g_cls'])).sum() + (f_pos * jt.array(d['g_pos'])).sum(), [ev, wv])
    assert len(calls) == fused_calls
    assert rel_err(d_e.numpy(), d['d_e']) < 1e-5 and rel_err(d_w.numpy(), d['d_w']) < 1e-5


def test_fused_keeps_no_position_by_class_tensor():
    """What the fused forward saves for backward is O(B*(K + HW)) beyond the inputs and F_cls."""
    b, n, c, k = 2, 300, 16, 21
    e, w = jt.randn(b, c, n), jt.randn(1, k, c)
    fn = FusedOffsetAttention()
    fn.execute(e, w, True)
    saved = [v for v in fn.saved if isinstance(v, jt.Var)]
    extra = [v for v in saved if v is not e and v is not w]
    assert sorted(tuple(v.shape) for v in extra) == sorted([(b, k), (b, n), (b, k, c)])
    assert all(v.numel() < b * n * k for v in extra)


def test_auto_strategy_and_public_dispatch(monkeypatch):
    calls = count_calls(monkeypatch, FusedOffsetAttention)
    case = CASES[1]
    d = _case_data(case)
    with ops.fused_ops(True):
        f_cls, f_pos = ops.offset_attention(jt.array(d['e']), jt.array(d['w']), channels_first=case[5])
        assert len(calls) == 1                               # 'auto' on CPU -> 'fused'
        assert rel_err(f_cls.numpy(), d['f_cls']) < 1e-5 and rel_err(f_pos.numpy(), d['f_pos']) < 1e-5
    with ops.fused_ops(False):
        ops.offset_attention(jt.array(d['e']), jt.array(d['w']), channels_first=case[5])
        assert len(calls) == 1


def test_rejects_bad_arguments():
    e = jt.zeros((2, 10, 8))
    with pytest.raises(ValueError, match='cls_repr'):
        offset_attention_fused(e, jt.zeros((3, 4, 8)))
    with pytest.raises(ValueError, match='channels'):
        offset_attention_fused(e, jt.zeros((2, 4, 7)))
    with pytest.raises(ValueError, match='strategy'):
        offset_attention_fused(e, jt.zeros((2, 4, 8)), strategy='nope')


def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Compile (no GPU needed) the CUDA source of the 'gemm' strategy as Jittor gets it (headers inlined)
    and its two cuda_src calls, float and double, for sm_80 and sm_90."""
    sources = [bundle_source('offset_attention_gemm_cuda.cu')]
    for ctype in ('float', 'double'):
        sources.append(cuda_stub(f'stats_{ctype}', '', gemm_source('stats', 'cuda'), [2], [2, 2, 1, 1], ctype))
        sources.append(cuda_stub(f'grad_{ctype}', '', gemm_source('grad', 'cuda'), [2, 2, 2, 1, 1, 1], [2, 2],
                                 ctype))
    assert_compiles_with_nvcc(sources, tmp_path)


def test_mac_counter_sees_the_products():
    """The MAC counter switches the fused operator off for its block, so the composition's 3 products count."""
    from jseg.utils.flops import MacCounter
    b, n, c, k = 1, 50, 8, 5
    with ops.fused_ops(True), jt.no_grad():
        with MacCounter() as counter:
            ops.offset_attention(jt.randn(b, c, n), jt.randn(1, k, c), channels_first=True)
        assert ops.fused_ops_enabled()  # switched back on when the counter is done
    assert counter.matmul == 3 * b * n * k * c
