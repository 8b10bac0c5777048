"""jseg.ops.argmax: the JIT CPU operator against a NumPy scan with Jittor's rules, and against jt.argmax."""
import jittor as jt
import numpy as np
import pytest

from jseg.ops import fused_ops
from jseg.ops.argmax import argmax


def scan_argmax(x, dim):
    """First index of the maximum over ``dim``, replacing it only by strictly greater values (NaN never)."""
    x = np.moveaxis(x, dim, 0)
    best, index = x[0].copy(), np.zeros(x.shape[1:], dtype=np.int32)
    for k in range(1, x.shape[0]):
        greater = x[k] > best
        best = np.where(greater, x[k], best)
        index = np.where(greater, k, index)
    return index, best


@pytest.mark.parametrize('dim', [0, 1, 2, -1])
def test_matches_the_scan_with_ties_and_nan(dim):
    rng = np.random.RandomState(dim + 5)
    x = rng.randint(0, 4, size=(3, 6, 700)).astype(np.float32)   # many ties; 700 > one chunk of positions
    x[1, 2, 3] = x[0, 4, 5] = x[2, 0, 699] = np.nan
    x[:, 0, 10] = np.nan                                           # NaN in the first position stays
    index, value = argmax(jt.array(x), dim)
    want_index, want_value = scan_argmax(x, dim)
    np.testing.assert_array_equal(index.numpy(), want_index)
    np.testing.assert_array_equal(value.numpy(), want_value)      # NaNs at the same places
    assert index.dtype == jt.int32
    with fused_ops(False):
        jt_index, jt_value = argmax(jt.array(x), dim)             # Jittor's own reduction agrees
    np.testing.assert_array_equal(index.numpy(), jt_index.numpy())


def test_class_dim_of_logits_float64_and_1d():
    rng = np.random.RandomState(0)
    logits = rng.standard_normal((2, 19, 9, 13)).astype(np.float32).astype(np.float64)
    index, value = argmax(jt.array(logits).float64(), 1)   # jt.array alone makes float32
    np.testing.assert_array_equal(index.numpy(), logits.argmax(1))
    np.testing.assert_array_equal(value.numpy(), logits.max(1))
    assert value.dtype == jt.float64
    index, value = argmax(jt.array(np.array([1.0, 5.0, 5.0, 2.0], dtype=np.float32)), 0)
    assert index.shape == [1] and index.numpy()[0] == 1 and value.numpy()[0] == 5.0


def test_rejects_a_bad_dim():
    with pytest.raises(ValueError, match='dim 3 out of range for a 3-D input'):
        argmax(jt.ones((2, 3, 4)), 3)
