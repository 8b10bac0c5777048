"""jseg.ops.softmax_nll: the JIT CPU operator against NumPy closed forms and the composition, with gradients."""
import jittor as jt
import numpy as np
import pytest

from jseg.ops.softmax_nll import softmax_nll, softmax_nll_reference

IGNORE = 255


def numpy_nll_and_grad(x, label, g):
    """nll = logsumexp - x[label] (0 where not counted) and its gradient g * (softmax - onehot), in float64."""
    x = x.astype(np.float64)
    m = x.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(1))
    counted = (label != IGNORE) & (label >= 0) & (label < x.shape[1])
    safe = np.where(counted, label, 0)
    picked = np.take_along_axis(x, safe[:, None], 1)[:, 0]
    nll = np.where(counted, lse - picked, 0.0)
    onehot = np.arange(x.shape[1]).reshape(1, -1, *([1] * (x.ndim - 2))) == safe[:, None]
    grad = (np.exp(x - lse[:, None]) - onehot) * np.where(counted, g, 0.0)[:, None]
    return nll, grad


def make_case(seed, shape=(2, 7, 5, 300)):
    rng = np.random.RandomState(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[0, :, 0] += 60                                                # large logits: the max shift matters
    label = rng.randint(0, shape[1], size=(shape[0], *shape[2:])).astype(np.int32)
    label.reshape(shape[0], -1)[0, 7:47] = IGNORE
    label.reshape(shape[0], -1)[1, 3] = shape[1]                    # outside [0, C): not counted either
    label.reshape(shape[0], -1)[1, 4] = -1
    g = rng.standard_normal(label.shape).astype(np.float32)
    return x, label, g


def test_forward_and_gradient_match_closed_forms():
    x, label, g = make_case(0)
    logits = jt.array(x)
    nll = softmax_nll(logits, jt.array(label), IGNORE)
    want_nll, want_grad = numpy_nll_and_grad(x, label, g)
    np.testing.assert_allclose(nll.numpy(), want_nll, rtol=2e-6, atol=2e-5)
    grad = jt.grad((nll * jt.array(g)).sum(), logits)
    # float32 rounding of x - lse (|x| up to about 75 here: 4e-6) times |g| up to about 4
    np.testing.assert_allclose(grad.numpy(), want_grad, rtol=1e-5, atol=3e-5)


def test_agrees_with_the_composition_and_handles_uint8_labels_and_3d_logits():
    x, label, g = make_case(1, shape=(3, 4, 33))
    logits, labels = jt.array(x), jt.array(np.where(label < 0, 0, label).astype(np.uint8))
    fused = softmax_nll(logits, labels, IGNORE)
    composed = softmax_nll_reference(logits, labels, IGNORE)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-5, atol=1e-5)
    grads = [jt.grad((out * jt.array(g)).sum(), logits).numpy() for out in (fused, composed)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_rejects_labels_that_do_not_fit():
    with pytest.raises(ValueError, match=r'labels \(2, 5\) do not fit logits \(2, 3, 4\)'):
        softmax_nll(jt.ones((2, 3, 4)), jt.zeros((2, 5), dtype='int32'), IGNORE)
