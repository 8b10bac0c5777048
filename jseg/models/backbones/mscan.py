"""MSCAN (MSCAN-T/S/B/L), the multi-scale convolutional attention encoder of SegNeXt.

* SegNeXt: Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for
  Semantic Segmentation", NeurIPS 2022, arXiv:2209.08575,
  https://github.com/Visual-Attention-Network/SegNeXt.
* Source of this port: the mmsegmentation 1.x version shipped with OffSeg,
  https://github.com/HVision-NKU/OffSeg, ``mmseg/models/backbones/mscan.py``
  (Apache-2.0, OpenMMLab / the SegNeXt authors), used there as the backbone of
  the SegNeXt + offset learning experiments (Zhang et al., ICCV 2025, arXiv:2508.08811).

Parameter names equal the official ``state_dict()`` (``patch_embed1.proj.0.weight``,
``block3.4.attn.spatial_gating_unit.conv2_1.weight``, ``norm4.bias``, ...), so
mmsegmentation's ImageNet weights (``mscan_*_20230227-*.pth``) and SegNeXt
checkpoints load without conversion; PyTorch's BatchNorm ``num_batches_tracked``
counters have no counterpart and are skipped by the loader.

Layout for a (B, 3, H, W) input (stage i = 1..4, C_i = embed_dims[i - 1])::

    patch_embed1   StemConv: two 3x3 stride-2 convs with BN (GELU between)     /4
    patch_embed2-4 OverlapPatchEmbed: 3x3 stride-2 conv + BN                  /8, /16, /32
    block{i}       MSCABlock x depths[i - 1]:
                   x + ls1 * SpatialAttention(BN(x));  x + ls2 * Mlp(BN(x))
    norm{i}        LayerNorm over channels -> (B, C_i, H / 2**(i+1), W / 2**(i+1))

Multi-scale convolutional attention (MSCA): a 5x5 depth-wise conv, three
branches of depth-wise strip convs (1x7/7x1, 1x11/11x1, 1x21/21x1), their sum
mixed by a 1x1 conv, used as weights on the input.
"""
import jittor as jt
import numpy as np
from jittor import nn

from jseg.models.utils import DropPath, build_activation_layer, build_norm_layer
from jseg.models.utils.official_init import init_vit_style, load_pretrained, pretrained_init_cfg
from jseg.registry import MODELS

__all__ = ['ARCHS', 'MSCAN', 'MSCAAttention', 'MSCABlock', 'MSCASpatialAttention', 'Mlp',
           'OverlapPatchEmbed', 'StemConv']

# The SegNeXt encoders (official configs: configs/segnext/segnext_mscan-*.py and
# local_configs/segnext_offset_learning/*).
ARCHS = {
    't': dict(embed_dims=(32, 64, 160, 256), mlp_ratios=(8, 8, 4, 4), depths=(3, 3, 5, 2)),
    's': dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 4, 2)),
    'b': dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(3, 3, 12, 3)),
    'l': dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(3, 5, 27, 3)),
}
# What the official class builds when given no sizes (not one of T/S/B/L).
_DEFAULT_SIZES = dict(embed_dims=(64, 128, 256, 512), mlp_ratios=(4, 4, 4, 4), depths=(3, 4, 6, 3))
_KERNELS = [5, [1, 7], [1, 11], [1, 21]]
_PADDINGS = [2, [0, 3], [0, 5], [0, 10]]


# ---------------------------------------------------------------------------------------------
# blocks


class Mlp(nn.Module):
    """1x1 conv, 3x3 depth-wise conv, act, dropout, 1x1 conv, dropout. (B, C, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_cfg=dict(type='GELU'),
                 drop=0.0):
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, 1, 1, bias=True, groups=hidden_features)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def execute(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class StemConv(nn.Module):
    """Stage-1 stem: conv3x3/2 (C/2) - norm - act - conv3x3/2 (C) - norm. (B, 3, H, W) -> (B, C, H/4, W/4).

    ``proj`` keeps the official Sequential indices (0 conv, 1 norm, 2 act, 3 conv, 4 norm).
    """

    def __init__(self, in_channels, out_channels, act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='SyncBN', requires_grad=True)):
        mid = out_channels // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, mid)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(mid, out_channels, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, out_channels)[1])

    def execute(self, x):
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    """Downsampling between stages: conv (padding k // 2) + norm. (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    def __init__(self, patch_size=7, stride=4, in_channels=3, embed_dim=768,
                 norm_cfg=dict(type='SyncBN', requires_grad=True)):
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = build_norm_layer(norm_cfg, embed_dim)[1]

    def execute(self, x):
        return self.norm(self.proj(x))


