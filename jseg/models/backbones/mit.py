"""Mix Transformer (MiT-B0 ... B5), the encoder of SegFormer.

* SegFormer: Xie et al., "SegFormer: Simple and Efficient Design for Semantic
  Segmentation with Transformers", NeurIPS 2021, arXiv:2105.15203,
  https://github.com/NVlabs/SegFormer.
* Source of this port: the mmsegmentation 1.x version shipped with OffSeg,
  https://github.com/HVision-NKU/OffSeg, ``mmseg/models/backbones/mit.py``
  (Apache-2.0, OpenMMLab), used there as the backbone of the SegFormer +
  offset learning experiments (Zhang et al., ICCV 2025, arXiv:2508.08811).

Parameter names equal the official ``state_dict()`` (``layers.0.0.projection.weight``,
``layers.2.1.5.attn.attn.in_proj_weight``, ``layers.3.1.0.ffn.layers.4.weight``,
...), so mmsegmentation's converted ImageNet weights (``mit_b*_20220624-*.pth``)
and SegFormer checkpoints load without conversion.

Layout of stage ``i`` (``layers.i``), for a (B, 3, H, W) input::

    layers.i.0  PatchEmbed      overlapping conv k7/s4 (i=0) or k3/s2, then LayerNorm
    layers.i.1  blocks          TransformerEncoderLayer x num_layers[i]:
                                x + DropPath(EfficientMHA(LN(x)));  x + DropPath(MixFFN(LN(x)))
    layers.i.2  LayerNorm       -> (B, C_i, H / 2**(i+2), W / 2**(i+2))

with C_i = embed_dims * num_heads[i]. Efficient multi-head attention reduces the
keys and values spatially by a ``sr_ratio x sr_ratio`` strided conv.
"""

import jittor as jt
import numpy as np
from jittor import nn

from jseg.models.utils import DropPath, build_activation_layer, build_norm_layer
from jseg.models.utils.official_init import init_vit_style, load_pretrained, pretrained_init_cfg
from jseg.models.utils.transformer import MultiheadAttentionCore
from jseg.registry import MODELS

__all__ = ['ARCHS', 'MixVisionTransformer', 'EfficientMultiheadAttention', 'MixFFN', 'PatchEmbed',
           'TransformerEncoderLayer', 'nchw_to_nlc', 'nlc_to_nchw']

# The six SegFormer encoders (official configs: configs/segformer/segformer_mit-b*.py).
# All share num_heads (1, 2, 5, 8), patch sizes (7, 3, 3, 3), strides (4, 2, 2, 2),
# sr_ratios (8, 4, 2, 1) and mlp_ratio 4.
ARCHS = {
    'b0': dict(embed_dims=32, num_layers=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    'b1': dict(embed_dims=64, num_layers=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    'b2': dict(embed_dims=64, num_layers=(3, 4, 6, 3), num_heads=(1, 2, 5, 8)),
    'b3': dict(embed_dims=64, num_layers=(3, 4, 18, 3), num_heads=(1, 2, 5, 8)),
    'b4': dict(embed_dims=64, num_layers=(3, 8, 27, 3), num_heads=(1, 2, 5, 8)),
    'b5': dict(embed_dims=64, num_layers=(3, 6, 40, 3), num_heads=(1, 2, 5, 8)),
}
# What the official class builds when given no sizes (not one of B0-B5).
_DEFAULT_SIZES = dict(embed_dims=64, num_layers=(3, 4, 6, 3), num_heads=(1, 2, 4, 8))


def nlc_to_nchw(x, hw_shape):
    """Tokens (B, H*W, C) -> map (B, C, H, W)."""
    h, w = hw_shape
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f'nlc_to_nchw: {n} tokens do not form a {h}x{w} map')
    return x.transpose(0, 2, 1).reshape(b, c, h, w)


def nchw_to_nlc(x):
    """Map (B, C, H, W) -> tokens (B, H*W, C)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(0, 2, 1)


# ---------------------------------------------------------------------------------------------
# blocks


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (padding k // 2) + norm over channels.

    Args:
        in_channels (int), embed_dims (int), kernel_size (int), stride (int).
        norm_cfg (dict | None): norm applied to the tokens (LayerNorm in MiT).

    Shapes: (B, in_channels, H, W) -> tokens (B, H'*W', embed_dims) and (H', W').
    """

    def __init__(self, in_channels, embed_dims, kernel_size, stride, norm_cfg=None):
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride,
                                    padding=kernel_size // 2, bias=True)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1] if norm_cfg is not None else None

    def execute(self, x):
        x = self.projection(x)                      # (B, C, H', W')
        hw_shape = tuple(x.shape[2:])
        x = nchw_to_nlc(x)                          # (B, H'W', C)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw_shape


class EfficientMultiheadAttention(nn.Module):
    """Multi-head attention with spatially reduced keys and values (SegFormer Sec. 3.1).

    Keys/values come from the tokens reshaped to a map, reduced by a
    ``sr_ratio``-strided conv (``sr``) and a norm (``norm``) when ``sr_ratio > 1``.

    Args:
        embed_dims (int), num_heads (int), attn_drop (float), proj_drop (float).
        drop_path (float): stochastic depth of the residual branch.
        qkv_bias (bool): biases of the attention projections.
        norm_cfg (dict): norm after the reduction conv.
        sr_ratio (int): spatial reduction ratio.

    Shapes: tokens (B, H*W, C), ``hw_shape`` (H, W) -> (B, H*W, C), identity added.
    """

    def __init__(self, embed_dims, num_heads, attn_drop=0.0, proj_drop=0.0, drop_path=0.0,
                 qkv_bias=True, norm_cfg=dict(type='LN'), sr_ratio=1):
        self.attn = MultiheadAttentionCore(embed_dims, num_heads, attn_drop=attn_drop, bias=qkv_bias)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else None
        self.dropout_layer = DropPath(drop_path) if drop_path > 0 else None
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, stride=sr_ratio)
            self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def execute(self, x, hw_shape, identity=None):
        x_kv = x
        if self.sr_ratio > 1:
            x_kv = nchw_to_nlc(self.sr(nlc_to_nchw(x, hw_shape)))   # (B, HW / sr^2, C)
            x_kv = self.norm(x_kv)
        out = self.attn(x, x_kv)
        if self.proj_drop is not None:
            out = self.proj_drop(out)
        if self.dropout_layer is not None:
            out = self.dropout_layer(out)
        return (x if identity is None else identity) + out


