"""The JIT-compiled bilinear grid_sample against a NumPy reference of PyTorch's semantics, a hand-computed
case, finite differences and Jittor's nn.grid_sample."""
import jittor as jt
import numpy as np
import pytest
from jittor import nn

import jseg.ops as ops
from jseg.ops.grid_sample import GridSampleFunction, grid_sample, grid_sample_fused
from ops_test_helpers import check_finite_differences, count_calls, rel_err, var64


def numpy_grid_sample(x, grid, padding_mode, align_corners, dout=None):
    """float64 bilinear grid_sample following PyTorch's GridSampler.h; with ``dout`` also (d_x, d_grid).

    Source coordinate ix = ((gx + 1) / 2) * (W - 1) (align_corners) or ((gx + 1) * W - 1) / 2; 'border'
    clamps it to [0, W - 1] and its derivative is 0 where ix <= 0 or ix >= W - 1; corners outside the map
    read 0. x (N, C, H, W), grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo).
    """
    x, grid = np.asarray(x, np.float64), np.asarray(grid, np.float64)
    n, c, hi, wi = x.shape

    def source(coord, size):
        if align_corners:
            s, d = (coord + 1) / 2 * (size - 1), np.full(coord.shape, (size - 1) / 2)
        else:
            s, d = ((coord + 1) * size - 1) / 2, np.full(coord.shape, size / 2)
        if padding_mode == 'border':
            d = np.where((s <= 0) | (s >= size - 1), 0.0, d)
            s = np.clip(s, 0, size - 1)
        return s, d

    ix, dix = source(grid[..., 0], wi)
    iy, diy = source(grid[..., 1], hi)
    x0, y0 = np.floor(ix).astype(np.int64), np.floor(iy).astype(np.int64)
    wx, wy = [x0 + 1 - ix, ix - x0], [y0 + 1 - iy, iy - y0]
    batch = np.broadcast_to(np.arange(n)[:, None, None], ix.shape)
    out, corners = np.zeros((n, c) + ix.shape[1:]), []
    for a in (0, 1):
        for b in (0, 1):
            yy, xx = y0 + a, x0 + b
            valid = (yy >= 0) & (yy < hi) & (xx >= 0) & (xx < wi)
            vals = x[batch, :, np.clip(yy, 0, hi - 1), np.clip(xx, 0, wi - 1)]      # (N, Ho, Wo, C)
            vals = np.moveaxis(vals, -1, 1) * valid[:, None]                        # (N, C, Ho, Wo)
            out += vals * (wy[a] * wx[b])[:, None]
            corners.append((a, b, yy, xx, valid, vals))
    if dout is None:
        return out
    dout = np.asarray(dout, np.float64)
    d_x, gix, giy = np.zeros_like(x), np.zeros(ix.shape), np.zeros(iy.shape)
    for a, b, yy, xx, valid, vals in corners:
        weight = wy[a] * wx[b]
        for ch in range(c):
            np.add.at(d_x[:, ch], (batch[valid], yy[valid], xx[valid]), (weight * dout[:, ch])[valid])
        s = (vals * dout).sum(1)
        gix += s * wy[a] * (1 if b else -1)
        giy += s * wx[b] * (1 if a else -1)
    return out, d_x, np.stack([gix * dix, giy * diy], -1)


# (N, C, Hi, Wi, Ho, Wo): up- and down-sampling, non-square, sizes 1, a one-pixel-wide output, and one
# case above the kernels' threshold for running on several threads
CASES = [
    (2, 3, 5, 7, 4, 6),
    (1, 2, 1, 4, 3, 2),
    (2, 2, 6, 3, 9, 1),
    (1, 1, 1, 1, 2, 2),
    (2, 17, 20, 12, 250, 260),
]
MODES = [('zeros', False), ('zeros', True), ('border', False), ('border', True)]
_cache = {}


def _grid(rng, n, ho, wo):
    """Coordinates in [-1.3, 1.3] (some outside the map), with the map's corners (+-1) exactly at the start."""
    grid = rng.uniform(-1.3, 1.3, (n, ho * wo, 2))
    exact = np.array([[-1, -1], [1, 1], [-1, 1], [1, -1]], dtype=np.float64)
    grid[0, :min(4, ho * wo)] = exact[:min(4, ho * wo)]
    return grid.reshape(n, ho, wo, 2).astype(np.float32)


def _case_data(case, padding_mode, align_corners):
    key = (case, padding_mode, align_corners)
    if key not in _cache:
        n, c, hi, wi, ho, wo = case
        rng = np.random.default_rng(sum(case))
        x = rng.standard_normal((n, c, hi, wi)).astype(np.float32)
        grid = _grid(rng, n, ho, wo)
        dout = rng.standard_normal((n, c, ho, wo)).astype(np.float32)
        out, d_x, d_grid = numpy_grid_sample(x, grid, padding_mode, align_corners, dout)
        _cache[key] = dict(x=x, grid=grid, dout=dout, out=out, d_x=d_x, d_grid=d_grid)
    return _cache[key]