class MSCAAttention(nn.Module):
    """Multi-scale convolutional attention weights, applied to the input. (B, C, H, W) -> (B, C, H, W).

    Parameters: ``conv0`` (5x5 depth-wise), ``conv{j}_1`` / ``conv{j}_2`` (the 1xk and
    kx1 depth-wise strips of branch j = 0, 1, 2), ``conv3`` (1x1 channel mixing).
    """

    def __init__(self, channels, kernel_sizes=_KERNELS, paddings=_PADDINGS):
        self.conv0 = nn.Conv2d(channels, channels, kernel_sizes[0], padding=paddings[0], groups=channels)
        self.num_branches = len(kernel_sizes) - 1
        for i, (kernel, pad) in enumerate(zip(kernel_sizes[1:], paddings[1:])):
            for j, (k, p) in enumerate(((kernel, pad), (kernel[::-1], pad[::-1])), start=1):
                setattr(self, f'conv{i}_{j}',
                        nn.Conv2d(channels, channels, tuple(k), padding=tuple(p), groups=channels))
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def execute(self, x):
        attn = self.conv0(x)
        total = attn
        for i in range(self.num_branches):
            total = total + getattr(self, f'conv{i}_2')(getattr(self, f'conv{i}_1')(attn))
        return self.conv3(total) * x