class MixFFN(nn.Module):
    """SegFormer's feed-forward block: 1x1 conv, 3x3 depth-wise conv, act, 1x1 conv.

    ``layers`` keeps the official Sequential indices (0 fc1, 1 dw-conv, 2 act,
    3 dropout, 4 fc2, 5 dropout), so checkpoints name ``layers.0``/``layers.1``/``layers.4``.

    Shapes: tokens (B, H*W, C), ``hw_shape`` -> (B, H*W, C), identity added.
    """

    def __init__(self, embed_dims, feedforward_channels, act_cfg=dict(type='GELU'), ffn_drop=0.0,
                 drop_path=0.0):
        hidden = feedforward_channels
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            build_activation_layer(act_cfg),
            nn.Dropout(ffn_drop),
            nn.Conv2d(hidden, embed_dims, 1),
            nn.Dropout(ffn_drop))
        self.dropout_layer = DropPath(drop_path) if drop_path > 0 else None

    def execute(self, x, hw_shape, identity=None):
        out = nchw_to_nlc(self.layers(nlc_to_nchw(x, hw_shape)))
        if self.dropout_layer is not None:
            out = self.dropout_layer(out)
        return (x if identity is None else identity) + out


class TransformerEncoderLayer(nn.Module):
    """One MiT block: pre-norm efficient attention, then pre-norm MixFFN.

    Shapes: tokens (B, H*W, C), ``hw_shape`` -> (B, H*W, C).
    """

    def __init__(self, embed_dims, num_heads, feedforward_channels, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, qkv_bias=True, act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN'),
                 sr_ratio=1):
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = EfficientMultiheadAttention(
            embed_dims, num_heads, attn_drop=attn_drop_rate, proj_drop=drop_rate,
            drop_path=drop_path_rate, qkv_bias=qkv_bias, norm_cfg=norm_cfg, sr_ratio=sr_ratio)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = MixFFN(embed_dims, feedforward_channels, act_cfg=act_cfg, ffn_drop=drop_rate,
                          drop_path=drop_path_rate)

    def execute(self, x, hw_shape):
        x = self.attn(self.norm1(x), hw_shape, identity=x)
        return self.ffn(self.norm2(x), hw_shape, identity=x)


# ---------------------------------------------------------------------------------------------
# model


def _resolve_sizes(arch, embed_dims, num_layers, num_heads):
    if arch is None:
        sizes = dict(_DEFAULT_SIZES)
    else:
        key = str(arch).lower()
        if key not in ARCHS:
            raise KeyError(f'MixVisionTransformer: unknown arch {arch!r}; choose one of {sorted(ARCHS)}')
        sizes = dict(ARCHS[key])
    for name, value in (('embed_dims', embed_dims), ('num_layers', num_layers), ('num_heads', num_heads)):
        if value is not None:
            sizes[name] = value
    return sizes['embed_dims'], tuple(sizes['num_layers']), tuple(sizes['num_heads'])


