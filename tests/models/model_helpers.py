"""Helpers shared by the model tests: seeded weights and numerics checks."""
import numpy as np

# buffers of the official modules: never generated, each side keeps its own values
BUFFER_NAMES = ('init_pos', 'hamming_lowpass', 'hamming_highpass')


def is_buffer(name):
    return name.rsplit('.', 1)[-1] in BUFFER_NAMES


def seeded_params(shapes, seed):
    """Deterministic parameters from ``{name: shape}``, identical in any framework.

    Names are visited in sorted order from one ``RandomState(seed)``:
    conv/linear weights N(0, 1/fan_in), norm weights 1 + 0.1 N(0, 1),
    biases 0.1 N(0, 1), anything else (``cls_repr``) N(0, 1).
    """
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        base = rng.standard_normal(shape)
        leaf = name.rsplit('.', 1)[-1]
        if leaf == 'weight' and len(shape) >= 2:
            value = base / np.sqrt(np.prod(shape[1:]))
        elif leaf == 'weight':
            value = 1.0 + 0.1 * base
        elif leaf == 'bias':
            value = 0.1 * base
        else:
            value = base
        out[name] = value.astype(np.float32)
    return out


def seeded_inputs(shapes, seed):
    rng = np.random.RandomState(seed)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]


def max_errors(actual, expected):
    """(max abs error, max abs error / max |expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    err = np.abs(actual - expected).max()
    return err, err / max(np.abs(expected).max(), 1e-30)
