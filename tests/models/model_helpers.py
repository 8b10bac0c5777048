"""Helpers shared by the model tests: seeded weights and numerics checks."""
import zlib

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


# embedding tables of the Mask2Former head: unit-variance rows, as nn.Embedding's N(0, 1) init
EMBEDDING_TABLES = ('query_embed', 'query_feat', 'level_embed', 'level_encoding')


def seeded_weight(name, shape, seed=0):
    """Deterministic weights by state-dict NAME for whole-model parity (framework independent).

    Uniform draws from ``default_rng([seed, crc32(name)])``, scaled by what the
    name holds: conv/linear weights (incl. ``in_proj_weight``) variance
    1 / fan_in; norm scales in [0.8, 1.2]; embedding tables (``EMBEDDING_TABLES``)
    variance 1; Swin relative position bias tables in [-1, 1]; MSDeformAttn
    ``sampling_offsets.bias`` in [-2, 2] pixels (so that many sampling points of
    the small levels fall outside the map); other biases in [-0.1, 0.1].
    Used by ``tools/dev/make_mask2former_fixtures.py`` and the parity tests.
    """
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    u = rng.random(shape)
    parts = name.split('.')
    leaf = parts[-1]
    if any(p in EMBEDDING_TABLES for p in parts):
        v = (2 * u - 1) * np.sqrt(3.0)
    elif leaf == 'relative_position_bias_table':
        v = 2 * u - 1
    elif leaf == 'bias' and len(parts) > 1 and parts[-2] == 'sampling_offsets':
        v = 4 * u - 2
    elif leaf in ('weight', 'in_proj_weight') and len(shape) >= 2:
        v = (2 * u - 1) * np.sqrt(3.0 / int(np.prod(shape[1:])))
    elif leaf == 'weight':
        v = 0.8 + 0.4 * u
    else:
        v = 0.2 * (u - 0.5)
    return v.astype(np.float32)


def bilinear_resize_matrix(n_out, n_in):
    """(n_out, n_in) weights of PyTorch's bilinear resize along one axis (align_corners=False).

    ``M_h @ x @ M_w.T`` resizes a (n_in_h, n_in_w) map like ``F.interpolate(..., mode='bilinear')``.
    """
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        m[i, i0] += 1 - (src - i0)
        m[i, i1] += src - i0
    return m