@pytest.mark.parametrize('padding_mode,align_corners', MODES, ids=[f'{p}-ac{int(a)}' for p, a in MODES])
@pytest.mark.parametrize('case', CASES, ids=lambda c: 'N{}C{}in{}x{}out{}x{}'.format(*c))
def test_forward_and_gradients_match_numpy(case, padding_mode, align_corners):
    d = _case_data(case, padding_mode, align_corners)
    xv, gv = jt.array(d['x']), jt.array(d['grid'])
    out = grid_sample_fused(xv, gv, padding_mode, align_corners)
    assert out.shape == d['out'].shape and out.dtype == jt.float32
    assert rel_err(out.numpy(), d['out']) < 1e-5
    d_x, d_grid = jt.grad((out * jt.array(d['dout'])).sum(), [xv, gv])
    assert rel_err(d_x.numpy(), d['d_x']) < 1e-5
    assert rel_err(d_grid.numpy(), d['d_grid']) < 1e-5


def test_hand_computed_values_and_border_clamp_gradient():
    """input [[1, 2, 4], [8, 16, 32]], align_corners=True: ix = gx + 1, iy = (gy + 1) / 2.

    (0.5, -1): ix 1.5, iy 0 -> 0.5*2 + 0.5*4 = 3; d/dgx = (4 - 2) * 1 = 2; d/dgy = (0.5*(16 - 2) + 0.5*(32 - 4))
    * 0.5 = 10.5 with zero padding, 0 with border padding (iy = 0 is at the clamp limit).
    (-1.5, 1): ix -0.5, iy 1. Zeros: only x[1, 0] is inside, weight 0.5 -> 4; d/dgx = 8 * 1; d/dgy = 0.5 * (0 - 8)
    * 0.5 = -2. Border: ix clamped to 0 -> 8, both derivatives 0.
    """
    x = jt.array(np.array([[[[1, 2, 4], [8, 16, 32]]]], dtype=np.float32))
    grid = jt.array(np.array([[[[0.5, -1], [-1.5, 1]]]], dtype=np.float32))       # (1, 1, 2, 2)
    expected = {'zeros': ([3, 4], [[2, 10.5], [8, -2]], [[0, 0.5, 0.5], [0.5, 0, 0]]),
                'border': ([3, 8], [[2, 0], [0, 0]], [[0, 0.5, 0.5], [1, 0, 0]])}
    for padding_mode, (out_e, d_grid_e, d_x_e) in expected.items():
        out = grid_sample_fused(x, grid, padding_mode, align_corners=True)
        d_x, d_grid = jt.grad(out.sum(), [x, grid])
        np.testing.assert_allclose(out.numpy().ravel(), out_e, atol=1e-6)
        np.testing.assert_allclose(d_grid.numpy().reshape(2, 2), d_grid_e, atol=1e-6)
        np.testing.assert_allclose(d_x.numpy().reshape(2, 3), d_x_e, atol=1e-6)


@pytest.mark.parametrize('padding_mode,align_corners', [('zeros', False), ('border', True)])
def test_gradients_match_finite_differences_float64(padding_mode, align_corners):
    """The backward kernels (called directly) against central differences of the forward kernel."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 4, 5))
    grid = rng.uniform(-1.2, 1.2, (2, 3, 2, 2))
    dout = rng.standard_normal((2, 3, 3, 2))

    def loss(arrays):
        out = GridSampleFunction().execute(var64(arrays[0]), var64(arrays[1]), padding_mode, align_corners)
        return float((out.numpy() * dout).sum())

    fn = GridSampleFunction()
    out = fn.execute(var64(x), var64(grid), padding_mode, align_corners)
    assert out.dtype == jt.float64
    assert rel_err(out.numpy(), numpy_grid_sample(x, grid, padding_mode, align_corners)) < 1e-13
    d_x, d_grid = fn.grad(var64(dout))
    assert d_x.dtype == jt.float64 and d_grid.dtype == jt.float64
    check_finite_differences(loss, [x, grid], [d_x.numpy(), d_grid.numpy()], rng, tol=1e-7)


@pytest.mark.parametrize('padding_mode', ['zeros', 'border'])
def test_matches_jittor_grid_sample(padding_mode):
    """Same values and gradients as Jittor's nn.grid_sample (random points, none at a clamp limit)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 4, 6, 2)).astype(np.float32)
    dout = jt.array(rng.standard_normal((2, 3, 4, 6)).astype(np.float32))
    results = []
    for fn in (grid_sample_fused, lambda a, g, p, ac: nn.grid_sample(a, g, 'bilinear', p, ac)):
        xv, gv = jt.array(x), jt.array(grid)
        out = fn(xv, gv, padding_mode, False)
        results.append([out.numpy()] + [v.numpy() for v in jt.grad((out * dout).sum(), [xv, gv])])
    for ours, jittors in zip(*results):
        assert rel_err(ours, jittors) < 1e-5


