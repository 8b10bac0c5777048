"""SwinTransformer: pieces against closed forms and NumPy, official names/counts, loading, freezing, parity.

Independent expectations: the relative position index of the Swin paper (closed form), window
partition and the shift mask from token coordinates, ``nn.Unfold``'s channel order, a NumPy Swin
forward written per token (no roll / partition), the state-dict counts of the official Swin-T
(189 entries, 12 int64 buffers, 27,520,698 parameters) and the official outputs stored in
``tests/fixtures/mask2former`` (made by ``tools/dev/make_mask2former_fixtures.py``).
"""
import gzip
import json
import math
import os
import sys
import zlib

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.models.backbones.swin import (SwinTransformer, relative_position_index, shift_window_mask,
                                        window_partition, window_reverse)
from jseg.models.utils.embed import AdaptivePadding, PatchMerging
from jseg.registry import MODELS

from model_helpers import max_errors, seeded_inputs, seeded_params, seeded_weight

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures', 'mask2former')
TESTS_UTILS = os.path.join(HERE, '..', 'utils')
H, W = 64, 96                     # the shared tiny input: 16x24 tokens after the patch embedding
TINY = dict(embed_dims=8, depths=(2, 2), num_heads=(1, 2), strides=(4, 2), out_indices=(0, 1),
            drop_path_rate=0.0)


def state_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# pieces


@pytest.mark.parametrize('window', [(7, 7), (3, 4)])
def test_relative_position_index_closed_form(window):
    """Swin paper: index[a, b] = (i_a - i_b + Wh - 1) * (2 Ww - 1) + (j_a - j_b + Ww - 1)."""
    wh, ww = window
    index = relative_position_index(window)
    assert index.shape == (wh * ww, wh * ww) and index.dtype == np.int64
    for a in range(wh * ww):
        for b in range(wh * ww):
            (ia, ja), (ib, jb) = divmod(a, ww), divmod(b, ww)
            assert index[a, b] == (ia - ib + wh - 1) * (2 * ww - 1) + (ja - jb + ww - 1)


def test_window_partition_and_reverse():
    ws, h, w = 3, 6, 9
    x = np.arange(2 * h * w * 2, dtype=np.float32).reshape(2, h, w, 2)
    windows = window_partition(jt.array(x), ws).numpy()
    assert windows.shape == (2 * 2 * 3, 9, 2)
    for b in range(2):
        for wi in range(2):
            for wj in range(3):
                win = windows[b * 6 + wi * 3 + wj]
                for t in range(9):
                    ti, tj = divmod(t, ws)
                    np.testing.assert_array_equal(win[t], x[b, wi * ws + ti, wj * ws + tj])
    np.testing.assert_array_equal(window_reverse(jt.array(windows), h, w, ws).numpy(), x)


def region(coord, size, ws, shift):
    """Region label of a rolled coordinate: [0, size-ws) -> 0, [size-ws, size-shift) -> 1, rest -> 2."""
    return 0 if coord < size - ws else (1 if coord < size - shift else 2)


