"""Swin Transformer backbone, as mmsegmentation 1.x builds it.

* Swin: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
  ICCV 2021, arXiv:2103.14030, https://github.com/microsoft/Swin-Transformer.
* Source of this port: mmsegmentation 1.x ``mmseg/models/backbones/swin.py`` and
  ``mmseg/models/utils/embed.py`` (Apache-2.0, OpenMMLab), as shipped with OffSeg
  (https://github.com/HVision-NKU/OffSeg), the backbone of its Mask2Former experiments.

Parameter and buffer names equal the official ``state_dict()``, so mmseg's converted ImageNet
weights (``swin_tiny_patch4_window7_224_20220317-1cdeb081.pth``, no ``backbone.`` prefix) and
mmseg Mask2Former checkpoints (``prefix='backbone'``) load by name::

    patch_embed.projection / patch_embed.norm      conv k4 s4 ('corner' adaptive padding), LayerNorm
    stages.{s}.blocks.{b}.norm1 / norm2            LayerNorms
    stages.{s}.blocks.{b}.attn.w_msa.{qkv, proj, relative_position_bias_table (169, nH),
                                      relative_position_index (49, 49) int64 buffer}
    stages.{s}.blocks.{b}.ffn.layers.{0.0, 1}      mmcv FFN (GELU)
    stages.{s}.downsample.{norm, reduction}        PatchMerging (unfold channel order), s < 3
    norm{i}                                        output LayerNorm of each returned stage

Block b of a stage uses shifted windows when b is odd (shift = window_size // 2). The map is
zero-padded at the bottom/right to a multiple of the window before the cyclic shift; padded
tokens take part in attention unmasked; the shift mask adds -100 between tokens from
different regions of the rolled map. Softmax(q * scale @ k^T + relative bias [+ mask]) @ v.

``relative_position_index`` is an int64 Var with ``stop_grad``: saved and loaded with the
state dict like PyTorch's persistent buffer, never given to the optimizer.
"""
import math

import jittor as jt
import numpy as np
from jittor import nn

from jseg.models.utils.drop import build_dropout
from jseg.models.utils.embed import PatchEmbed, PatchMerging
from jseg.models.utils.norm import LayerNorm, build_norm_layer
from jseg.models.utils.official_init import load_pretrained, pretrained_init_cfg
from jseg.models.utils.transformer import FFN
from jseg.models.utils.weight_init import constant_init, trunc_normal_init
from jseg.ops import softmax
from jseg.registry import MODELS

__all__ = ['ShiftWindowMSA', 'SwinBlock', 'SwinBlockSequence', 'SwinTransformer', 'WindowMSA',
           'relative_position_index', 'shift_window_mask', 'window_partition', 'window_reverse']


def relative_position_index(window_size):
    """(Wh*Ww, Wh*Ww) int64 index into the (2Wh-1)(2Ww-1)-row bias table, built as mmseg does.

    Token t = (i, j) gets code c_t = i * (2Ww - 1) + j; entry [a, b] = c_a + c_{N-1-b}.
    """
    wh, ww = window_size
    codes = (np.arange(wh)[:, None] * (2 * ww - 1) + np.arange(ww)[None, :]).reshape(1, -1)   # (1, N)
    return (codes + codes.T)[:, ::-1].astype(np.int64).copy()


