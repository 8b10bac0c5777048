"""Multi-scale deformable attention: the grid_sample reference against NumPy, the JIT kernels against both."""
import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.ops.ms_deform_attn import ms_deform_attn_reference, multi_scale_deformable_attn
from ops_test_helpers import rel_err, var64

# The pixel decoder's three levels on the tiny parity input 1x3x64x96 (1/32, 1/16, 1/8).
SHAPES = ((2, 3), (4, 6), (8, 12))
S = sum(h * w for h, w in SHAPES)
# (B, Lq, nH, D, P): the unit-test configuration and the real head configuration with few queries
SMALL = (2, 5, 2, 4, 4)
REAL_HEADS = (1, 3, 8, 32, 4)


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


def make_inputs(config, seed=0):
    """float64 inputs; locations in [-0.25, 1.25] with exact borders and pixel centres planted."""
    b, lq, nh, d, npts = config
    rng = np.random.default_rng(seed)
    value = rng.standard_normal((b, S, nh, d))
    loc = rng.uniform(-0.25, 1.25, (b, lq, nh, len(SHAPES), npts, 2))
    special = np.array([0.0, 1.0, 0.5, 1.0 / 3.0, 0.25, 0.75, 1.1, -0.1])
    flat = loc.reshape(-1, 2)
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
