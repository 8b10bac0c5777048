"""The JIT-compiled bilinear resize against a NumPy reference and Jittor's nn.interpolate, forward and backward."""
import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.models.utils import resize
from jseg.ops.resize_bilinear import (ResizeBilinearFunction, resize_bilinear, resize_bilinear_fused,
                                      resize_bilinear_reference, use_kernel)
from ops_test_helpers import DEVICES, count_calls, on_device, rel_err, var64

# (input shape, output size, align_corners)
CASES = [
    ((2, 3, 5, 7), (11, 13), False),     # upscaling, non-square, batch > 1
    ((2, 3, 9, 8), (4, 3), False),       # downscaling
    ((1, 2, 5, 7), (11, 13), True),      # upscaling, align_corners
    ((1, 2, 9, 8), (4, 12), True),       # down in y, up in x, align_corners
    ((1, 2, 1, 1), (3, 4), False),       # a single input pixel
    ((1, 2, 4, 5), (1, 1), False),       # a single output pixel
    ((1, 2, 4, 5), (1, 1), True),
    ((1, 2, 6, 5), (6, 9), False),       # y unchanged
    ((2, 4, 130, 70), (260, 530), False),  # several threads, several row blocks per plane
]
_cache = {}


def tol32(shape, size):
    """float32 error bound: the source coordinates are float32 (as in PyTorch's and Jittor's kernels),
    so the weights carry a rounding error of up to about size * 2^-24 (3e-5 for 530 pixels)."""
    return 1e-6 + 6e-8 * max(*shape[2:], *size)


def interpolation_matrix(n_in, n_out, align_corners):
    """(n_out, n_in) matrix of the 1-D bilinear taps, PyTorch's coordinate maths in float64."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        if align_corners:
            src = d * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[d, i0] += 1 - frac
        m[d, i1] += frac
    return m


def numpy_resize(x, size, align_corners):
    """out = My x Mx^T per plane; its gradient is My^T g Mx (see numpy_resize_grad)."""
    my = interpolation_matrix(x.shape[2], size[0], align_corners)
    mx = interpolation_matrix(x.shape[3], size[1], align_corners)
    return np.einsum('Yy,bcyx,Xx->bcYX', my, x.astype(np.float64), mx)


def numpy_resize_grad(g, in_hw, align_corners):
    my = interpolation_matrix(in_hw[0], g.shape[2], align_corners)
    mx = interpolation_matrix(in_hw[1], g.shape[3], align_corners)
    return np.einsum('Yy,bcYX,Xx->bcyx', my, g.astype(np.float64), mx)


def _case_data(case):
    if case not in _cache:
        shape, size, ac = case
        rng = np.random.default_rng(sum(shape) + sum(size) + ac)
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape[:2] + size).astype(np.float32)
        _cache[case] = dict(x=x, g=g, out=numpy_resize(x, size, ac), dx=numpy_resize_grad(g, shape[2:], ac))
    return _cache[case]


def _ids(case):
    shape, size, ac = case
    return '{}x{}x{}x{}-{}x{}-'.format(*shape, *size) + ('ac' if ac else 'hp')


@pytest.mark.parametrize('case', CASES, ids=_ids)
def test_forward_and_gradient_match_numpy_and_interpolate(case):
    shape, size, ac = case
    d = _case_data(case)
    tol = tol32(shape, size)
    x = jt.array(d['x'])
    out = resize_bilinear_fused(x, size, ac)
    assert out.shape == shape[:2] + size and out.dtype == jt.float32
    assert rel_err(out.numpy(), d['out']) < tol
    dx = jt.grad((out * jt.array(d['g'])).sum(), x)
    assert rel_err(dx.numpy(), d['dx']) < tol
    # Jittor's own op agrees too (same maths, other rounding)
    ref = resize_bilinear_reference(x, size, ac)
    ref_dx = jt.grad((ref * jt.array(d['g'])).sum(), x)
    assert rel_err(out.numpy(), ref.numpy()) < tol
    assert rel_err(dx.numpy(), ref_dx.numpy()) < tol


@pytest.mark.parametrize('case', [CASES[0], CASES[3]], ids=_ids)
def test_float64_matches_numpy_to_rounding(case):
    """In float64 the coordinate maths is the reference's too: agreement to a few ulps."""
    shape, size, ac = case
    d = _case_data(case)
    x = var64(d['x'])
    out = resize_bilinear_fused(x, size, ac)
    assert out.dtype == jt.float64
    assert rel_err(out.numpy(), d['out']) < 1e-13
    dx = jt.grad((out * var64(d['g'])).sum(), x)
    assert dx.dtype == jt.float64
    assert rel_err(dx.numpy(), d['dx']) < 1e-13