def window_partition(x, window_size):
    """(B, H, W, C) -> (B * H/ws * W/ws, ws*ws, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    ws = window_size
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows, h, w, window_size):
    """Inverse of :func:`window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shift_window_mask(h_pad, w_pad, window_size, shift_size):
    """Additive mask (nW, ws*ws, ws*ws) of the shifted windows: 0 within a region, -100 across.

    The rolled map splits into 3 x 3 regions by the slices [0, -ws), [-ws, -shift), [-shift, end)
    along each axis; tokens of a window attend only to tokens of their own region.
    """
    regions = np.zeros((1, h_pad, w_pad, 1), np.float32)
    cuts = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in cuts:
        for wsl in cuts:
            regions[:, hs, wsl, :] = label
            label += 1
    ws = window_size
    windows = regions.reshape(1, h_pad // ws, ws, w_pad // ws, ws, 1).transpose(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, ws * ws)                                   # (nW, N)
    diff = windows[:, None, :] - windows[:, :, None]                         # [w, i, j] = r_j - r_i
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


class WindowMSA(nn.Module):
    """Window multi-head self-attention with a relative position bias.

    Args:
        embed_dims (int), num_heads (int), window_size (tuple[int, int]).
        qkv_bias (bool), qk_scale (float | None): default head_dims ** -0.5.
        attn_drop_rate, proj_drop_rate (float).

    Shapes: x (B * nW, N = Wh*Ww, C), mask (nW, N, N) additive or None -> (B * nW, N, C).
    """

    def __init__(self, embed_dims, num_heads, window_size, qkv_bias=True, qk_scale=None, attn_drop_rate=0.0,
                 proj_drop_rate=0.0, init_cfg=None):
        self.embed_dims = embed_dims
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = jt.zeros(((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.relative_position_index = jt.array(relative_position_index(self.window_size)).int64().stop_grad()
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate) if attn_drop_rate > 0 else None
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate) if proj_drop_rate > 0 else None

    def relative_position_bias(self):
        """(nH, N, N) bias gathered from the table."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]   # (N*N, nH)
        return bias.reshape(n, n, -1).permute(2, 0, 1)

    def execute(self, x, mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                    # (B*nW, nH, N, d)
        attn = jt.matmul(q * self.scale, k.transpose(0, 1, 3, 2))          # (B*nW, nH, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(b // num_windows, num_windows, self.num_heads, n, n) \
                + mask.reshape(1, num_windows, 1, n, n)
            attn = attn.reshape(-1, self.num_heads, n, n)
        attn = softmax(attn, -1)
        if self.attn_drop is not None:
            attn = self.attn_drop(attn)
        x = jt.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, n, c)
        x = self.proj(x)
        if self.proj_drop is not None:
            x = self.proj_drop(x)
        return x


class ShiftWindowMSA(nn.Module):
    """(Shifted) window attention over a token map, with padding to whole windows.

    Args:
        embed_dims (int), num_heads (int), window_size (int).
        shift_size (int): 0 (W-MSA) or window_size // 2 (SW-MSA).
        qkv_bias, qk_scale, attn_drop_rate, proj_drop_rate: of :class:`WindowMSA` (``w_msa``).
        dropout_layer (dict): on the output (DropPath in Swin).

    Shapes: tokens (B, H*W, C) and (H, W) -> (B, H*W, C).
    """

    def __init__(self, embed_dims, num_heads, window_size, shift_size=0, qkv_bias=True, qk_scale=None,
                 attn_drop_rate=0.0, proj_drop_rate=0.0, dropout_layer=dict(type='DropPath', drop_prob=0.0),
                 init_cfg=None):
        if not 0 <= shift_size < window_size:
            raise ValueError(f'ShiftWindowMSA: shift_size {shift_size} must be in [0, {window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, (window_size, window_size), qkv_bias=qkv_bias,
                               qk_scale=qk_scale, attn_drop_rate=attn_drop_rate, proj_drop_rate=proj_drop_rate)
        self.drop = build_dropout(dropout_layer)
        self._mask_cache = {}

    def _mask(self, h_pad, w_pad):
        """The shift mask of an (h_pad, w_pad) map, built once per size (a constant, not a parameter)."""
        key = (h_pad, w_pad)
        if key not in self._mask_cache:
            self._mask_cache[key] = jt.array(
                shift_window_mask(h_pad, w_pad, self.window_size, self.shift_size)).stop_grad()
        return self._mask_cache[key]

    def execute(self, query, hw_shape):
        b, n, c = query.shape
        h, w = hw_shape
        if n != h * w:
            raise ValueError(f'ShiftWindowMSA: {n} tokens do not form a {h}x{w} map')
        ws, shift = self.window_size, self.shift_size
        x = query.reshape(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        if pad_r or pad_b:
            x = nn.pad(x.permute(0, 3, 1, 2), [0, pad_r, 0, pad_b]).permute(0, 2, 3, 1)   # zeros bottom/right
        h_pad, w_pad = h + pad_b, w + pad_r
        mask = None
        if shift > 0:
            x = jt.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = self._mask(h_pad, w_pad)
        windows = self.w_msa(window_partition(x, ws), mask=mask)             # (B*nW, ws*ws, C)
        x = window_reverse(windows, h_pad, w_pad, ws)                        # (B, H_pad, W_pad, C)
        if shift > 0:
            x = jt.roll(x, shifts=(shift, shift), dims=(1, 2))
        if pad_r or pad_b:
            x = x[:, :h, :w, :]
        return self.drop(x.reshape(b, h * w, c))


class SwinBlock(nn.Module):
    """x + attn(norm1(x)), then x + ffn(norm2(x)); odd blocks of a stage shift the windows.

    Shapes: tokens (B, H*W, C) and (H, W) -> (B, H*W, C).
    """

    def __init__(self, embed_dims, num_heads, feedforward_channels, window_size=7, shift=False, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'), with_cp=False, init_cfg=None):
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, shift_size=window_size // 2 if shift else 0,
                                   qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop_rate=attn_drop_rate,
                                   proj_drop_rate=drop_rate,
                                   dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(embed_dims, feedforward_channels, num_fcs=2, ffn_drop=drop_rate,
                       dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate), act_cfg=act_cfg,
                       add_identity=True)

    def execute(self, x, hw_shape):
        x = x + self.attn(self.norm1(x), hw_shape)
        return self.ffn(self.norm2(x), identity=x)


class SwinBlockSequence(nn.Module):
    """One stage: ``depth`` blocks (``blocks``), then the optional ``downsample`` (PatchMerging).

    Returns (x_down, down_hw_shape, x, hw_shape): the merged tokens for the next stage and
    this stage's output before merging.
    """

    def __init__(self, embed_dims, num_heads, feedforward_channels, depth, window_size=7, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, downsample=None,
                 act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN'), with_cp=False, init_cfg=None):
        rates = list(drop_path_rate) if isinstance(drop_path_rate, (list, tuple)) else [drop_path_rate] * depth
        if len(rates) != depth:
            raise ValueError(f'SwinBlockSequence: {len(rates)} drop path rates for depth {depth}')
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dims, num_heads, feedforward_channels, window_size=window_size, shift=i % 2 == 1,
                      qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                      drop_path_rate=rates[i], act_cfg=act_cfg, norm_cfg=norm_cfg)
            for i in range(depth)])
        self.downsample = downsample

    def execute(self, x, hw_shape):
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is not None:
            x_down, down_hw_shape = self.downsample(x, hw_shape)
            return x_down, down_hw_shape, x, hw_shape
        return x, hw_shape, x, hw_shape


@MODELS.register_module()
class SwinTransformer(nn.Module):
    """Swin Transformer feature backbone (mmseg's ``SwinTransformer`` signature).

    Args:
        pretrain_img_size (int | tuple): image size of pretraining (sizes ``absolute_pos_embed``).
        in_channels (int): 3.
        embed_dims (int): C of stage 0 (96 for Swin-T); stage i has C * 2**i.
        patch_size (int): patch-embedding kernel (must equal ``strides[0]``).
        window_size (int): 7.
        mlp_ratio (float): FFN hidden width / C.
        depths (Sequence[int]): blocks per stage, (2, 2, 6, 2) for Swin-T.
        num_heads (Sequence[int]): (3, 6, 12, 24) for Swin-T.
        strides (Sequence[int]): patch embedding and merging strides (4, 2, 2, 2).
        out_indices (Sequence[int]): stages returned, each through its output norm ``norm{i}``.
        qkv_bias (bool), qk_scale (float | None).
        patch_norm (bool): LayerNorm in patch embedding and merging.
        drop_rate, attn_drop_rate (float): dropouts.
        drop_path_rate (float): stochastic depth, rising linearly from 0 over all blocks.
        use_abs_pos_embed (bool): add a learned (1, N, C) ``absolute_pos_embed`` (input must then
            be ``pretrain_img_size``).
        act_cfg, norm_cfg (dict): GELU, LN.
        with_cp (bool): gradient checkpointing; not supported (must be False).
        pretrained (str | None): deprecated form of ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        frozen_stages (int): -1 trains everything; k >= 0 freezes the patch embedding and
            stages 0..k-1 with their output norms (no gradients, eval mode).
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=path[, prefix=...])``,
            loaded by :meth:`init_weights`.

    Shapes: (B, in_channels, H, W) -> list of (B, C * 2**i, H_i, W_i) for i in ``out_indices``,
    H_0 = ceil(H / 4), H_i = ceil(H_{i-1} / 2).
    """

    def __init__(self, pretrain_img_size=224, in_channels=3, embed_dims=96, patch_size=4, window_size=7,
                 mlp_ratio=4, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), strides=(4, 2, 2, 2),
                 out_indices=(0, 1, 2, 3), qkv_bias=True, qk_scale=None, patch_norm=True, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.1, use_abs_pos_embed=False, act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'), with_cp=False, pretrained=None, frozen_stages=-1, init_cfg=None):
        if with_cp:
            raise NotImplementedError('SwinTransformer: with_cp (gradient checkpointing) is not supported')
        if strides[0] != patch_size:
            raise ValueError(f'SwinTransformer: strides[0] ({strides[0]}) must equal patch_size ({patch_size}): '
                             'the patch embedding does not overlap')
        if not len(depths) == len(num_heads) == len(strides):
            raise ValueError('SwinTransformer: depths, num_heads and strides need one entry per stage')
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        num_layers = len(depths)
        if not set(out_indices) <= set(range(num_layers)):
            raise ValueError(f'SwinTransformer: out_indices {tuple(out_indices)} outside 0..{num_layers - 1}')
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        elif len(pretrain_img_size) == 1:
            pretrain_img_size = (pretrain_img_size[0], pretrain_img_size[0])
        self.init_cfg = pretrained_init_cfg('SwinTransformer', init_cfg, pretrained)
        self.frozen_stages = frozen_stages
        self.out_indices = tuple(out_indices)
        self.use_abs_pos_embed = use_abs_pos_embed

        self.patch_embed = PatchEmbed(in_channels, embed_dims, kernel_size=patch_size, stride=strides[0],
                                      padding='corner', norm_cfg=norm_cfg if patch_norm else None)
        if use_abs_pos_embed:
            num_patches = (pretrain_img_size[0] // patch_size) * (pretrain_img_size[1] // patch_size)
            self.absolute_pos_embed = jt.zeros((1, num_patches, embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate) if drop_rate > 0 else None

        dpr = np.linspace(0, drop_path_rate, sum(depths)).tolist()           # per block, as torch.linspace
        stages = []
        channels = embed_dims
        for i in range(num_layers):
            downsample = None
            if i < num_layers - 1:
                downsample = PatchMerging(channels, 2 * channels, stride=strides[i + 1],
                                          norm_cfg=norm_cfg if patch_norm else None)
            stages.append(SwinBlockSequence(
                channels, num_heads[i], int(mlp_ratio * channels), depths[i], window_size=window_size,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                drop_path_rate=dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=downsample,
                act_cfg=act_cfg, norm_cfg=norm_cfg))
            if downsample is not None:
                channels = downsample.out_channels
        self.stages = nn.ModuleList(stages)
        self.num_features = [int(embed_dims * 2 ** i) for i in range(num_layers)]
        for i in self.out_indices:
            setattr(self, f'norm{i}', build_norm_layer(norm_cfg, self.num_features[i])[1])
        self._random_init()
        self._freeze_stages()

    # -- modes ---------------------------------------------------------------------------------

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(1, self.frozen_stages + 1):
            if i - 1 in self.out_indices:
                modules.append(getattr(self, f'norm{i - 1}'))
            modules.append(self.stages[i - 1])
        return modules

    def _freeze_stages(self):
        """Stop gradients and set eval mode for the frozen parts (``frozen_stages``)."""
        if self.frozen_stages >= 0 and self.use_abs_pos_embed:
            self.absolute_pos_embed.stop_grad()
        for module in self._frozen_modules():
            for param in module.parameters():
                param.stop_grad()
        self._keep_frozen_eval()

    def _keep_frozen_eval(self):
        # a parent's train() reaches every submodule without calling SwinTransformer.train
        for module in self._frozen_modules():
            for sub in module.modules():
                sub.is_train = False

    def train(self, mode=True):
        """Training mode (``mode=False``: eval); frozen stages stay frozen and in eval mode."""
        if not mode:
            return self.eval()
        super().train()
        self._freeze_stages()
        return self

    # -- weights -------------------------------------------------------------------------------

    def _random_init(self):
        """The official init without a checkpoint: Linear trunc-normal(0.02) with zero bias,
        LayerNorm 1 / 0, conv as PyTorch's default, relative position tables zero."""
        if self.use_abs_pos_embed:
            jt.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=0.02, bias=0.0)
            elif isinstance(m, (LayerNorm, nn.LayerNorm)):
                constant_init(m, val=1.0, bias=0.0)
            elif isinstance(m, nn.Conv2d):
                bound = 1.0 / math.sqrt(m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3])
                jt.init.uniform_(m.weight, -bound, bound)
                if m.bias is not None:
                    jt.init.uniform_(m.bias, -bound, bound)
            elif isinstance(m, WindowMSA):
                m.relative_position_bias_table.assign(jt.zeros_like(m.relative_position_bias_table))

    def init_weights(self):
        """The official init: the random init without ``init_cfg``, else the pretrained weights.

        Checkpoint keys may carry a ``backbone.`` prefix (stripped, as officially); ``init_cfg['prefix']``
        selects a sub-dict first. Relative position tables of another window size are not
        resized (the official code would interpolate them bicubically): they are reported as
        mismatched and keep their values.

        Returns:
            LoadReport | None: what the checkpoint provided (missing/unexpected keys by name).
        """
        self._random_init()
        if self.init_cfg is None:
            return None
        # as officially: keys of a whole-segmentor checkpoint lose their 'backbone.', DataParallel's 'module.' goes
        report = load_pretrained(self, self.init_cfg, 'SwinTransformer',
                                 revise_keys=[(r'^backbone\.', ''), (r'^module\.', '')])
        self._freeze_stages()
        return report

    # -- forward -------------------------------------------------------------------------------

    def execute(self, x):
        if self.frozen_stages >= 0:
            self._keep_frozen_eval()
        x, hw_shape = self.patch_embed(x)                                   # (B, H/4 * W/4, C)
        if self.use_abs_pos_embed:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(f'SwinTransformer: absolute_pos_embed has {self.absolute_pos_embed.shape[1]} '
                                 f'positions, the input gives {x.shape[1]} patches')
            x = x + self.absolute_pos_embed
        if self.drop_after_pos is not None:
            x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape, out, out_hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                h, w = out_hw_shape
                outs.append(out.reshape(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2))   # (B, C_i, H_i, W_i)
        return outs

