"""Multi-scale deformable attention: the grid_sample reference against NumPy, the JIT kernels against the
reference and finite differences, the CUDA sources through nvcc."""
import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.ops import ms_deform_attn_kernel
from jseg.ops.ms_deform_attn import ms_deform_attn_reference, multi_scale_deformable_attn
from jseg.ops.ms_deform_attn_kernel import MSDeformAttnFunction, ms_deform_attn_fused
from ops_test_helpers import (DEVICES, assert_compiles_with_nvcc, check_finite_differences, count_calls, cuda_stub,
                              on_device, rel_err, var64)

# The pixel decoder's three levels on the tiny parity input 1x3x64x96 (1/32, 1/16, 1/8).
SHAPES = ((2, 3), (4, 6), (8, 12))
S = sum(h * w for h, w in SHAPES)
# (B, Lq, nH, D, P): the unit-test configuration and the real head configuration with few queries
SMALL = (2, 5, 2, 4, 4)
REAL_HEADS = (1, 3, 8, 32, 4)
# enough samples (B*Lq*nH*L*P = 19200) for the CPU kernels to run on several threads
PARALLEL = (1, 200, 8, 32, 4)


def numpy_msda(value, shapes, loc, attn):
    """Independent float64 implementation: for every sample, the four neighbouring pixels of
    (x*W - 0.5, y*H - 0.5) weighted by (1 - |dy|)(1 - |dx|); pixels outside the map read 0."""
    b_n, _, nh, d = value.shape
    _, lq, _, nl, npts, _ = loc.shape
    out = np.zeros((b_n, lq, nh, d))
    start = 0
    for level, (h, w) in enumerate(shapes):
        maps = value[:, start:start + h * w].reshape(b_n, h, w, nh, d)
        start += h * w
        for b in range(b_n):
            for q in range(lq):
                for head in range(nh):
                    for p in range(npts):
                        x = loc[b, q, head, level, p, 0] * w - 0.5
                        y = loc[b, q, head, level, p, 1] * h - 0.5
                        x0, y0 = int(np.floor(x)), int(np.floor(y))
                        sample = np.zeros(d)
                        for yy in (y0, y0 + 1):
                            for xx in (x0, x0 + 1):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += (1 - abs(y - yy)) * (1 - abs(x - xx)) * maps[b, yy, xx, head]
                        out[b, q, head] += attn[b, q, head, level, p] * sample
    return out.reshape(b_n, lq, nh * d)