class MSCASpatialAttention(nn.Module):
    """1x1 conv, act, MSCA, 1x1 conv, plus the input. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels, attention_kernel_sizes=_KERNELS, attention_kernel_paddings=_PADDINGS,
                 act_cfg=dict(type='GELU')):
        self.proj_1 = nn.Conv2d(in_channels, in_channels, 1)
        self.activation = build_activation_layer(act_cfg)
        self.spatial_gating_unit = MSCAAttention(in_channels, attention_kernel_sizes, attention_kernel_paddings)
        self.proj_2 = nn.Conv2d(in_channels, in_channels, 1)

    def execute(self, x):
        out = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return out + x


class MSCABlock(nn.Module):
    """One MSCAN block with layer scale (init 1e-2) on both residual branches. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels, attention_kernel_sizes=_KERNELS, attention_kernel_paddings=_PADDINGS,
                 mlp_ratio=4.0, drop=0.0, drop_path=0.0, act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='SyncBN', requires_grad=True)):
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.attn = MSCASpatialAttention(channels, attention_kernel_sizes, attention_kernel_paddings, act_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = Mlp(channels, int(channels * mlp_ratio), act_cfg=act_cfg, drop=drop)
        self.layer_scale_1 = jt.full((channels,), 1e-2, dtype='float32')
        self.layer_scale_2 = jt.full((channels,), 1e-2, dtype='float32')

    def _branch(self, scale, out):
        out = scale.reshape(1, -1, 1, 1) * out
        return self.drop_path(out) if self.drop_path is not None else out

    def execute(self, x):
        x = x + self._branch(self.layer_scale_1, self.attn(self.norm1(x)))
        return x + self._branch(self.layer_scale_2, self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------
# model


def _resolve_sizes(arch, overrides):
    if arch is None:
        sizes = dict(_DEFAULT_SIZES)
    else:
        key = str(arch).lower()
        if key not in ARCHS:
            raise KeyError(f'MSCAN: unknown arch {arch!r}; choose one of {sorted(ARCHS)}')
        sizes = dict(ARCHS[key])
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    return tuple(sizes['embed_dims']), tuple(sizes['mlp_ratios']), tuple(sizes['depths'])


@MODELS.register_module()
class MSCAN(nn.Module):
    """SegNeXt's Multi-Scale Convolutional Attention Network.

    Args:
        arch (str | None): 't', 's', 'b' or 'l' picks ``embed_dims``/``mlp_ratios``/``depths``
            from :data:`ARCHS`; explicit values of those override it (the official
            configs pass them explicitly). None: the official class defaults.
        in_channels (int): input channels.
        embed_dims, mlp_ratios, depths (Sequence): per-stage width, MLP ratio, blocks.
        drop_rate (float): MLP dropout.
        drop_path_rate (float): stochastic depth, rising linearly to this value over all blocks.
        num_stages (int): 4.
        attention_kernel_sizes, attention_kernel_paddings (list): MSCA kernels (5, 1x7, 1x11, 1x21).
        act_cfg (dict): GELU.
        norm_cfg (dict): norm of the stem, patch embeddings and blocks (``BN`` in the SegNeXt
            configs, ``SyncBN`` by default).
        pretrained (str | None): deprecated form of ``init_cfg``.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=path[, prefix=...])``,
            loaded by :meth:`init_weights`.

    Shapes: (B, in_channels, H, W) -> list of 4 maps (B, embed_dims[i], H_i, W_i) with
    H_0 = ceil(ceil(H / 2) / 2) and H_i = ceil(H_{i-1} / 2) (strides 4, 8, 16, 32).
    """

    def __init__(self, arch=None, in_channels=3, embed_dims=None, mlp_ratios=None, drop_rate=0.0,
                 drop_path_rate=0.0, depths=None, num_stages=4, attention_kernel_sizes=_KERNELS,
                 attention_kernel_paddings=_PADDINGS, act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='SyncBN', requires_grad=True), pretrained=None, init_cfg=None):
        embed_dims, mlp_ratios, depths = _resolve_sizes(
            arch, dict(embed_dims=embed_dims, mlp_ratios=mlp_ratios, depths=depths))
        if not num_stages == len(embed_dims) == len(mlp_ratios) == len(depths):
            raise ValueError(f'MSCAN: embed_dims, mlp_ratios and depths need num_stages={num_stages} entries')
        self.arch = arch
        self.embed_dims = embed_dims
        self.depths = depths
        self.num_stages = num_stages
        self.out_channels = list(embed_dims)
        self.init_cfg = pretrained_init_cfg('MSCAN', init_cfg, pretrained)

        dpr = np.linspace(0, drop_path_rate, sum(depths)).tolist()   # stochastic depth per block
        cur = 0
        for i in range(num_stages):
            if i == 0:
                patch_embed = StemConv(in_channels, embed_dims[0], act_cfg=act_cfg, norm_cfg=norm_cfg)
            else:
                patch_embed = OverlapPatchEmbed(3, 2, embed_dims[i - 1], embed_dims[i], norm_cfg=norm_cfg)
            blocks = nn.ModuleList([
                MSCABlock(embed_dims[i], attention_kernel_sizes, attention_kernel_paddings,
                          mlp_ratio=mlp_ratios[i], drop=drop_rate, drop_path=dpr[cur + j], act_cfg=act_cfg,
                          norm_cfg=norm_cfg)
                for j in range(depths[i])])
            cur += depths[i]
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', build_norm_layer(dict(type='LN'), embed_dims[i])[1])  # eps 1e-5
        init_vit_style(self)

    def init_weights(self):
        """The official init: the random init without ``init_cfg``, else the pretrained weights.

        Keys the checkpoint lacks keep their construction-time values (the random
        init here; PyTorch's layer defaults in the official code) and are reported.

        Returns:
            LoadReport | None: what the checkpoint provided (missing/unexpected keys by name).
        """
        if self.init_cfg is None:
            init_vit_style(self)
            return None
        return load_pretrained(self, self.init_cfg, 'MSCAN')

    def execute(self, x):
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f'patch_embed{i}')(x)             # (B, C_i, H_i, W_i)
            for block in getattr(self, f'block{i}'):
                x = block(x)
            # LayerNorm over channels, on channel-last tokens
            x = getattr(self, f'norm{i}')(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            outs.append(x)
        return outs
