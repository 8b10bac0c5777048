"""FFN, MultiheadAttention, SinePositionalEncoding and MultiScaleDeformableAttention against NumPy.

Every expectation is an independent NumPy reimplementation of the official formula (mmcv 2.x,
mmdet 3.x, PyTorch ``nn.MultiheadAttention``), or a hand-computed value. Shapes are tiny and
shared: the deformable attention uses the levels of the 1x3x64x96 parity input (2x3, 4x6, 8x12).
"""
import math

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.utils.ms_deform_attn_module import MultiScaleDeformableAttention, sampling_offset_grid
from jseg.models.utils.transformer import FFN, MultiheadAttention, SinePositionalEncoding
from jseg.registry import MODELS

from model_helpers import max_errors, seeded_inputs, seeded_params

LEVELS = ((2, 3), (4, 6), (8, 12))
TOKENS = sum(h * w for h, w in LEVELS)     # 126


def load_seeded(module, seed):
    params = seeded_params({k: v.shape for k, v in module.state_dict().items()}, seed)
    module.load_state_dict({k: jt.array(v) for k, v in params.items()})
    return params


def assert_close(actual, expected, rtol=1e-5):
    _, rel = max_errors(actual, expected)
    assert rel <= rtol, rel


# --------------------------------------------------------------------------------------------
# FFN


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


@pytest.mark.parametrize('act', ['ReLU', 'GELU'])
def test_ffn_names_and_forward(act):
    ffn = FFN(8, 16, act_cfg=dict(type=act)).eval()
    assert {k: tuple(v.shape) for k, v in ffn.state_dict().items()} == {
        'layers.0.0.weight': (16, 8), 'layers.0.0.bias': (16,), 'layers.1.weight': (8, 16), 'layers.1.bias': (8,)}
    p = load_seeded(ffn, 1)
    x, identity = seeded_inputs([(1, 6, 8), (1, 6, 8)], 2)
    hidden = x @ p['layers.0.0.weight'].T + p['layers.0.0.bias']
    hidden = np.maximum(hidden, 0) if act == 'ReLU' else np_gelu(hidden)
    branch = hidden @ p['layers.1.weight'].T + p['layers.1.bias']
    assert_close(ffn(jt.array(x)).numpy(), x + branch)
    assert_close(ffn(jt.array(x), identity=jt.array(identity)).numpy(), identity + branch)
    no_identity = FFN(8, 16, act_cfg=dict(type=act), add_identity=False).eval()
    no_identity.load_state_dict({k: jt.array(v) for k, v in p.items()})
    assert_close(no_identity(jt.array(x)).numpy(), branch)


def test_ffn_three_layers_and_layer_scale_names():
    ffn = FFN(8, 16, num_fcs=3, layer_scale_init_value=0.5)
    shapes = {k: tuple(v.shape) for k, v in ffn.state_dict().items()}
    assert shapes == {'layers.0.0.weight': (16, 8), 'layers.0.0.bias': (16,), 'layers.1.0.weight': (16, 16),
                      'layers.1.0.bias': (16,), 'layers.2.weight': (8, 16), 'layers.2.bias': (8,),
                      'gamma2.weight': (8,)}
    np.testing.assert_array_equal(ffn.gamma2.weight.numpy(), np.full(8, 0.5, np.float32))
    with pytest.raises(ValueError, match='num_fcs'):
        FFN(8, 16, num_fcs=1)


def test_ffn_registered_and_drop_path_active_only_in_training():
    ffn = MODELS.build(dict(type='FFN', embed_dims=8, feedforward_channels=16,
                            dropout_layer=dict(type='DropPath', drop_prob=0.5)))
    x = jt.array(np.ones((64, 1, 8), np.float32))
    ffn.eval()
    eval_out = ffn(x).numpy()
    ffn.train()
    out = ffn(x).numpy()
    branch = eval_out - 1.0
    # DropPath keeps each sample's branch scaled by 2 or drops it
    per_sample = [np.allclose(o, 1.0 + 2 * b, atol=1e-5) or np.allclose(o, 1.0, atol=1e-6)
                  for o, b in zip(out, branch)]
    assert all(per_sample)
    assert 0 < sum(np.allclose(o, 1.0, atol=1e-6) for o in out) < 64


