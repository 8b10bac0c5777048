"""CARAFE (jseg.ops.carafe) against an independent NumPy loop, finite differences and the dispatch seam."""
import jittor as jt
import numpy as np
import pytest

from jseg.ops import carafe, carafe_reference, set_carafe_kernel


def numpy_carafe(features, masks, k, g, s):
    """Direct loop over output pixels, following mmcv's kernel (float64)."""
    b, c, h, w = features.shape
    r = (k - 1) // 2
    out = np.zeros((b, c, h * s, w * s))
    for n in range(b):
        for ch in range(c):
            group = ch // (c // g)
            for y in range(h * s):
                for x in range(w * s):
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            yy, xx = y // s + i - r, x // s + j - r
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += features[n, ch, yy, xx] * masks[n, (group * k + i) * k + j, y, x]
                    out[n, ch, y, x] = acc
    return out


# (B, C, h, w, kernel, group, scale): odd sizes, groups > 1, scale 1 and 2 (and 3), k = 1, 3, 5
CASES = [(2, 4, 5, 7, 3, 1, 1), (1, 6, 4, 3, 5, 2, 2), (2, 8, 3, 5, 3, 4, 2), (1, 3, 6, 6, 1, 1, 3),
         (1, 2, 2, 3, 5, 1, 2)]


# the public op (which may dispatch to a registered fused kernel) and the reference itself
IMPLS = [pytest.param(carafe, id='carafe'), pytest.param(carafe_reference, id='reference')]


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', CASES)
def test_carafe_matches_numpy_loop(case, impl):
    b, c, h, w, k, g, s = case
    rng = np.random.RandomState(sum(case))
    features = rng.randn(b, c, h, w).astype(np.float32)
    masks = rng.randn(b, g * k * k, h * s, w * s).astype(np.float32)
    out = impl(jt.array(features), jt.array(masks), k, g, s).numpy()
    expected = numpy_carafe(features.astype(np.float64), masks.astype(np.float64), k, g, s)
    assert out.shape == (b, c, h * s, w * s)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', [(1, 4, 3, 4, 3, 2, 2), (2, 2, 3, 3, 5, 1, 1)])
def test_carafe_gradients_match_finite_differences(case, impl):
    b, c, h, w, k, g, s = case
    rng = np.random.RandomState(7)
    features = rng.randn(b, c, h, w).astype(np.float32)
    masks = rng.randn(b, g * k * k, h * s, w * s).astype(np.float32)
    probe = rng.randn(b, c, h * s, w * s)

    def objective(f, m):  # float64 NumPy objective: <carafe(f, m), probe>
        return float((numpy_carafe(f, m, k, g, s) * probe).sum())

    f_var, m_var = jt.array(features), jt.array(masks)
    loss = (impl(f_var, m_var, k, g, s) * jt.array(probe.astype(np.float32))).sum()
    grad_f, grad_m = [v.numpy() for v in jt.grad(loss, [f_var, m_var])]
    step = 0.5  # the objective is linear in each argument: central differences are exact
    for grad, arr, is_feat in ((grad_f, features, True), (grad_m, masks, False)):
        flat_idx = rng.choice(arr.size, size=12, replace=False)
        for idx in zip(*np.unravel_index(flat_idx, arr.shape)):
            plus, minus = arr.astype(np.float64), arr.astype(np.float64)
            plus[idx] += step
            minus[idx] -= step
            f64, m64 = features.astype(np.float64), masks.astype(np.float64)
            if is_feat:
                fd = (objective(plus, m64) - objective(minus, m64)) / (2 * step)
            else:
                fd = (objective(f64, plus) - objective(f64, minus)) / (2 * step)
            assert abs(grad[idx] - fd) < 1e-4 * max(1.0, abs(fd)), (is_feat, idx, grad[idx], fd)


def test_carafe_rejects_bad_shapes():
    features = jt.zeros((1, 4, 3, 3))
    with pytest.raises(ValueError, match='masks must have shape'):
        carafe(features, jt.zeros((1, 25, 5, 6)), 5, 1, 2)
    with pytest.raises(ValueError, match='groups'):
        carafe(features, jt.zeros((1, 27, 3, 3)), 3, 3, 1)


def test_carafe_dispatches_to_registered_kernel():
    calls = []

    def fake_kernel(features, masks, kernel_size, group_size, scale_factor):
        calls.append((kernel_size, group_size, scale_factor))
        return carafe_reference(features, masks, kernel_size, group_size, scale_factor)

    features, masks = jt.ones((1, 2, 2, 2)), jt.ones((1, 9, 4, 4))
    previous = set_carafe_kernel(fake_kernel)
    try:
        out = carafe(features, masks, 3, 1, 2)
    finally:
        set_carafe_kernel(previous)
    assert calls == [(3, 1, 2)]
    np.testing.assert_allclose(out.numpy(), carafe(features, masks, 3, 1, 2).numpy(), rtol=1e-6)
