"""FreqFusion: frequency-aware fusion of a high- and a low-resolution feature map.

"Frequency-aware Feature Fusion for Dense Image Prediction", Chen et al.,
TPAMI 2024, arXiv:2408.12879. Port of the version vendored in HVision-NKU/OffSeg
(``mmseg/models/decode_heads/freqfusion.py``), which OffSeg uses as its pixel
decoder; parameter and buffer names match its checkpoints.

Overview (default settings, which OffSeg uses)::

    hr (B, Ch, H, W), lr (B, Cl, H/2, W/2)
      -> 1x1 compressors to Cc channels
      -> adaptive high-pass (AHPF, k=3) and low-pass (ALPF, k=5) kernels from
         both compressed maps, the low-resolution half upsampled with CARAFE
      -> lr upsampled x2 by CARAFE with the ALPF kernels
      -> hr sharpened: hr + (hr - CARAFE(hr, AHPF kernels))
      -> lr resampled at offsets predicted from local cosine similarity
         (LocalSimGuidedSampler, 4 groups, bilinear grid sampling)
    returns (low-pass kernels, hr (B, Ch, H, W), lr (B, Cl, H, W))

Readings of the official code kept here on purpose:

* the ``hamming_lowpass`` / ``hamming_highpass`` buffers are ``[1.0]`` unless
  ``hamming_window=True``, and the kernels are re-normalised by their sum
  after the softmax even then;
* ``FreqFusion.init_weights`` runs after the sampler was built, so its Xavier
  init replaces the sampler's own (normal std 1e-3 / zero) init;
* the "nearest" resize after each x2 CARAFE is an identity whenever the high
  resolution map is exactly twice the low one, the only case CARAFE accepts.
"""

import jittor as jt
import numpy as np
from jittor import nn

from jseg.ops import carafe, pixel_shuffle, pixel_unshuffle, softmax
from jseg.ops.grid_sample import grid_sample

from ..utils import GroupNorm, resize
from ..utils.weight_init import constant_init, normal_init, xavier_init

__all__ = ['FreqFusion', 'LocalSimGuidedSampler', 'compute_similarity', 'hamming2d']


def hamming2d(rows, cols):
    """Outer product of two Hamming windows, (rows, cols) float32."""
    return np.outer(np.hamming(rows), np.hamming(cols)).astype(np.float32)


