"""jseg.ops.gelu: the JIT CPU operator against the closed form (math.erf) and the composition, with gradients."""
import math

import jittor as jt
import numpy as np

from jseg.ops.gelu import gelu, gelu_reference


def test_forward_and_gradient_match_the_closed_form():
    x = np.linspace(-9, 9, 1200).astype(np.float32).reshape(3, 4, 1, 100)   # tails, zero and both signs
    erf = np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2.0))
    want = x * 0.5 * (1 + erf)
    dy = np.random.RandomState(0).standard_normal(x.shape).astype(np.float32)
    want_dx = dy * (0.5 * (1 + erf) + x * np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi))
    var = jt.array(x)
    out = gelu(var)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jt.grad((out * jt.array(dy)).sum(), var).numpy(), want_dx, rtol=1e-5, atol=1e-6)


def test_agrees_with_the_composition_on_a_big_threaded_input():
    x = jt.array(np.random.RandomState(1).standard_normal((2, 8, 90, 100)).astype(np.float32) * 3)
    dy = jt.array(np.random.RandomState(2).standard_normal((2, 8, 90, 100)).astype(np.float32))
    fused, composed = gelu(x), gelu_reference(x)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-6, atol=1e-6)
    grads = [jt.grad((out * dy).sum(), x).numpy() for out in (fused, composed)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