@MODELS.register_module()
class MixVisionTransformer(nn.Module):
    """The SegFormer encoder: four stages of overlapping patch embedding + efficient transformers.

    Args:
        arch (str | None): 'b0' ... 'b5' picks ``embed_dims``/``num_layers``/``num_heads``
            from :data:`ARCHS`; explicit values of those three override it (the
            official configs pass them explicitly). None: the official class defaults.
        in_channels (int): input channels.
        embed_dims (int): base width; stage i has ``embed_dims * num_heads[i]`` channels.
        num_stages (int): 4.
        num_layers (Sequence[int]): blocks per stage.
        num_heads (Sequence[int]): attention heads per stage.
        patch_sizes, strides (Sequence[int]): patch-embedding conv kernels and strides.
        sr_ratios (Sequence[int]): key/value spatial reduction per stage.
        out_indices (Sequence[int]): stages returned.
        mlp_ratio (int): MixFFN hidden width / stage width.
        qkv_bias (bool): attention projection biases.
        drop_rate, attn_drop_rate (float): dropout after projections / on attention.
        drop_path_rate (float): stochastic depth, rising linearly to this value over all blocks.
        act_cfg, norm_cfg (dict): GELU and LayerNorm (eps 1e-6) officially.
        pretrained (str | None): deprecated form of ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=path[, prefix=...])``;
            loaded by :meth:`init_weights`.
        with_cp (bool): gradient checkpointing; not supported (must be False).

    Shapes: (B, in_channels, H, W) -> list of (B, embed_dims * num_heads[i], H_i, W_i) for
    i in ``out_indices``, with H_0 = ceil(H / 4) and H_i = ceil(H_{i-1} / 2).
    """

    def __init__(self, arch=None, in_channels=3, embed_dims=None, num_stages=4, num_layers=None,
                 num_heads=None, patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2), sr_ratios=(8, 4, 2, 1),
                 out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN', eps=1e-6),
                 pretrained=None, init_cfg=None, with_cp=False):
        if with_cp:
            raise NotImplementedError('MixVisionTransformer: with_cp (gradient checkpointing) is not supported')
        embed_dims, num_layers, num_heads = _resolve_sizes(arch, embed_dims, num_layers, num_heads)
        if not num_stages == len(num_layers) == len(num_heads) == len(patch_sizes) == len(strides) \
                == len(sr_ratios):
            raise ValueError('MixVisionTransformer: num_layers, num_heads, patch_sizes, strides and '
                             f'sr_ratios need num_stages={num_stages} entries each')
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        if max(out_indices) >= num_stages:
            raise ValueError(f'MixVisionTransformer: out_indices {out_indices} beyond {num_stages} stages')
        self.arch = arch
        self.embed_dims = embed_dims
        self.num_stages = num_stages
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.out_indices = tuple(out_indices)
        self.init_cfg = pretrained_init_cfg('MixVisionTransformer', init_cfg, pretrained)
        self.out_channels = [embed_dims * h for h in num_heads]

        dpr = np.linspace(0, drop_path_rate, sum(num_layers)).tolist()   # stochastic depth per block
        cur = 0
        layers = []
        for i, depth in enumerate(num_layers):
            dims = self.out_channels[i]
            patch_embed = PatchEmbed(in_channels, dims, patch_sizes[i], strides[i], norm_cfg=norm_cfg)
            blocks = nn.ModuleList([
                TransformerEncoderLayer(dims, num_heads[i], mlp_ratio * dims, drop_rate=drop_rate,
                                        attn_drop_rate=attn_drop_rate, drop_path_rate=dpr[cur + j],
                                        qkv_bias=qkv_bias, act_cfg=act_cfg, norm_cfg=norm_cfg,
                                        sr_ratio=sr_ratios[i])
                for j in range(depth)])
            norm = build_norm_layer(norm_cfg, dims)[1]
            layers.append(nn.ModuleList([patch_embed, blocks, norm]))
            in_channels = dims
            cur += depth
        self.layers = nn.ModuleList(layers)
        init_vit_style(self)

    def init_weights(self):
        """The official init: the random init without ``init_cfg``, else the pretrained weights.

        Keys the checkpoint lacks keep their construction-time values (the random
        init here; PyTorch's layer defaults in the official code) and are reported.

        Returns:
            LoadReport | None: what the checkpoint provided (missing/unexpected keys by name).
        """
        if self.init_cfg is None:
            for m in self.modules():
                if isinstance(m, MultiheadAttentionCore):
                    m.reset_parameters()
            init_vit_style(self)
            return None
        return load_pretrained(self, self.init_cfg, 'MixVisionTransformer')

    def execute(self, x):
        outs = []
        for i, (patch_embed, blocks, norm) in enumerate(self.layers):
            x, hw_shape = patch_embed(x)             # (B, N, C_i)
            for block in blocks:
                x = block(x, hw_shape)
            x = nlc_to_nchw(norm(x), hw_shape)       # (B, C_i, H_i, W_i)
            if i in self.out_indices:
                outs.append(x)
        return outs