def test_shift_window_mask_from_coordinates():
    ws, shift, hp, wp = 7, 3, 21, 28
    mask = shift_window_mask(hp, wp, ws, shift)
    assert mask.shape == (12, 49, 49)
    for win in range(12):
        wi, wj = divmod(win, wp // ws)
        labels = [(region(wi * ws + t // ws, hp, ws, shift), region(wj * ws + t % ws, wp, ws, shift))
                  for t in range(ws * ws)]
        expected = np.array([[0.0 if la == lb else -100.0 for lb in labels] for la in labels])
        np.testing.assert_array_equal(mask[win], expected)
    assert not mask[0].any() and mask[-1].min() == -100.0      # interior window unmasked, corner one split


def test_adaptive_padding_shapes():
    pad = AdaptivePadding(kernel_size=16, stride=16, padding='corner')
    assert pad(jt.zeros((1, 1, 15, 17))).shape == (1, 1, 16, 32)
    assert pad.get_pad_shape((16, 17)) == (0, 15)
    same = AdaptivePadding(kernel_size=2, stride=2, padding='same')
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    out = same(jt.array(x)).numpy()
    assert out.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(out[0, 0, :3, :3], x[0, 0])   # pad 1 -> 0 before, 1 after
    assert not out[0, 0, 3].any() and not out[0, 0, :, 3].any()


def np_unfold(x, k):
    """nn.Unfold(k, stride=k) of (B, C, H, W): (B, C*k*k, L), channel c*k*k + ki*k + kj, blocks row-major."""
    b, c, h, w = x.shape
    cols = []
    for bi in range(h // k):
        for bj in range(w // k):
            cols.append(np.stack([x[:, ch, bi * k + ki, bj * k + kj]
                                  for ch in range(c) for ki in range(k) for kj in range(k)], 1))
    return np.stack(cols, 2)


def test_patch_merging_unfold_order_with_corner_padding():
    merge = PatchMerging(3, 5).eval()
    p = seeded_params(state_shapes(merge), 21)
    merge.load_state_dict({k: jt.array(v) for k, v in p.items()})
    assert sorted(p) == ['norm.bias', 'norm.weight', 'reduction.weight'] and p['reduction.weight'].shape == (5, 12)
    h, w = 5, 4                                                # odd height: one zero row at the bottom
    tokens = seeded_inputs([(2, h * w, 3)], 22)[0]
    out, size = merge(jt.array(tokens), (h, w))
    assert size == (3, 2)
    image = np.zeros((2, 3, 6, 4), np.float64)
    image[:, :, :h] = tokens.reshape(2, h, w, 3).transpose(0, 3, 1, 2)
    grouped = np_unfold(image, 2).transpose(0, 2, 1)           # (B, L, 12)
    mean = grouped.mean(-1, keepdims=True)
    normed = (grouped - mean) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5) * p['norm.weight'] + p['norm.bias']
    _, rel = max_errors(out.numpy(), normed @ p['reduction.weight'].T)
    assert rel < 1e-5


# --------------------------------------------------------------------------------------------
# whole backbone vs a per-token NumPy Swin


def np_layer_norm(x, w, b):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_window_attention(x, p, prefix, num_heads, ws, shift):
    """(S)W-MSA of tokens x (H, W, C), written per token from coordinates (no roll, no partition).

    After zero padding to (Hp, Wp), token (y, x) sits at rolled coordinate r = (y - shift) mod Hp;
    tokens attend within their rolled window, with the relative bias of their in-window offsets
    and -100 between different regions of the rolled map when shifted.
    """
    h, w, c = x.shape
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    padded = np.zeros((hp, wp, c))
    padded[:h, :w] = x
    d = c // num_heads
    qkv = padded.reshape(-1, c) @ p[prefix + 'qkv.weight'].T + p[prefix + 'qkv.bias']
    q, k, v = qkv[:, :c] * d ** -0.5, qkv[:, c:2 * c], qkv[:, 2 * c:]
    table = p[prefix + 'relative_position_bias_table']
    ry = (np.arange(hp)[:, None] - shift) % hp * np.ones((1, wp), int)
    rx = np.ones((hp, 1), int) * ((np.arange(wp)[None, :] - shift) % wp)
    ry, rx = ry.reshape(-1), rx.reshape(-1)
    win = (ry // ws) * (wp // ws) + rx // ws
    out = np.zeros((hp * wp, c))
    for t in range(hp * wp):
        others = np.nonzero(win == win[t])[0]
        rel = (ry[t] % ws - ry[others] % ws + ws - 1) * (2 * ws - 1) + (rx[t] % ws - rx[others] % ws + ws - 1)
        same = np.array([region(ry[t], hp, ws, shift) == region(ry[o], hp, ws, shift)
                         and region(rx[t], wp, ws, shift) == region(rx[o], wp, ws, shift) for o in others])
        for hd in range(num_heads):
            sl = slice(hd * d, (hd + 1) * d)
            logits = k[others, sl] @ q[t, sl] + table[rel, hd]
            if shift:
                logits = logits + np.where(same, 0.0, -100.0)
            a = np.exp(logits - logits.max())
            out[t, sl] = (a / a.sum()) @ v[others, sl]
    out = out @ p[prefix + 'proj.weight'].T + p[prefix + 'proj.bias']
    return out.reshape(hp, wp, c)[:h, :w]


def np_swin(image, p, embed_dims, depths, num_heads, ws=7):
    """Official Swin forward (drop path 0) in float64; returns the normed stage outputs (B=1)."""
    k = 4
    _, cin, hh, ww = image.shape
    ph, pw = math.ceil(hh / k), math.ceil(ww / k)
    img = np.zeros((cin, ph * k, pw * k))
    img[:, :hh, :ww] = image[0]
    patches = img.reshape(cin, ph, k, pw, k).transpose(1, 3, 0, 2, 4).reshape(ph, pw, -1)
    x = patches @ p['patch_embed.projection.weight'].reshape(embed_dims, -1).T + p['patch_embed.projection.bias']
    x = np_layer_norm(x, p['patch_embed.norm.weight'], p['patch_embed.norm.bias'])
    outs = []
    for s, depth in enumerate(depths):
        for b in range(depth):
            pre = f'stages.{s}.blocks.{b}.'
            attn_in = np_layer_norm(x, p[pre + 'norm1.weight'], p[pre + 'norm1.bias'])
            x = x + np_window_attention(attn_in, p, pre + 'attn.w_msa.', num_heads[s], ws, ws // 2 if b % 2 else 0)
            hidden = np_gelu(np_layer_norm(x, p[pre + 'norm2.weight'], p[pre + 'norm2.bias'])
                             @ p[pre + 'ffn.layers.0.0.weight'].T + p[pre + 'ffn.layers.0.0.bias'])
            x = x + hidden @ p[pre + 'ffn.layers.1.weight'].T + p[pre + 'ffn.layers.1.bias']
        outs.append(np_layer_norm(x, p[f'norm{s}.weight'], p[f'norm{s}.bias']).transpose(2, 0, 1)[None])
        if s < len(depths) - 1:
            pre = f'stages.{s}.downsample.'
            h, w, c = x.shape
            grid = np.zeros((c, math.ceil(h / 2) * 2, math.ceil(w / 2) * 2))
            grid[:, :h, :w] = x.transpose(2, 0, 1)
            grouped = np_unfold(grid[None], 2)[0].T.reshape(grid.shape[1] // 2, grid.shape[2] // 2, 4 * c)
            x = np_layer_norm(grouped, p[pre + 'norm.weight'], p[pre + 'norm.bias']) @ p[pre + 'reduction.weight'].T
    return outs


@pytest.fixture(scope='module')
def tiny():
    model = SwinTransformer(**TINY).eval()
    params = {k: v.numpy() for k, v in model.state_dict().items()}
    floats = seeded_params({k: v.shape for k, v in params.items() if v.dtype == np.float32}, 31)
    model.load_state_dict({k: jt.array(v) for k, v in floats.items()})
    params.update(floats)
    return model, params


def test_tiny_swin_matches_per_token_numpy(tiny):
    model, p = tiny
    image = seeded_inputs([(1, 3, H, W)], 32)[0]
    outs = model(jt.array(image))
    expected = np_swin(image.astype(np.float64), p, 8, (2, 2), (1, 2))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 24), (1, 16, 8, 12)]
    for out, exp in zip(outs, expected):
        _, rel = max_errors(out.numpy(), exp)
        assert rel < 1e-4, rel


def test_tiny_swin_every_parameter_gets_a_gradient(tiny):
    model, _ = tiny
    model.train()
    image = jt.array(seeded_inputs([(1, 3, H, W)], 33)[0])
    loss = sum((o * o).mean() for o in model(image))
    trainable = [(k, v) for k, v in model.named_parameters() if not v.is_stop_grad()]
    grads = jt.grad(loss, [v for _, v in trainable])
    assert len(trainable) == len(model.state_dict()) - 4        # all but the 4 int64 index buffers
    for (name, _), g in zip(trainable, grads):
        assert np.abs(g.numpy()).max() > 0, name
    model.eval()


# --------------------------------------------------------------------------------------------
# official Swin-T: names, counts, buffers, loading, freezing


@pytest.fixture(scope='module')
def swin_t():
    return MODELS.build(dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                             window_size=7, mlp_ratio=4, drop_path_rate=0.3)).eval()


def official_backbone_layout():
    with gzip.open(os.path.join(FIXTURES, 'official_state_dict_base.json.gz'), 'rt') as f:
        return [(n[len('backbone.'):], tuple(s), d) for n, s, d in json.load(f) if n.startswith('backbone.')]


def test_swin_t_state_dict_matches_official(swin_t):
    sd = swin_t.state_dict()
    ints = sorted(k for k, v in sd.items() if not str(v.dtype).startswith('float'))
    assert len(sd) == 189 and len(ints) == 12
    assert all(k.endswith('attn.w_msa.relative_position_index') and str(sd[k].dtype) == 'int64' for k in ints)
    assert sum(int(np.prod(v.shape)) for k, v in sd.items() if k not in ints) == 27520698
    official = official_backbone_layout()
    assert state_shapes(swin_t) == {n: s for n, s, _ in official}
    assert {n for n, _, d in official if d == 'int64'} == set(ints)
    assert sd['stages.0.downsample.reduction.weight'].shape == [192, 384]
    assert sd['stages.2.blocks.5.attn.w_msa.relative_position_bias_table'].shape == [169, 12]


def test_swin_t_index_buffers_equal_official_crc(swin_t):
    with np.load(os.path.join(FIXTURES, 'mask2former_64x96.npz')) as ref:
        names, crcs = [str(n) for n in ref['int_buffer_names']], ref['int_buffer_crc32'].tolist()
    sd = swin_t.state_dict()
    assert [zlib.crc32(np.ascontiguousarray(sd[n[len('backbone.'):]].numpy()).tobytes()) for n in names] == crcs


def test_index_buffers_stay_out_of_training(swin_t):
    """int64 buffers: stop_grad after construction, eval/train and loading; not in optimizer groups."""
    from jseg.runner.optim import param_groups
    names = [k for k, v in swin_t.state_dict().items() if str(v.dtype) == 'int64']
    swin_t.train()
    swin_t.load_state_dict({n: jt.array(relative_position_index((7, 7))) for n in names})
    params = dict(swin_t.named_parameters())
    assert all(params[n].is_stop_grad() for n in names)
    grouped = {n for g in param_groups(swin_t, 1e-4, 0.05) for n in g['names']}
    assert not grouped & set(names) and len(grouped) == 189 - 12
    swin_t.eval()


def test_drop_path_rates_rise_linearly(swin_t):
    rates = [blk.attn.drop.drop_prob for stage in swin_t.stages for blk in stage.blocks
             if hasattr(blk.attn.drop, 'drop_prob')]
    assert len(rates) == 11                                     # block 0 has rate 0 (identity)
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 12)[1:], rtol=1e-6)


def _write_pth(path, state):
    sys.path.insert(0, TESTS_UTILS)
    try:
        import torch_format_writer
    finally:
        sys.path.remove(TESTS_UTILS)
    torch_format_writer.save_zip({'state_dict': state}, str(path))


def test_pretrained_loading_strips_backbone_prefix_and_reports(tmp_path):
    model = SwinTransformer(**TINY)
    shapes = state_shapes(model)
    state = {('backbone.' + k): (seeded_weight(k, s) if 'index' not in k else relative_position_index((7, 7)))
             for k, s in shapes.items()}
    state['decode_head.conv_seg.weight'] = np.zeros((2, 8, 1, 1), np.float32)    # not the backbone's
    path = tmp_path / 'segmentor.pth'
    _write_pth(path, state)
    loaded = SwinTransformer(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = loaded.init_weights()
    assert not report.missing and not report.mismatched
    assert report.unexpected == ['decode_head.conv_seg.weight']
    sd = loaded.state_dict()
    for key in ['patch_embed.projection.weight', 'stages.1.blocks.1.attn.w_msa.relative_position_bias_table',
                'stages.0.downsample.reduction.weight', 'norm1.bias']:
        np.testing.assert_array_equal(sd[key].numpy(), state['backbone.' + key])
    assert sd['stages.0.blocks.0.attn.w_msa.relative_position_index'].is_stop_grad()
    with pytest.raises(FileNotFoundError, match='not found'):
        SwinTransformer(**TINY, pretrained=str(tmp_path / 'missing.pth')).init_weights()
    with pytest.raises(ValueError, match='not both'):
        SwinTransformer(**TINY, pretrained=str(path), init_cfg=dict(type='Pretrained', checkpoint=str(path)))


def test_random_init_is_official():
    """No checkpoint: Linear trunc-normal(0.02) zero bias, LN 1/0, bias tables zero (official init path)."""
    jt.set_global_seed(0)
    sd = {k: v.numpy() for k, v in SwinTransformer(**TINY).state_dict().items()}
    w = sd['stages.1.blocks.0.ffn.layers.0.0.weight']
    # mmengine's trunc_normal_init(std=0.02) truncates at the absolute bounds +-2 (100 sigma): a plain normal
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002 and np.abs(w).max() > 0.05
    assert not sd['stages.1.blocks.0.ffn.layers.0.0.bias'].any()
    assert (sd['norm0.weight'] == 1).all() and not sd['norm0.bias'].any()
    assert not sd['stages.0.blocks.1.attn.w_msa.relative_position_bias_table'].any()


def test_frozen_stages_stop_gradients_and_stay_in_eval():
    model = SwinTransformer(**dict(TINY, frozen_stages=1, drop_path_rate=0.5))
    frozen = [k for k, v in model.named_parameters() if v.is_stop_grad() and 'index' not in k]
    assert all(k.startswith(('patch_embed.', 'stages.0.', 'norm0.')) for k in frozen)
    assert {k for k in model.state_dict()
            if k.startswith(('patch_embed.', 'stages.0.', 'norm0.')) and 'index' not in k} == set(frozen)
    assert not any(v.is_stop_grad() for k, v in model.named_parameters()
                   if k.startswith('stages.1.') and 'index' not in k)
    jt.Module.train(model)              # a parent's train() does not call SwinTransformer.train
    model(jt.zeros((1, 3, H, W)))
    assert not model.stages[0].blocks[1].attn.drop.is_training()
    assert model.stages[1].blocks[1].attn.drop.is_training()
    model.train()
    assert [k for k, v in model.named_parameters() if v.is_stop_grad() and 'index' not in k] == frozen


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='patch_size'):
        SwinTransformer(**TINY, patch_size=2)
    with pytest.raises(ValueError, match='out_indices'):
        SwinTransformer(**dict(TINY, out_indices=(0, 2)))
    with pytest.raises(NotImplementedError, match='with_cp'):
        SwinTransformer(**TINY, with_cp=True)


# --------------------------------------------------------------------------------------------
# official outputs (fixture of tools/dev/make_mask2former_fixtures.py)


def test_swin_t_matches_official_outputs(swin_t):
    with np.load(os.path.join(FIXTURES, 'mask2former_64x96.npz')) as data:
        ref = {k: data[k] for k in data.files if k.startswith('swin/') or k == 'image_seed'}
    swin_t.load_state_dict({name: jt.array(seeded_weight('backbone.' + name, shape))
                            for name, shape, dtype in official_backbone_layout() if dtype == 'float32'})
    rgb = np.random.RandomState(int(ref['image_seed'])).randint(0, 256, (H, W, 3)).astype(np.uint8)[..., ::-1]
    image = ((rgb - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375]))
    with jt.no_grad():
        outs = swin_t(jt.array(image.transpose(2, 0, 1)[None].astype(np.float32)))
    errors = []
    for i, out in enumerate(outs):
        key = f'swin/out{i}'
        actual = out.numpy()
        assert actual.shape == tuple(ref[key + '/shape'])
        scale = float(ref[key + '/absmax'])
        err = np.abs(actual.reshape(-1)[ref[key + '/idx']] - ref[key + '/val']).max() / scale
        rows = np.moveaxis(actual.astype(np.float64), 1, 0).reshape(actual.shape[1], -1)
        err = max(err, np.abs(rows.mean(1) - ref[key + '/row_mean']).max() / scale,
                  abs(np.abs(actual).max() - scale) / scale)
        errors.append(err)
    print('\nSwin-T outputs rel. error vs official: ' + ' '.join(f'{e:.2e}' for e in errors))
    assert max(errors) < 1e-4, errors