def _conv_modules(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def compute_similarity(x, kernel_size=3, dilation=1, sim='cos'):
    """Similarity of each pixel with its k*k - 1 dilated neighbours.

    Neighbours outside the map are zero vectors (similarity 0). The cosine
    follows PyTorch's ``F.cosine_similarity``: each vector is divided by
    ``max(norm, 1e-8)`` before the dot product.

    Args:
        x (jt.Var): (B, C, H, W).
        kernel_size (int): k, odd.
        dilation (int): spacing of the neighbours.
        sim (str): 'cos' or 'dot'.

    Returns:
        jt.Var: (B, k*k - 1, H, W), neighbours in row-major order, centre left out.
    """
    b, c, h, w = x.shape
    k, d = kernel_size, dilation
    if sim == 'cos':
        # sqrt(max(|x|^2, eps^2)) == max(|x|, eps) with a finite gradient at 0
        norm = jt.sqrt(jt.maximum((x * x).sum(1, keepdims=True), 1e-16))
        x = x / norm
    elif sim != 'dot':
        raise ValueError(f"compute_similarity: sim must be 'cos' or 'dot', got {sim!r}")
    n, centre = k * k - 1, (k * k) // 2
    # neighbour index q in [0, k*k-1) -> tap t = q + (q >= centre), offset ((t // k - k//2) d, (t % k - k//2) d)
    tap = f'(i1+(i1>={centre}))'
    shape = [b, n, c, h, w]
    neighbours = x.reindex(shape, ['i0', 'i2', f'i3+({tap}/{k}-{k // 2})*{d}',
                                   f'i4+({tap}%{k}-{k // 2})*{d}'], overflow_value=0)
    return (neighbours * x.unsqueeze(1)).sum(2)                          # (B, k*k-1, H, W)


class LocalSimGuidedSampler(nn.Module):
    """Offset generator and resampler of FreqFusion ('lp' style, scale 2).

    Offsets (2 * groups * 4 channels at low resolution) come from the local
    cosine similarity of both compressed maps, scaled by a sigmoid gate, plus
    the sub-pixel positions ``init_pos``; the upsampled feature is then
    re-sampled bilinearly (border padding, ``align_corners=False``).

    Args:
        in_channels (int): channels of the compressed maps.
        scale (int): must be 2.
        style (str): must be 'lp'.
        groups (int): offset groups.
        use_direct_scale (bool): gate the offsets with learned scales.
        kernel_size (int): kernel of the offset convolutions.
        local_window (int): similarity window (3).
        sim_type (str): 'cos' (the only value the official forward uses).
        norm (bool): GroupNorm(in_channels // 8) on both maps first.
        direction_feat (str): 'sim' or 'sim_concat'.
    """

    def __init__(self, in_channels, scale=2, style='lp', groups=4, use_direct_scale=True, kernel_size=1,
                 local_window=3, sim_type='cos', norm=True, direction_feat='sim'):
        super().__init__()
        if scale != 2 or style != 'lp':
            raise ValueError(f'LocalSimGuidedSampler supports scale=2, style="lp" only, got {scale}, {style!r}')
        if in_channels < groups or in_channels % groups:
            raise ValueError(f'LocalSimGuidedSampler: {in_channels} channels do not split into {groups} groups')
        if direction_feat not in ('sim', 'sim_concat'):
            raise ValueError(f'LocalSimGuidedSampler: unknown direction_feat {direction_feat!r}')
        self.scale = scale
        self.style = style
        self.groups = groups
        self.local_window = local_window
        self.sim_type = sim_type
        self.direction_feat = direction_feat
        sim_channels = local_window ** 2 - 1
        offset_in = sim_channels if direction_feat == 'sim' else in_channels + sim_channels
        scale_in = in_channels if direction_feat == 'sim' else in_channels + sim_channels
        pad = kernel_size // 2
        lr_out, hr_out = 2 * groups * scale ** 2, 2 * groups
        self.offset = nn.Conv2d(offset_in, lr_out, kernel_size, padding=pad)
        if use_direct_scale:
            self.direct_scale = nn.Conv2d(scale_in, lr_out, kernel_size, padding=pad)
        self.hr_offset = nn.Conv2d(offset_in, hr_out, kernel_size, padding=pad)
        if use_direct_scale:
            self.hr_direct_scale = nn.Conv2d(scale_in, hr_out, kernel_size, padding=pad)
        self.use_direct_scale = use_direct_scale
        self.norm = norm
        if norm:
            self.norm_hr = GroupNorm(in_channels // 8, in_channels)
            self.norm_lr = GroupNorm(in_channels // 8, in_channels)
        self.init_pos = jt.array(self._init_pos()).stop_grad()            # buffer (1, 2*G*s*s, 1, 1)
        self.init_weights()

    def init_weights(self):
        """The sampler's own init (normal std 1e-3 offsets, zero scales); FreqFusion overrides it."""
        normal_init(self.offset, std=0.001)
        normal_init(self.hr_offset, std=0.001)
        if self.use_direct_scale:
            constant_init(self.direct_scale, val=0.0)
            constant_init(self.hr_direct_scale, val=0.0)

    def _init_pos(self):
        """Sub-pixel offsets of the s*s outputs of a low-resolution pixel, in its units.

        Channel ``a*G*s*s + g*s*s + i*s + j`` holds, for coordinate a (0: x, 1: y),
        the offset of output (i, j): x -> pos[j], y -> pos[i], pos = ((0.5 + t) / s - 0.5).
        """
        s, g = self.scale, self.groups
        pos = (np.arange(s, dtype=np.float32) - (s - 1) / 2) / s           # (-0.25, 0.25) for s = 2
        xs = np.broadcast_to(pos[None, :], (s, s))                           # [i, j] -> pos[j]
        ys = np.broadcast_to(pos[:, None], (s, s))                           # [i, j] -> pos[i]
        grid = np.stack([np.tile(xs[None], (g, 1, 1)), np.tile(ys[None], (g, 1, 1))])  # (2, G, s, s)
        return grid.reshape(1, -1, 1, 1).astype(np.float32)

    def sample(self, x, offset, scale=None):
        """Bilinearly resample ``x`` at the positions given by ``offset``.

        Args:
            x (jt.Var): (B, C, Hx, Wx), the map to sample (any size: positions
                are normalised to [-1, 1]).
            offset (jt.Var): (B, 2*G*s*s, H, W), x then y offsets in units of
                the low-resolution grid (H, W).

        Returns:
            jt.Var: (B, C, s*H, s*W).
        """
        s = scale or self.scale
        b, _, h, w = offset.shape
        offset = offset.reshape(b, 2, -1, h, w)                              # (B, 2, G*s*s, H, W)
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5,
                             indexing='ij')
        base = jt.array(np.stack([xs, ys])[None, :, None])                   # (1, 2, 1, H, W) pixel centres
        normalizer = jt.array(np.array([w, h], dtype=np.float32).reshape(1, 2, 1, 1, 1))
        coords = 2 * (base + offset) / normalizer - 1                        # (B, 2, G*s*s, H, W) in [-1, 1]
        coords = pixel_shuffle(coords.reshape(b, -1, h, w), s)              # (B, 2*G, sH, sW)
        coords = coords.reshape(b, 2, -1, s * h, s * w).permute(0, 2, 3, 4, 1)
        grid = coords.reshape(-1, s * h, s * w, 2)                           # (B*G, sH, sW, 2)
        groups = grid.shape[0] // b
        sampled = grid_sample(x.reshape(b * groups, -1, x.shape[-2], x.shape[-1]), grid, mode='bilinear',
                              padding_mode='border', align_corners=False)     # (B*G, C/G, sH, sW)
        return sampled.reshape(b, -1, s * h, s * w)

    def execute(self, hr_x, lr_x, feat2sample):
        """hr_x (B, Cc, 2h, 2w), lr_x (B, Cc, h, w), feat2sample (B, C, *) -> (B, C, 2h, 2w)."""
        if self.norm:
            hr_x = self.norm_hr(hr_x)
            lr_x = self.norm_lr(lr_x)
        hr_sim = compute_similarity(hr_x, self.local_window, dilation=2, sim='cos')
        lr_sim = compute_similarity(lr_x, self.local_window, dilation=2, sim='cos')
        if self.direction_feat == 'sim_concat':
            hr_sim = jt.concat([hr_x, hr_sim], dim=1)
            lr_sim = jt.concat([lr_x, lr_sim], dim=1)
            hr_x, lr_x = hr_sim, lr_sim
        offset = self.get_offset_lp(hr_x, lr_x, hr_sim, lr_sim)
        return self.sample(feat2sample, offset)

    def get_offset_lp(self, hr_x, lr_x, hr_sim, lr_sim):
        """Offsets (B, 2*G*s*s, h, w) at low resolution."""
        s = self.scale
        if self.use_direct_scale:
            direction = self.offset(lr_sim) + pixel_unshuffle(self.hr_offset(hr_sim), s)
            gate = (self.direct_scale(lr_x) + pixel_unshuffle(self.hr_direct_scale(hr_x), s)).sigmoid()
            return direction * gate + self.init_pos
        # official: the ungated path reads the normalised maps, not the similarities
        return (self.offset(lr_x) + pixel_unshuffle(self.hr_offset(hr_x), s)) * 0.25 + self.init_pos


class FreqFusion(nn.Module):
    """Fuse ``hr_feat`` (B, Ch, H, W) with ``lr_feat`` (B, Cl, H/2, W/2).

    Args (official names and defaults):
        hr_channels (int), lr_channels (int): input channels.
        scale_factor (int): only 1 (the value the official forward works with).
        lowpass_kernel (int): ALPF size (5). highpass_kernel (int): AHPF size (3).
        up_group (int): CARAFE groups. encoder_kernel (int), encoder_dilation
            (int): content encoders' conv (3, 1); also the sampler's conv size.
        compressed_channels (int): Cc.
        align_corners (bool), upsample_mode (str): the resize used when
            ``semi_conv=False``.
        feature_resample (bool): use the LocalSimGuidedSampler.
        feature_resample_group (int): its groups. feature_resample_norm (bool):
            its GroupNorms.
        comp_feat_upsample (bool): build the kernels from both compressed maps
            through CARAFE (the official default).
        use_high_pass (bool), use_low_pass (bool), hr_residual (bool),
        semi_conv (bool), hamming_window (bool): as in the official code.

    Returns of :meth:`execute`: ``(mask_lr, hr_feat, lr_feat)`` with the
    normalised low-pass kernels (B, up_group*k*k, H, W), the sharpened
    (B, Ch, H, W) and the upsampled (B, Cl, H, W) features.
    """

    def __init__(self, hr_channels, lr_channels, scale_factor=1, lowpass_kernel=5, highpass_kernel=3, up_group=1,
                 encoder_kernel=3, encoder_dilation=1, compressed_channels=64, align_corners=False,
                 upsample_mode='nearest', feature_resample=True, feature_resample_group=4,
                 comp_feat_upsample=True, use_high_pass=True, use_low_pass=True, hr_residual=True,
                 semi_conv=True, hamming_window=False, feature_resample_norm=True, **kwargs):
        super().__init__()
        if scale_factor != 1:
            raise ValueError(f'FreqFusion supports scale_factor=1 only (as the official forward), got {scale_factor}')
        if semi_conv and comp_feat_upsample and not use_high_pass:
            raise ValueError('FreqFusion: comp_feat_upsample without use_high_pass is not implemented (as official)')
        self.scale_factor = scale_factor
        self.lowpass_kernel = lowpass_kernel
        self.highpass_kernel = highpass_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        enc_pad = int((encoder_kernel - 1) * encoder_dilation / 2)
        self.hr_channel_compressor = nn.Conv2d(hr_channels, compressed_channels, 1)
        self.lr_channel_compressor = nn.Conv2d(lr_channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(compressed_channels, lowpass_kernel ** 2 * up_group * scale_factor ** 2,
                                         encoder_kernel, padding=enc_pad, dilation=encoder_dilation)
        self.align_corners = align_corners
        self.upsample_mode = upsample_mode
        self.hr_residual = hr_residual
        self.use_high_pass = use_high_pass
        self.use_low_pass = use_low_pass
        self.semi_conv = semi_conv
        self.feature_resample = feature_resample
        self.comp_feat_upsample = comp_feat_upsample
        if feature_resample:
            self.dysampler = LocalSimGuidedSampler(compressed_channels, scale=2, style='lp',
                                                   groups=feature_resample_group, use_direct_scale=True,
                                                   kernel_size=encoder_kernel, norm=feature_resample_norm)
        if use_high_pass:
            self.content_encoder2 = nn.Conv2d(compressed_channels,
                                              highpass_kernel ** 2 * up_group * scale_factor ** 2,
                                              encoder_kernel, padding=enc_pad, dilation=encoder_dilation)
        self.hamming_window = hamming_window
        if hamming_window:
            low = hamming2d(lowpass_kernel, lowpass_kernel)[None, None]    # (1, 1, k, k)
            high = hamming2d(highpass_kernel, highpass_kernel)[None, None]
        else:
            low = high = np.ones(1, dtype=np.float32)                        # (1,)
        self.hamming_lowpass = jt.array(low).stop_grad()                     # buffers
        self.hamming_highpass = jt.array(high).stop_grad()
        self.init_weights()

    def init_weights(self):
        """Xavier-uniform on every conv (the sampler's too), then N(0, 1e-3) on the content encoders."""
        for conv in _conv_modules(self):
            xavier_init(conv, distribution='uniform')
        normal_init(self.content_encoder, std=0.001)
        if self.use_high_pass:
            normal_init(self.content_encoder2, std=0.001)

    def kernel_normalizer(self, mask, kernel, hamming):
        """Softmax each group's k*k taps, weight by the window, renormalise to sum 1.

        mask: (B, G*k*k, H, W) -> (B, G*k*k, H, W), same channel order.
        """
        b, c, h, w = mask.shape
        groups = c // (kernel * kernel)
        taps = mask.reshape(b, groups, kernel * kernel, h, w)
        # softmax over the taps, times the window, renormalised: one weighted softmax
        taps = softmax(taps, 2, weight=hamming)
        return taps.reshape(b, c, h, w)

    def execute(self, hr_feat, lr_feat):
        """hr_feat (B, Ch, H, W), lr_feat (B, Cl, H/2, W/2) -> (mask_lr, hr_feat, lr_feat); see the class doc."""
        lk, hk, g = self.lowpass_kernel, self.highpass_kernel, self.up_group
        compressed_hr = self.hr_channel_compressor(hr_feat)                 # (B, Cc, H, W)
        compressed_lr = self.lr_channel_compressor(lr_feat)                 # (B, Cc, H/2, W/2)
        hr_size = compressed_hr.shape[-2:]
        mask_hr = None
        if self.semi_conv:
            if self.comp_feat_upsample:
                mask_hr_hr = self.content_encoder2(compressed_hr)           # (B, G*hk*hk, H, W)
                mask_hr_init = self.kernel_normalizer(mask_hr_hr, hk, self.hamming_highpass)
                compressed_hr = compressed_hr + compressed_hr - carafe(compressed_hr, mask_hr_init, hk, g, 1)
                mask_lr_hr = self.content_encoder(compressed_hr)            # (B, G*lk*lk, H, W)
                mask_lr_init = self.kernel_normalizer(mask_lr_hr, lk, self.hamming_lowpass)
                mask_lr_lr = resize(carafe(self.content_encoder(compressed_lr), mask_lr_init, lk, g, 2),
                                    size=hr_size, mode='nearest')
                mask_lr = mask_lr_hr + mask_lr_lr
                mask_lr_init = self.kernel_normalizer(mask_lr, lk, self.hamming_lowpass)
                mask_hr_lr = resize(carafe(self.content_encoder2(compressed_lr), mask_lr_init, lk, g, 2),
                                    size=hr_size, mode='nearest')
                mask_hr = mask_hr_hr + mask_hr_lr
            else:
                mask_lr = self.content_encoder(compressed_hr) + resize(
                    self.content_encoder(compressed_lr), size=hr_size, mode='nearest')
                if self.use_high_pass:
                    mask_hr = self.content_encoder2(compressed_hr) + resize(
                        self.content_encoder2(compressed_lr), size=hr_size, mode='nearest')
        else:
            compressed_x = resize(compressed_lr, size=hr_size, mode='nearest') + compressed_hr
            mask_lr = self.content_encoder(compressed_x)
            if self.use_high_pass:
                mask_hr = self.content_encoder2(compressed_x)

        mask_lr = self.kernel_normalizer(mask_lr, lk, self.hamming_lowpass)
        if self.semi_conv:
            lr_feat = carafe(lr_feat, mask_lr, lk, g, 2)                    # (B, Cl, H, W)
        else:
            lr_feat = resize(lr_feat, size=hr_feat.shape[2:], mode=self.upsample_mode,
                             align_corners=None if self.upsample_mode == 'nearest' else self.align_corners)
            lr_feat = carafe(lr_feat, mask_lr, lk, g, 1)

        if self.use_high_pass:
            mask_hr = self.kernel_normalizer(mask_hr, hk, self.hamming_highpass)
            hr_feat_hf = hr_feat - carafe(hr_feat, mask_hr, hk, g, 1)
            hr_feat = hr_feat_hf + hr_feat if self.hr_residual else hr_feat_hf

        if self.feature_resample:
            lr_feat = self.dysampler(hr_x=compressed_hr, lr_x=compressed_lr, feat2sample=lr_feat)
        return mask_lr, hr_feat, lr_feat
