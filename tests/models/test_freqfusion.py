"""FreqFusion and its parts: official parity (committed fixture), NumPy checks, init order."""
import os

import jittor as jt
import numpy as np
import pytest
from model_helpers import is_buffer, max_errors, seeded_inputs, seeded_params

from jseg.models.decode_heads.freqfusion import FreqFusion, LocalSimGuidedSampler, compute_similarity, hamming2d
from jseg.ops import fused_ops, pixel_shuffle, pixel_unshuffle
from jseg.runner.checkpoint import load_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'offseg_head')


def load_seeded(model, seed):
    """Seeded parameters (see model_helpers.seeded_params); buffers keep the module's values."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    shapes = {k: v.shape for k, v in state.items() if not is_buffer(k)}
    state.update(seeded_params(shapes, seed))
    load_state_dict(model, state, strict=True)
    return sorted(shapes)


def test_freqfusion_matches_official():
    fixture = np.load(os.path.join(FIXTURES, 'freqfusion.npz'))
    model = FreqFusion(hr_channels=32, lr_channels=48, compressed_channels=20)
    assert load_seeded(model, 1) == list(fixture['param_names'])
    hr, lr = seeded_inputs([(1, 32, 12, 10), (1, 48, 6, 5)], 101)
    outputs = model(jt.array(hr), jt.array(lr))
    for out, key in zip(outputs, ('mask_lr', 'hr_feat', 'lr_feat')):
        abs_err, rel_err = max_errors(out.numpy(), fixture[key])
        assert out.shape == fixture[key].shape
        assert abs_err < 1e-5 and rel_err < 5e-6, (key, abs_err, rel_err)


def test_state_dict_layout_and_buffers():
    model = FreqFusion(hr_channels=32, lr_channels=64, compressed_channels=24)
    state = model.state_dict()
    assert state['hamming_lowpass'].shape == (1,) and state['hamming_lowpass'].item() == 1.0
    assert state['dysampler.init_pos'].shape == (1, 32, 1, 1)
    assert state['dysampler.offset.weight'].shape == (32, 8, 3, 3)      # kernel = encoder_kernel
    assert state['dysampler.norm_hr.weight'].shape == (24,)
    pos = state['dysampler.init_pos'].numpy().reshape(2, 4, 2, 2)     # (x|y, group, i, j)
    assert np.all(pos[0] == np.array([[-0.25, 0.25], [-0.25, 0.25]]))  # x follows the column j
    assert np.all(pos[1] == np.array([[-0.25, -0.25], [0.25, 0.25]]))  # y follows the row i
    buffers = [k for k, v in state.items() if v.is_stop_grad()]
    assert sorted(buffers) == ['dysampler.init_pos', 'hamming_highpass', 'hamming_lowpass']
    windowed = FreqFusion(hr_channels=8, lr_channels=8, compressed_channels=8, hamming_window=True)
    assert windowed.hamming_lowpass.shape == (1, 1, 5, 5) and windowed.hamming_highpass.shape == (1, 1, 3, 3)


def test_init_order_overrides_sampler_init():
    sampler = LocalSimGuidedSampler(16, kernel_size=3)
    assert np.all(sampler.direct_scale.weight.numpy() == 0)           # the sampler's own init
    model = FreqFusion(hr_channels=32, lr_channels=64, compressed_channels=24)
    direct = model.dysampler.direct_scale.weight.numpy()
    fan_in, fan_out = 24 * 9, 32 * 9
    bound = np.sqrt(6.0 / (fan_in + fan_out))                           # Xavier uniform wins
    assert np.abs(direct).max() <= bound and np.abs(direct).max() > 0.5 * bound
    assert np.all(model.dysampler.direct_scale.bias.numpy() == 0)
    assert model.content_encoder.weight.numpy().std() < 3e-3          # N(0, 1e-3)
    assert model.content_encoder2.weight.numpy().std() < 3e-3


def test_compute_similarity_matches_numpy():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 5, 6, 7).astype(np.float32)
    x[0, :, 1, 1] = 0                                                   # a zero vector has similarity 0
    sims = compute_similarity(jt.array(x), 3, dilation=2, sim='cos').numpy()
    xd = x.astype(np.float64)
    unit = xd / np.maximum(np.linalg.norm(xd, axis=1, keepdims=True), 1e-8)
    expected = np.zeros((2, 8, 6, 7))
    q = 0
    for i in range(3):
        for j in range(3):
            if i == j == 1:
                continue
            dy, dx = (i - 1) * 2, (j - 1) * 2
            for y in range(6):
                for xx in range(7):
                    if 0 <= y + dy < 6 and 0 <= xx + dx < 7:
                        expected[:, q, y, xx] = (unit[:, :, y, xx] * unit[:, :, y + dy, xx + dx]).sum(1)
            q += 1
    np.testing.assert_allclose(sims, expected, rtol=1e-5, atol=1e-6)
    dot = compute_similarity(jt.array(x), 3, dilation=1, sim='dot').numpy()
    np.testing.assert_allclose(dot[:, 0, 1:, 1:], (xd[:, :, 1:, 1:] * xd[:, :, :-1, :-1]).sum(1), rtol=1e-5)
    x_var = jt.array(x)
    grad = jt.grad(compute_similarity(x_var, 3, dilation=2).sum(), x_var).numpy()
    assert np.isfinite(grad).all()


@pytest.mark.parametrize('fused', [True, False], ids=['softmax-op', 'composition'])
@pytest.mark.parametrize('hamming_window', [False, True])
def test_kernel_normalizer(hamming_window, fused):
    model = FreqFusion(hr_channels=8, lr_channels=8, compressed_channels=8, hamming_window=hamming_window)
    rng = np.random.RandomState(3)
    mask = rng.randn(2, 2 * 25, 3, 4).astype(np.float32)              # 2 groups of 5x5 taps
    with fused_ops(fused):
        out = model.kernel_normalizer(jt.array(mask), 5, model.hamming_lowpass).numpy()
    taps = mask.astype(np.float64).reshape(2, 2, 25, 3, 4)
    soft = np.exp(taps - taps.max(2, keepdims=True))
    soft /= soft.sum(2, keepdims=True)
    window = hamming2d(5, 5).reshape(1, 1, 25, 1, 1) if hamming_window else 1.0
    expected = soft * window / (soft * window).sum(2, keepdims=True)
    np.testing.assert_allclose(out, expected.reshape(2, 50, 3, 4), rtol=1e-5, atol=1e-7)


def test_pixel_shuffle_roundtrip():
    x = np.arange(2 * 8 * 3 * 2, dtype=np.float32).reshape(2, 8, 3, 2)
    up = pixel_shuffle(jt.array(x), 2).numpy()
    assert up.shape == (2, 2, 6, 4)
    assert up[1, 1, 2 * 2 + 1, 2 * 1 + 0] == x[1, 1 * 4 + 1 * 2 + 0, 2, 1]
    np.testing.assert_array_equal(pixel_unshuffle(jt.array(up), 2).numpy(), x)