def make_inputs(config, seed=0, plant=True):
    """float64 inputs; locations in [-0.25, 1.25], with (``plant``) exact borders (0, 1: half a pixel
    outside the outer pixel centres) and pixel centres (where the bilinear derivative jumps) planted."""
    b, lq, nh, d, npts = config
    rng = np.random.default_rng(seed)
    value = rng.standard_normal((b, S, nh, d))
    loc = rng.uniform(-0.25, 1.25, (b, lq, nh, len(SHAPES), npts, 2))
    special = np.array([0.0, 1.0, 0.5, 1.0 / 3.0, 0.25, 0.75, 1.1, -0.1])
    flat = loc.reshape(-1, 2)
    if plant:
        picks = rng.choice(flat.shape[0], size=min(flat.shape[0] // 2, 40), replace=False)
        flat[picks] = rng.choice(special, size=(len(picks), 2))
    attn = rng.random((b, lq, nh, len(SHAPES), npts))
    attn /= attn.sum(axis=(-1, -2), keepdims=True)
    return value, loc.reshape(b, lq, nh, len(SHAPES), npts, 2), attn


@pytest.mark.parametrize('config', [SMALL, REAL_HEADS], ids=['small', 'real_heads'])
def test_reference_matches_numpy(config):
    value, loc, attn = make_inputs(config)
    expected = numpy_msda(value, SHAPES, loc, attn)
    out = ms_deform_attn_reference(jt.array(value.astype(np.float32)), SHAPES,
                                   jt.array(loc.astype(np.float32)), jt.array(attn.astype(np.float32)))
    assert out.shape == expected.shape and out.dtype == jt.float32
    assert rel_err(out.numpy(), expected) < 1e-5


def test_reference_float64_matches_numpy():
    value, loc, attn = make_inputs(SMALL, seed=1)
    out = ms_deform_attn_reference(var64(value), SHAPES, var64(loc), var64(attn))
    assert out.dtype == jt.float64
    assert rel_err(out.numpy(), numpy_msda(value, SHAPES, loc, attn)) < 1e-12


def test_samples_outside_the_map_read_zero():
    """A location beyond the last half pixel (or before the first) on every level reads nothing."""
    value, loc, attn = make_inputs(SMALL, seed=2)
    far = loc.copy()
    far[..., 0] = np.where(np.arange(far.shape[-2]) % 2 == 0, -0.51, 1.51)[None, None, None, None, :]
    out = ms_deform_attn_reference(var64(value), SHAPES, var64(far), var64(attn))
    assert np.abs(out.numpy()).max() == 0


def test_public_function_checks_inputs():
    value, loc, attn = (jt.array(a.astype(np.float32)) for a in make_inputs(SMALL))
    with pytest.raises(ValueError, match='sum to'):
        multi_scale_deformable_attn(value, ((2, 3), (4, 6), (8, 11)), loc, attn)
    with pytest.raises(ValueError, match=r'value must be \(B, S, nH, D\)'):
        multi_scale_deformable_attn(value.reshape(2, S, 8), SHAPES, loc, attn)
    with pytest.raises(ValueError, match='do not match'):
        multi_scale_deformable_attn(value, SHAPES[:2] + ((8, 12),), loc[:, :, :, :2], attn)
    with pytest.raises(ValueError, match='attention_weights must have shape'):
        multi_scale_deformable_attn(value, SHAPES, loc, attn[:, :, :, :, :3])
    with pytest.raises(ValueError, match=r'spatial_shapes\[1\]'):
        multi_scale_deformable_attn(value, ((2, 3), (4,), (8, 12)), loc, attn)
    with pytest.raises(TypeError, match='jt.Var'):
        multi_scale_deformable_attn(value, jt.array(np.array(SHAPES)), loc, attn)


def test_public_function_uses_the_registered_kernel():
    value, loc, attn = (jt.array(a.astype(np.float32)) for a in make_inputs(SMALL))
    calls = []

    def kernel(*args):
        calls.append(args[1])
        return ms_deform_attn_reference(*args)

    previous = ops.set_ms_deform_attn_kernel(kernel)
    try:
        out = multi_scale_deformable_attn(value, np.array(SHAPES), loc, attn)
    finally:
        ops.set_ms_deform_attn_kernel(previous)
    assert calls == [SHAPES]
    assert rel_err(out.numpy(), ms_deform_attn_reference(value, SHAPES, loc, attn).numpy()) < 1e-7


_cache = {}


def _reference_data(config):
    """float32 inputs, an output gradient, the reference output and its three gradients, once per config."""
    if config not in _cache:
        value, loc, attn = (a.astype(np.float32) for a in make_inputs(config, seed=sum(config)))
        dout = np.random.default_rng(5).standard_normal((config[0], config[1], config[2] * config[3]))
        dout = dout.astype(np.float32)
        vv, lv, av = jt.array(value), jt.array(loc), jt.array(attn)
        out = ms_deform_attn_reference(vv, SHAPES, lv, av)
        grads = jt.grad((out * jt.array(dout)).sum(), [vv, lv, av])
        _cache[config] = dict(value=value, loc=loc, attn=attn, dout=dout, out=out.numpy(),
                              grads=[g.numpy() for g in grads])
    return _cache[config]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('config', [SMALL, REAL_HEADS, PARALLEL], ids=['small', 'real_heads', 'parallel'])
def test_kernel_forward_and_gradients_match_reference(config, device):
    d = _reference_data(config)
    with on_device(device):
        vv, lv, av = jt.array(d['value']), jt.array(d['loc']), jt.array(d['attn'])
        out = ms_deform_attn_fused(vv, SHAPES, lv, av)
        assert out.shape == d['out'].shape and out.dtype == jt.float32
        assert rel_err(out.numpy(), d['out']) < 1e-5
        grads = jt.grad((out * jt.array(d['dout'])).sum(), [vv, lv, av])
        for name, got, expected in zip(['value', 'locations', 'weights'], grads, d['grads']):
            assert rel_err(got.numpy(), expected) < 1e-5, name


@pytest.mark.parametrize('device', DEVICES)
def test_kernel_gradients_match_finite_differences_float64(device):
    """The backward kernel (called directly) against central differences of the forward kernel.
    Locations are random (no planted pixel centres, where the bilinear derivative jumps)."""
    value, loc, attn = make_inputs(SMALL, seed=11, plant=False)
    rng = np.random.default_rng(12)
    dout = rng.standard_normal((SMALL[0], SMALL[1], SMALL[2] * SMALL[3]))
    with on_device(device):
        def loss(arrays):
            out = MSDeformAttnFunction().execute(*(var64(a) for a in arrays), SHAPES)
            return float((out.numpy() * dout).sum())

        fn = MSDeformAttnFunction()
        out = fn.execute(var64(value), var64(loc), var64(attn), SHAPES)
        assert out.dtype == jt.float64
        assert rel_err(out.numpy(), numpy_msda(value, SHAPES, loc, attn)) < 1e-12
        grads = [g.numpy() for g in fn.grad(var64(dout))]
        assert all(g.dtype == np.float64 for g in grads)
        check_finite_differences(loss, [value, loc, attn], grads, rng, entries=12, tol=1e-7)


def test_repeated_calls_do_not_accumulate():
    """Jittor reuses output buffers without zeroing them: the kernels must initialise every output."""
    d = _reference_data(SMALL)
    vv, lv, av = jt.array(d['value']), jt.array(d['loc']), jt.array(d['attn'])
    for _ in range(3):
        out = ms_deform_attn_fused(vv, SHAPES, lv, av)
        grads = jt.grad((out * jt.array(d['dout'])).sum(), [vv, lv, av])
        assert rel_err(out.numpy(), d['out']) < 1e-5
        for got, expected in zip(grads, d['grads']):
            assert rel_err(got.numpy(), expected) < 1e-5


def test_gradient_of_value_only():
    d = _reference_data(SMALL)
    vv = jt.array(d['value'])
    lv, av = jt.array(d['loc']).stop_grad(), jt.array(d['attn']).stop_grad()
    out = ms_deform_attn_fused(vv, SHAPES, lv, av)
    (grad_value,) = jt.grad((out * jt.array(d['dout'])).sum(), [vv])
    assert rel_err(grad_value.numpy(), d['grads'][0]) < 1e-5


def test_kernel_rejects_too_many_levels():
    shapes = tuple((1, 1) for _ in range(ms_deform_attn_kernel.MAX_LEVELS + 1))
    n = len(shapes)
    with pytest.raises(ValueError, match='at most'):
        ms_deform_attn_fused(jt.zeros((1, n, 1, 2)), shapes, jt.zeros((1, 1, 1, n, 1, 2)), jt.zeros((1, 1, 1, n, 1)))


def test_public_function_follows_the_fused_ops_switch(monkeypatch):
    calls = count_calls(monkeypatch, MSDeformAttnFunction)
    d = _reference_data(SMALL)
    inputs = (jt.array(d['value']), SHAPES, jt.array(d['loc']), jt.array(d['attn']))
    with ops.fused_ops(True):
        out = multi_scale_deformable_attn(*inputs)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-5
    with ops.fused_ops(False):
        out = multi_scale_deformable_attn(*inputs)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-6


def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Compile (no GPU needed) the forward and backward CUDA sources with nvcc for sm_80 and sm_90,
    float and double.
    ``data`` stands for the level-size map Jittor gives a jt.code source."""
    sources = ['#include <string>', '#include <unordered_map>',
               'static std::unordered_map<std::string, double> data;', ms_deform_attn_kernel._cuda_header()]
    for ctype in ('float', 'double'):
        sources.append(cuda_stub(f'msda_forward_{ctype}', '', ms_deform_attn_kernel.forward_source('cuda'),
                                 [4, 6, 5], [3], ctype))
        sources.append(cuda_stub(f'msda_backward_{ctype}', '', ms_deform_attn_kernel.backward_source('cuda'),
                                 [3, 4, 6, 5], [4, 6, 5], ctype))
    assert_compiles_with_nvcc(sources, tmp_path, name='ms_deform_attn')