# --------------------------------------------------------------------------------------------
# MultiheadAttention


def np_mha(p, query, key, value, num_heads, attn_mask=None, key_padding_mask=None, prefix='attn.'):
    """PyTorch nn.MultiheadAttention (batch first) in NumPy float64; bool masks True = blocked."""
    w, bias = p[prefix + 'in_proj_weight'].astype(np.float64), p[prefix + 'in_proj_bias'].astype(np.float64)
    b, lq, c = query.shape
    lk = key.shape[1]
    d = c // num_heads
    q = query @ w[:c].T + bias[:c]
    k = key @ w[c:2 * c].T + bias[c:2 * c]
    v = value @ w[2 * c:].T + bias[2 * c:]
    q = q.reshape(b, lq, num_heads, d).transpose(0, 2, 1, 3) / math.sqrt(d)
    k = k.reshape(b, lk, num_heads, d).transpose(0, 2, 1, 3)
    v = v.reshape(b, lk, num_heads, d).transpose(0, 2, 1, 3)
    logits = q @ k.transpose(0, 1, 3, 2)                                    # (B, h, Lq, Lk)
    if attn_mask is not None:
        mask = attn_mask.reshape(b, num_heads, lq, lk) if attn_mask.ndim == 3 else attn_mask
        logits = np.where(mask, -np.inf, logits) if mask.dtype == bool else logits + mask
    if key_padding_mask is not None:
        logits = np.where(key_padding_mask[:, None, None, :], -np.inf, logits)
    with np.errstate(invalid='ignore'):
        e = np.exp(logits - logits.max(-1, keepdims=True))
        attn = e / e.sum(-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, lq, c)
    return out @ p[prefix + 'out_proj.weight'].T + p[prefix + 'out_proj.bias']


@pytest.fixture(scope='module')
def mha():
    module = MultiheadAttention(8, 2, batch_first=True).eval()
    return module, load_seeded(module, 3)


def test_mha_names_and_torch_init():
    module = MultiheadAttention(16, 2, batch_first=True)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        'attn.in_proj_weight': (48, 16), 'attn.in_proj_bias': (48,),
        'attn.out_proj.weight': (16, 16), 'attn.out_proj.bias': (16,)}
    w = module.attn.in_proj_weight.numpy()
    bound = math.sqrt(6.0 / (16 + 48))          # xavier_uniform on (3C, C)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not module.attn.in_proj_bias.numpy().any() and not module.attn.out_proj.bias.numpy().any()


def test_mha_cross_attention_with_positions_and_bool_mask(mha):
    module, p = mha
    query, key, qpos, kpos = seeded_inputs([(1, 6, 8), (1, 5, 8), (1, 6, 8), (1, 5, 8)], 4)
    rng = np.random.RandomState(5)
    mask = rng.rand(2, 6, 5) > 0.6
    mask[:, :, 0] = False                            # no fully blocked row here
    out = module(jt.array(query), jt.array(key), jt.array(key), query_pos=jt.array(qpos),
                 key_pos=jt.array(kpos), attn_mask=jt.array(mask)).numpy()
    expected = query + np_mha(p, query + qpos, key + kpos, key, 2, attn_mask=mask)
    assert_close(out, expected)
    # a 2-D mask applies to every batch entry and head; a float mask is added
    mask2d = mask[0]
    out2d = module(jt.array(query), jt.array(key), attn_mask=jt.array(mask2d)).numpy()
    assert_close(out2d, query + np_mha(p, query, key, key, 2, attn_mask=mask2d))
    additive = rng.standard_normal((6, 5)).astype(np.float32)
    outf = module(jt.array(query), jt.array(key), attn_mask=jt.array(additive)).numpy()
    assert_close(outf, query + np_mha(p, query, key, key, 2, attn_mask=additive))