def test_border_values_and_constant_planes():
    """Corners of an upscaled map: align_corners=True reproduces the input corners exactly,
    align_corners=False the corner pixels too (clamped taps); a constant plane stays constant."""
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 2, 5, 7)
    for ac in (False, True):
        out = resize_bilinear_fused(jt.array(x), (11, 13), ac).numpy()
        assert np.array_equal(out[..., [0, 0, -1, -1], [0, -1, 0, -1]], x[..., [0, 0, -1, -1], [0, -1, 0, -1]])
    const = resize_bilinear_fused(jt.full((1, 2, 5, 7), 3.5), (11, 13), False).numpy()
    assert np.allclose(const, 3.5, rtol=0, atol=1e-6)


def test_permuted_input():
    """A permuted (non-contiguous) view as input; the gradient reaches the original var."""
    shape, size, ac = CASES[0]
    d = _case_data(CASES[0])
    tol = tol32(shape, size)
    base = jt.array(np.ascontiguousarray(d['x'].transpose(0, 1, 3, 2)))     # (B, C, w, h)
    x = base.permute(0, 1, 3, 2)                                            # (B, C, h, w)
    out = resize_bilinear_fused(x, size, ac)
    assert rel_err(out.numpy(), d['out']) < tol
    d_base = jt.grad((out * jt.array(d['g'])).sum(), base)
    assert rel_err(d_base.numpy(), d['dx'].transpose(0, 1, 3, 2)) < tol


def test_repeated_calls_do_not_accumulate():
    shape, size, ac = CASES[1]
    d = _case_data(CASES[1])
    tol = tol32(shape, size)
    x = jt.array(d['x'])
    for _ in range(3):
        out = resize_bilinear_fused(x, size, ac)
        dx = jt.grad((out * jt.array(d['g'])).sum(), x)
        assert rel_err(out.numpy(), d['out']) < tol and rel_err(dx.numpy(), d['dx']) < tol


def test_rejects_bad_arguments():
    x = jt.zeros((1, 2, 4, 5))
    with pytest.raises(ValueError, match='4-D'):
        resize_bilinear_fused(jt.zeros((2, 4, 5)), (3, 3))
    with pytest.raises(ValueError, match='positive'):
        resize_bilinear_fused(x, (0, 3))
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        resize_bilinear_fused(x, (3,))
    with pytest.raises(ValueError, match='supports'):
        resize_bilinear_fused(jt.zeros((1, 2, 4, 5), dtype='int32'), (3, 3))


@pytest.mark.parametrize('device', DEVICES)
def test_resize_routes_bilinear_to_the_kernel(monkeypatch, device):
    """jseg's resize() uses the operator for bilinear float inputs on the CPU while the fused
    operators are on, and Jittor's nn.interpolate otherwise, with the same result."""
    shape, size, ac = CASES[0]
    d = _case_data(CASES[0])
    tol = tol32(shape, size)
    calls = count_calls(monkeypatch, ResizeBilinearFunction)
    with on_device(device):
        x = jt.array(d['x'])
        with ops.fused_ops(True):
            out = resize(x, size=size, mode='bilinear', align_corners=ac)
            assert rel_err(out.numpy(), d['out']) < tol
            assert len(calls) == (0 if device == 'cuda' else 1)
            # a scale factor becomes the size int(h * s), as before: 2x here
            out2 = resize(x, scale_factor=2, mode='bilinear', align_corners=False)
            assert out2.shape == shape[:2] + (10, 14)
            assert rel_err(out2.numpy(), numpy_resize(d['x'], (10, 14), False)) < tol
            assert len(calls) == (0 if device == 'cuda' else 2)
            assert resize(x, size=shape[2:], mode='bilinear') is x            # same size: unchanged
            resize(x, size=size, mode='nearest').sync()                       # other modes: not routed
            assert len(calls) == (0 if device == 'cuda' else 2)
        with ops.fused_ops(False):
            out = resize(x, size=size, mode='bilinear', align_corners=ac)
            assert rel_err(out.numpy(), d['out']) < tol
            assert len(calls) == (0 if device == 'cuda' else 2)


def test_kernel_applies_only_to_supported_inputs():
    x = jt.zeros((1, 2, 4, 5))
    with ops.fused_ops(True):
        assert use_kernel(x) and use_kernel(x.float64())
        assert not use_kernel(x.float16())
    with ops.fused_ops(False):
        assert not use_kernel(x)
        assert resize_bilinear(x, (3, 3)).shape == (1, 2, 3, 3)