def test_permuted_inputs_and_one_sided_gradients():
    """Vars made by permute (as FreqFusion builds its grid) and gradients of one input only."""
    case, mode = CASES[0], ('border', False)
    d = _case_data(case, *mode)
    x = jt.array(np.ascontiguousarray(d['x'].transpose(0, 2, 3, 1))).permute(0, 3, 1, 2)     # (N, C, Hi, Wi)
    grid = jt.array(np.ascontiguousarray(d['grid'].transpose(0, 3, 1, 2))).permute(0, 2, 3, 1)
    out = grid_sample_fused(x, grid, *mode)
    assert rel_err(out.numpy(), d['out']) < 1e-5
    (d_grid,) = jt.grad((out * jt.array(d['dout'])).sum(), [grid])
    assert rel_err(d_grid.numpy(), d['d_grid']) < 1e-5
    xv = jt.array(d['x'])
    out = grid_sample_fused(xv, jt.array(d['grid']).stop_grad(), *mode)
    (d_x,) = jt.grad((out * jt.array(d['dout'])).sum(), [xv])
    assert rel_err(d_x.numpy(), d['d_x']) < 1e-5


def test_repeated_calls_do_not_accumulate():
    """Jittor reuses output buffers without zeroing them: every kernel must initialise its output."""
    d = _case_data(CASES[0], 'zeros', False)
    xv, gv = jt.array(d['x']), jt.array(d['grid'])
    for _ in range(3):
        out = grid_sample_fused(xv, gv, 'zeros', False)
        d_x, d_grid = jt.grad((out * jt.array(d['dout'])).sum(), [xv, gv])
        assert rel_err(out.numpy(), d['out']) < 1e-5
        assert rel_err(d_x.numpy(), d['d_x']) < 1e-5 and rel_err(d_grid.numpy(), d['d_grid']) < 1e-5


def test_public_grid_sample_dispatch(monkeypatch):
    """Bilinear zeros/border -> the kernel (when switched on); reflection, nearest, float64 grid with a float32
    input and the switch off -> Jittor's nn.grid_sample."""
    calls = count_calls(monkeypatch, GridSampleFunction)
    d = _case_data(CASES[0], 'border', True)
    x, g = jt.array(d['x']), jt.array(d['grid'])
    with ops.fused_ops(True):
        out = grid_sample(x, g, 'bilinear', 'border', True)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-5
        for mode, padding in [('bilinear', 'reflection'), ('nearest', 'zeros')]:
            out = grid_sample(x, g, mode, padding, False)
            expected = nn.grid_sample(x, g, mode=mode, padding_mode=padding, align_corners=False)
            assert len(calls) == 1 and rel_err(out.numpy(), expected.numpy()) < 1e-6
    with ops.fused_ops(False):
        out = grid_sample(x, g, 'bilinear', 'border', True)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-5


def test_rejects_bad_arguments():
    x, g = jt.zeros((2, 3, 4, 4)), jt.zeros((2, 5, 5, 2))
    with pytest.raises(ValueError, match='padding_mode'):
        grid_sample_fused(x, g, 'reflection')
    with pytest.raises(ValueError, match=r'grid \(N, Ho, Wo, 2\)'):
        grid_sample_fused(x, jt.zeros((2, 5, 5, 3)))
    with pytest.raises(ValueError, match='batch'):
        grid_sample_fused(x, jt.zeros((1, 5, 5, 2)))
    with pytest.raises(ValueError, match='float32 or float64'):
        grid_sample_fused(x.int32(), g)


def test_model_call_sites_use_the_kernel(monkeypatch):
    """FreqFusion's sampler (border padding) and point_sample (zero padding) go through the kernel when the
    fused operators are on, and give Jittor's nn.grid_sample result either way."""
    from jseg.models.decode_heads.freqfusion import LocalSimGuidedSampler
    from jseg.models.utils.point_sample import point_sample

    calls = count_calls(monkeypatch, GridSampleFunction)
    rng = np.random.default_rng(2)
    sampler = LocalSimGuidedSampler(8, groups=4)
    feat = jt.array(rng.standard_normal((1, 8, 6, 4)).astype(np.float32))
    offset = jt.array(rng.uniform(-0.8, 0.8, (1, 32, 3, 2)).astype(np.float32))   # (B, 2*G*s*s, h, w)
    maps = jt.array(rng.standard_normal((2, 3, 4, 6)).astype(np.float32))
    points = jt.array(rng.uniform(-0.1, 1.1, (2, 7, 2)).astype(np.float32))
    results = {}
    for enabled in (True, False):
        with ops.fused_ops(enabled):
            results[enabled] = (sampler.sample(feat, offset).numpy(), point_sample(maps, points).numpy())
        assert len(calls) == 2
    for ours, jittors in zip(results[True], results[False]):
        assert rel_err(ours, jittors) < 1e-5