def test_mha_self_attention_uses_query_pos_for_keys_and_padding_mask(mha):
    module, p = mha
    query, qpos, identity = seeded_inputs([(1, 6, 8), (1, 6, 8), (1, 6, 8)], 6)
    padding = np.array([[False, True, False, False, True, False]])
    out = module(jt.array(query), identity=jt.array(identity), query_pos=jt.array(qpos),
                 key_padding_mask=jt.array(padding)).numpy()
    # key = query + query_pos (shapes agree), value = the query without position
    expected = identity + np_mha(p, query + qpos, query + qpos, query, 2, key_padding_mask=padding)
    assert_close(out, expected)


def test_mha_sequence_first_layout(mha):
    module, p = mha
    seq_first = MultiheadAttention(8, 2, batch_first=False).eval()
    seq_first.load_state_dict({k: jt.array(v) for k, v in p.items()})
    query, key = seeded_inputs([(2, 6, 8), (2, 5, 8)], 7)
    out = seq_first(jt.array(query.transpose(1, 0, 2)), jt.array(key.transpose(1, 0, 2))).numpy()
    assert_close(out.transpose(1, 0, 2), query + np_mha(p, query, key, key, 2))


def test_mha_fully_blocked_row_is_nan_as_in_pytorch(mha):
    """PyTorch turns a bool mask into -inf logits: a query whose keys are all blocked gets NaN.

    Mask2Former never sends such rows (it unblocks all-True rows first); the other rows are unaffected.
    """
    module, p = mha
    query, key = seeded_inputs([(1, 6, 8), (1, 5, 8)], 8)
    mask = np.zeros((2, 6, 5), bool)
    mask[1, 2, :] = True                              # head 1 of query 2 sees nothing
    mask[0, 4, 1:] = True                             # head 0 of query 4 sees only key 0
    out = module(jt.array(query), jt.array(key), attn_mask=jt.array(mask)).numpy()
    expected = query + np_mha(p, query, key, key, 2, attn_mask=mask)
    assert np.isnan(out[0, 2]).all() and np.isnan(expected[0, 2]).all()
    keep = [0, 1, 3, 4, 5]
    assert np.isfinite(out[0, keep]).all()
    assert_close(out[0, keep], expected[0, keep])
    # clearing the all-True row as Mask2Former does gives finite outputs
    cleared = mask & (mask.sum(-1, keepdims=True) != mask.shape[-1])
    out_cleared = module(jt.array(query), jt.array(key), attn_mask=jt.array(cleared)).numpy()
    assert_close(out_cleared, query + np_mha(p, query, key, key, 2, attn_mask=cleared))


def test_mha_rejects_bad_mask_shape(mha):
    module, _ = mha
    x = jt.zeros((1, 6, 8))
    with pytest.raises(ValueError, match='attn_mask'):
        module(x, attn_mask=jt.zeros((3, 6, 6), dtype='bool'))


# --------------------------------------------------------------------------------------------
# SinePositionalEncoding


def np_sine(mask, num_feats, temperature=10000, normalize=False, scale=2 * math.pi, eps=1e-6, offset=0.0):
    valid = (~mask).astype(np.float64)
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    if normalize:
        y = (y + offset) / (y[:, -1:, :] + eps) * scale
        x = (x + offset) / (x[:, :, -1:] + eps) * scale
    b, h, w = mask.shape
    channels = []
    for axis in (y, x):
        for k in range(num_feats):
            dim_t = temperature ** (2 * (k // 2) / num_feats)
            channels.append(np.sin(axis / dim_t) if k % 2 == 0 else np.cos(axis / dim_t))
    return np.stack(channels, 1)                     # (B, 2F, H, W): y channels then x channels


@pytest.mark.parametrize('normalize,offset', [(True, 0.0), (False, 0.0), (True, -0.5)])
def test_sine_positional_encoding_formula(normalize, offset):
    mask = np.zeros((2, 4, 6), bool)
    mask[1, 3:, :] = True
    mask[1, :, 4:] = True                            # image 1 padded bottom and right
    pe = SinePositionalEncoding(8, normalize=normalize, offset=offset)
    out = pe(jt.array(mask)).numpy()
    assert out.shape == (2, 16, 4, 6) and out.dtype == np.float32
    expected = np_sine(mask, 8, normalize=normalize, offset=offset)
    if offset:
        # a fully padded row/column has v_last = 0: (0 + offset) / eps is ~1e6 rad, where float32
        # sin/cos carry no precision in any framework; compare the valid pixels, require finite values
        assert np.isfinite(out).all()
        out, expected = out.transpose(0, 2, 3, 1)[~mask], expected.transpose(0, 2, 3, 1)[~mask]
    assert_close(out, expected, rtol=2e-6)


def test_sine_positional_encoding_hand_values():
    """Unpadded 2x3 map, normalize: y_embed = (i + 1) / (2 + eps) * 2 pi; channel 0 = sin, 1 = cos."""
    out = SinePositionalEncoding(2, normalize=True)(jt.zeros((1, 2, 3), dtype='bool')).numpy()
    eps = 1e-6
    for i in range(2):
        for j in range(3):
            ty, tx = (i + 1) / (2 + eps) * 2 * math.pi, (j + 1) / (3 + eps) * 2 * math.pi
            # num_feats 2: dim_t = (1, 1)
            np.testing.assert_allclose(out[0, :, i, j], [math.sin(ty), math.cos(ty), math.sin(tx), math.cos(tx)],
                                       atol=2e-6)
    with_input = SinePositionalEncoding(2, normalize=True)(None, input=jt.zeros((1, 5, 2, 3))).numpy()
    np.testing.assert_array_equal(with_input, out)


# --------------------------------------------------------------------------------------------
# MultiScaleDeformableAttention


def np_bilinear_zeros(img, x, y):
    """Sample img (H, W, D) at pixel coordinates (x, y) (pixel centres at integers), zero outside."""
    h, w, _ = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(img.shape[-1])
    for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def np_msda_module(p, query, value, reference_points, levels, num_heads, num_points, query_pos=None,
                   key_padding_mask=None):
    """mmcv MultiScaleDeformableAttention.forward (batch first, dropout 0) in NumPy float64."""
    b, lq, c = query.shape
    nl = len(levels)
    identity = query
    if query_pos is not None:
        query = query + query_pos
    v = value @ p['value_proj.weight'].T + p['value_proj.bias']
    if key_padding_mask is not None:
        v = np.where(key_padding_mask[..., None], 0.0, v)
    d = v.shape[-1] // num_heads
    v = v.reshape(b, -1, num_heads, d)
    off = (query @ p['sampling_offsets.weight'].T + p['sampling_offsets.bias']).reshape(
        b, lq, num_heads, nl, num_points, 2)
    logits = (query @ p['attention_weights.weight'].T + p['attention_weights.bias']).reshape(
        b, lq, num_heads, nl * num_points)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    attn = (e / e.sum(-1, keepdims=True)).reshape(b, lq, num_heads, nl, num_points)
    starts = np.cumsum([0] + [h * w for h, w in levels])
    out = np.zeros((b, lq, num_heads, d))
    for bi in range(b):
        for q in range(lq):
            for hd in range(num_heads):
                for li, (hl, wl) in enumerate(levels):
                    img = v[bi, starts[li]:starts[li + 1], hd].reshape(hl, wl, d)
                    for pt in range(num_points):
                        lx = reference_points[bi, q, li, 0] + off[bi, q, hd, li, pt, 0] / wl
                        ly = reference_points[bi, q, li, 1] + off[bi, q, hd, li, pt, 1] / hl
                        out[bi, q, hd] += attn[bi, q, hd, li, pt] * np_bilinear_zeros(
                            img, lx * wl - 0.5, ly * hl - 0.5)
    out = out.reshape(b, lq, num_heads * d)
    return identity + out @ p['output_proj.weight'].T + p['output_proj.bias']


def test_msda_names_and_mmcv_init():
    module = MultiScaleDeformableAttention(16, 4, 3, 2, batch_first=True)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        'sampling_offsets.weight': (48, 16), 'sampling_offsets.bias': (48,),
        'attention_weights.weight': (24, 16), 'attention_weights.bias': (24,),
        'value_proj.weight': (16, 16), 'value_proj.bias': (16,),
        'output_proj.weight': (16, 16), 'output_proj.bias': (16,)}
    assert not module.sampling_offsets.weight.numpy().any()
    assert not module.attention_weights.weight.numpy().any() and not module.attention_weights.bias.numpy().any()
    # 4 heads: directions (1, 0), (0, 1), (-1, 0), (0, -1) (cos/sin normalised by the larger
    # component), point p scaled by p + 1, the same for every level
    bias = module.sampling_offsets.bias.numpy().reshape(4, 3, 2, 2)
    directions = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    for level in range(3):
        np.testing.assert_allclose(bias[:, level, 0], directions, atol=1e-6)
        np.testing.assert_allclose(bias[:, level, 1], 2 * directions, atol=1e-6)
    # 8 heads: the diagonals have both components +-1
    grid8 = sampling_offset_grid(8, 1, 1)[:, 0, 0]
    np.testing.assert_allclose(grid8[1], [1, 1], atol=1e-6)
    np.testing.assert_allclose(grid8[3], [-1, 1], atol=1e-6)
    bound = math.sqrt(6.0 / 32)                      # xavier uniform, fan_in = fan_out = 16
    for proj in (module.value_proj, module.output_proj):
        w = proj.weight.numpy()
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
        assert not proj.bias.numpy().any()


@pytest.fixture(scope='module')
def msda():
    module = MultiScaleDeformableAttention(16, 2, 3, 4, batch_first=True, dropout=0.0).eval()
    params = load_seeded(module, 9)
    params['sampling_offsets.weight'] *= 3.0        # offsets of several pixels: some land outside the maps
    module.load_state_dict({k: jt.array(v) for k, v in params.items()})
    return module, params


def test_msda_forward_matches_numpy(msda):
    module, p = msda
    query, value, pos = seeded_inputs([(1, 5, 16), (1, TOKENS, 16), (1, 5, 16)], 10)
    ref = np.random.RandomState(11).rand(1, 5, 3, 2).astype(np.float32)
    out = module(jt.array(query), jt.array(value), query_pos=jt.array(pos), reference_points=jt.array(ref),
                 spatial_shapes=LEVELS).numpy()
    expected = np_msda_module(p, query, value, ref, LEVELS, 2, 4, query_pos=pos)
    assert_close(out, expected, rtol=1e-5)


def test_msda_key_padding_mask_and_sequence_first(msda):
    module, p = msda
    seq_first = MultiScaleDeformableAttention(16, 2, 3, 4, batch_first=False, dropout=0.0).eval()
    seq_first.load_state_dict({k: jt.array(v) for k, v in p.items()})
    query, value = seeded_inputs([(1, 5, 16), (1, TOKENS, 16)], 12)
    ref = np.random.RandomState(13).rand(1, 5, 3, 2).astype(np.float32)
    padding = np.zeros((1, TOKENS), bool)
    padding[0, 6 + 24:] = True                       # the whole 8x12 level is padding
    out = seq_first(jt.array(query.transpose(1, 0, 2)), jt.array(value.transpose(1, 0, 2)),
                    reference_points=jt.array(ref), spatial_shapes=list(LEVELS),
                    key_padding_mask=jt.array(padding)).numpy().transpose(1, 0, 2)
    expected = np_msda_module(p, query, value, ref, LEVELS, 2, 4, key_padding_mask=padding)
    assert_close(out, expected, rtol=1e-5)


def test_msda_rejects_inconsistent_shapes(msda):
    module, _ = msda
    query = jt.zeros((1, 5, 16))
    ref = jt.zeros((1, 5, 3, 2))
    with pytest.raises(ValueError, match='tokens'):
        module(query, jt.zeros((1, TOKENS - 1, 16)), reference_points=ref, spatial_shapes=LEVELS)
    with pytest.raises(ValueError, match='num_levels'):
        module(query, jt.zeros((1, 6, 16)), reference_points=ref, spatial_shapes=LEVELS[:1])
