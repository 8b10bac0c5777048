"""EfficientFormerV2 feature backbone (S0, S1, S2, L), the encoder of OffSeg.

* EfficientFormerV2: Li et al., "Rethinking Vision Transformers for MobileNet Size
  and Speed", ICCV 2023, arXiv:2212.08059, https://github.com/snap-research/EfficientFormer.
* OffSeg: Zhang et al., "Revisiting Efficient Semantic Segmentation: Learning Offsets
  for Better Spatial and Class Feature Alignment", ICCV 2025, arXiv:2508.08811.
  Source of this port: https://github.com/HVision-NKU/OffSeg,
  ``mmseg/models/backbones/efficientformer_v2.py`` (Apache-2.0, with the OffSeg
  authors' non-commercial patent terms; see that repository's LICENSE).

This is OffSeg's segmentation variant, rewritten for Jittor. Parameter and buffer
names equal the official ``state_dict()`` (``patch_embed.0.weight``,
``network.4.8.token_mixer.attention_biases_seg``, ...), so official ImageNet and
OffSeg checkpoints load without conversion. PyTorch's BatchNorm
``num_batches_tracked`` counters have no counterpart and are skipped by the loader.

Layout (S1 at 512x512: 32x128x128, 48x64x64, 120x32x32, 224x16x16)::

    patch_embed            two stride-2 3x3 conv-BN-GELU                   /4
    network.0  stage 0     FFN blocks                                      /4
    network.1  Embedding   3x3 stride-2 conv-BN                            /8
    network.2  stage 1     FFN blocks                                      /8
    network.3  Embedding   3x3 stride-2 conv-BN                            /16
    network.4  stage 2     FFN blocks, last ``vit_num``: Attention4D (stride 2) + FFN
    network.5  Embedding   conv-BN + Attention4DDownsample                 /32
    network.6  stage 3     FFN blocks, last ``vit_num``: Attention4D + FFN

Attention position biases follow the official segmentation code: one learnable
bias per (head, relative offset) for a token grid built for ``resolution``
(512), gathered into a (heads, N, N) table and, for any other input size,
resized bicubically in the flattened token-index space to the actual attention
size. ``attention_biases``/``attention_bias_idxs`` are the unused ImageNet
buffers, kept so that ImageNet checkpoints load without shape mismatches.

Feature maps of the stride-16 stage must have even height and width (input
sizes with ``ceil(H / 16)`` even, e.g. multiples of 32); the official model
fails on other sizes, this one raises a ``ValueError`` saying so.
"""
import math
import os.path as osp

import jittor as jt
from jittor import nn

from jseg.models.utils import BatchNorm2d, DropPath, build_activation_layer
from jseg.models.utils.weight_init import trunc_normal_
from jseg.ops import softmax
from jseg.registry import MODELS

from .efficientformer_v2_utils import (PointwiseConv, batched_matmul, gather_attention_bias,
                                       relative_offset_index, upsample2x_bilinear)

__all__ = ['ARCHS', 'EfficientFormerV2', 'efficientformerv2_s0_feat', 'efficientformerv2_s1_feat',
           'efficientformerv2_s2_feat', 'efficientformerv2_l_feat']

# widths: channels of the 4 stages; depths: blocks per stage; expansion_ratios: MLP hidden
# width / dim per block; vit_num: trailing blocks of stages 2 and 3 with attention;
# drop_path_rate: the rate the official factory functions hard-code.
ARCHS = {
    's0': dict(widths=(32, 48, 96, 176), depths=(2, 2, 6, 4), vit_num=2, drop_path_rate=0.0,
               expansion_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    's1': dict(widths=(32, 48, 120, 224), depths=(3, 3, 9, 6), vit_num=2, drop_path_rate=0.0,
               expansion_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4),
                                 (4, 4, 3, 3, 4, 4))),
    's2': dict(widths=(32, 64, 144, 288), depths=(4, 4, 12, 8), vit_num=4, drop_path_rate=0.02,
               expansion_ratios=((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                 (4, 4, 3, 3, 3, 3, 4, 4))),
    'l': dict(widths=(40, 80, 192, 384), depths=(5, 5, 15, 10), vit_num=6, drop_path_rate=0.1,
              expansion_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4),
                                (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

_LEGACY_TOKENS = 49  # 7x7 grid of the ImageNet model: shape of the unused legacy bias buffers


# ---------------------------------------------------------------------------------------------
# helpers


class _BackboneBatchNorm(BatchNorm2d):
    """BatchNorm2d that stays in eval mode while ``keep_eval`` is set.

    Jittor's ``Module.train()`` sets ``is_train`` on every descendant directly
    instead of calling their ``train()``, so a segmentor's ``train()`` would not
    reach an override on the backbone. The mode flag is filtered here instead.
    """
    keep_eval = False
    _mode = True

    @property
    def is_train(self):
        return self._mode and not self.keep_eval

    @is_train.setter
    def is_train(self, mode):
        self._mode = bool(mode)


def _gelu():
    return build_activation_layer(dict(type='GELU'))


def _conv(in_channels, out_channels, kernel_size=1, stride=1, groups=1):
    if kernel_size == 1 and stride == 1 and groups == 1:
        return PointwiseConv(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     groups=groups)


def _conv_bn(in_channels, out_channels, kernel_size=1, stride=1, groups=1):
    """``Sequential(conv, BN)``: parameter names ``0.weight``, ``1.running_mean``..."""
    return nn.Sequential(_conv(in_channels, out_channels, kernel_size, stride, groups),
                         _BackboneBatchNorm(out_channels, sync=True))


def _check_even(h, w, where):
    if h % 2 or w % 2:
        raise ValueError(f'EfficientFormerV2: {where} needs a feature map of even height and width, '
                         f'got {h}x{w}; use input sizes with ceil(H/16) and ceil(W/16) even '
                         f'(e.g. multiples of 32)')


# ---------------------------------------------------------------------------------------------
# blocks


class ConvMlp(nn.Module):
    """1x1 conv-BN-GELU, 3x3 depthwise conv-BN-GELU, 1x1 conv-BN: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim, hidden_dim, drop=0.0):
        self.fc1 = PointwiseConv(dim, hidden_dim)
        self.norm1 = _BackboneBatchNorm(hidden_dim, sync=True)
        self.act = _gelu()
        self.mid = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.mid_norm = _BackboneBatchNorm(hidden_dim, sync=True)
        self.fc2 = PointwiseConv(hidden_dim, dim)
        self.norm2 = _BackboneBatchNorm(dim, sync=True)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def execute(self, x):
        x = self.act(self.norm1(self.fc1(x)))         # (B, hidden, H, W)
        x = self.act(self.mid_norm(self.mid(x)))
        x = self.norm2(self.fc2(self.drop(x)))        # (B, C, H, W)
        return self.drop(x)


class _BiasedAttention(nn.Module):
    """Shared bias handling of the two attention modules.

    The eval-mode bias is computed once per input size and cached; the cache
    key holds the ids of the bias table and index Vars, which change whenever
    they are assigned or updated (loading, optimizer steps), so a stale bias is
    never used. Training-mode calls always recompute it (gradients flow).
    """

    def _init_bias_tables(self, num_heads, query_res, key_res, step, legacy_keys):
        index, num_offsets = relative_offset_index(query_res, key_res, step)
        # ImageNet-model buffers, unused here (49 = 7x7 query tokens)
        self.attention_biases = jt.zeros((num_heads, legacy_keys)).stop_grad()
        self.attention_bias_idxs = jt.ones((_LEGACY_TOKENS, legacy_keys), dtype='int64').stop_grad()
        self.attention_biases_seg = jt.zeros((num_heads, num_offsets))          # learnable
        self.attention_bias_idxs_seg = jt.array(index).int64().stop_grad()      # (Nq, Nk)
        self._bias_cache = None

    def attention_bias(self, size):
        """Bias (heads, Nq, Nk) for ``size = (Nq, Nk)`` attention logits."""
        table, index = self.attention_biases_seg, self.attention_bias_idxs_seg
        if self.is_training():
            self._bias_cache = None
            return gather_attention_bias(table, index, size)
        key = (table.id, index.id, tuple(size))
        if self._bias_cache is None or self._bias_cache[0] != key:
            bias = gather_attention_bias(table, index, size).detach()
            bias.sync()
            self._bias_cache = (key, bias)
        return self._bias_cache[1]

    def invalidate_cache(self):
        self._bias_cache = None


class Attention4D(_BiasedAttention):
    """Multi-head attention on a (B, C, H, W) map with talking heads and a local value branch.

    Args:
        dim (int): C.
        resolution (int): token grid side the bias table is built for.
        stride (int | None): 2 computes attention on a stride-2 depthwise-conv
            map and upsamples the result bilinearly (stage 2).
        key_dim, num_heads, attn_ratio: value width is ``attn_ratio * key_dim``.
    """

    def __init__(self, dim, resolution=7, stride=None, key_dim=32, num_heads=8, attn_ratio=4):
        if stride not in (None, 2):
            raise ValueError(f'Attention4D: stride must be None or 2, got {stride}')
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = int(attn_ratio * key_dim)
        self.hidden_dim = self.value_dim * num_heads
        qk_dim = key_dim * num_heads
        if stride is not None:
            self.resolution = math.ceil(resolution / stride)
            self.stride_conv = _conv_bn(dim, dim, 3, stride=stride, groups=dim)
        else:
            self.resolution = resolution
            self.stride_conv = None
        self.q = _conv_bn(dim, qk_dim)
        self.k = _conv_bn(dim, qk_dim)
        self.v = _conv_bn(dim, self.hidden_dim)
        self.v_local = _conv_bn(self.hidden_dim, self.hidden_dim, 3, groups=self.hidden_dim)
        self.talking_head1 = PointwiseConv(num_heads, num_heads)
        self.talking_head2 = PointwiseConv(num_heads, num_heads)
        self.proj = nn.Sequential(_gelu(), PointwiseConv(self.hidden_dim, dim),
                                  _BackboneBatchNorm(dim, sync=True))
        self._init_bias_tables(num_heads, self.resolution, self.resolution, 1, _LEGACY_TOKENS)

    def execute(self, x):
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, _, h, w = x.shape
        if self.stride_conv is not None:
            _check_even(h, w, 'the stride-2 attention of stage 2')
            x = self.stride_conv(x)                                             # (B, C, H/2, W/2)
            h, w = h // 2, w // 2
        n, heads = h * w, self.num_heads
        q = self.q(x).reshape(b, heads, self.key_dim, n).permute(0, 1, 3, 2)  # (B, h, N, kd)
        k = self.k(x).reshape(b, heads, self.key_dim, n)                       # (B, h, kd, N)
        v = self.v(x)                                                           # (B, h*d, H, W)
        v_local = self.v_local(v)
        v = v.reshape(b, heads, self.value_dim, n).permute(0, 1, 3, 2)         # (B, h, N, d)

        attn = batched_matmul(q, k) * self.scale + self.attention_bias((n, n))  # (B, h, N, N)
        attn = self.talking_head1(attn)
        attn = softmax(attn, -1)
        attn = self.talking_head2(attn)

        out = batched_matmul(attn, v).permute(0, 1, 3, 2)                       # (B, h, d, N)
        out = out.reshape(b, self.hidden_dim, h, w) + v_local
        if self.stride_conv is not None:
            out = upsample2x_bilinear(out)                                      # (B, h*d, H, W)
        return self.proj(out)


class LocalGlobalQuery(nn.Module):
    """Stride-2 query: 3x3 depthwise conv plus subsampling, then 1x1 conv-BN.

    (B, C, H, W) -> (B, out_dim, H/2, W/2).
    """

    def __init__(self, in_dim, out_dim):
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = _conv_bn(in_dim, out_dim)

    def execute(self, x):
        pooled = x[:, :, ::2, ::2]  # official AvgPool2d(1, 2, 0)
        return self.proj(self.local(x) + pooled)


class Attention4DDownsample(_BiasedAttention):
    """Stride-2 attention between stages 2 and 3: queries at /2, keys and values at full size.

    (B, dim, H, W) -> (B, out_dim, H/2, W/2).
    """

    def __init__(self, dim, out_dim, resolution=7, key_dim=16, num_heads=8, attn_ratio=4):
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = int(attn_ratio * key_dim)
        self.hidden_dim = self.value_dim * num_heads
        self.resolution = resolution
        self.resolution2 = math.ceil(resolution / 2)
        qk_dim = key_dim * num_heads
        self.q = LocalGlobalQuery(dim, qk_dim)
        self.k = _conv_bn(dim, qk_dim)
        self.v = _conv_bn(dim, self.hidden_dim)
        self.v_local = _conv_bn(self.hidden_dim, self.hidden_dim, 3, stride=2, groups=self.hidden_dim)
        self.proj = nn.Sequential(_gelu(), PointwiseConv(self.hidden_dim, out_dim),
                                  _BackboneBatchNorm(out_dim, sync=True))
        step = math.ceil(self.resolution / self.resolution2)
        self._init_bias_tables(num_heads, self.resolution2, self.resolution, step, 4 * _LEGACY_TOKENS)

    def execute(self, x):
        """x: (B, dim, H, W) -> (B, out_dim, H/2, W/2)."""
        b, _, h, w = x.shape
        _check_even(h, w, 'the downsampling attention after stage 2')
        heads, n, hq, wq = self.num_heads, h * w, h // 2, w // 2
        q = self.q(x).reshape(b, heads, self.key_dim, hq * wq).permute(0, 1, 3, 2)  # (B, h, N/4, kd)
        k = self.k(x).reshape(b, heads, self.key_dim, n)                             # (B, h, kd, N)
        v = self.v(x)                                                                 # (B, h*d, H, W)
        v_local = self.v_local(v)                                                     # (B, h*d, H/2, W/2)
        v = v.reshape(b, heads, self.value_dim, n).permute(0, 1, 3, 2)               # (B, h, N, d)

        attn = batched_matmul(q, k) * self.scale + self.attention_bias((hq * wq, n))  # (B, h, N/4, N)
        attn = softmax(attn, -1)
        out = batched_matmul(attn, v).permute(0, 1, 3, 2)                             # (B, h, d, N/4)
        out = out.reshape(b, self.hidden_dim, hq, wq) + v_local
        return self.proj(out)


class Embedding(nn.Module):
    """Stride-2 downsampling between stages: conv-BN, plus attention after stage 2.

    (B, in_dim, H, W) -> (B, out_dim, H/2, W/2).

    Args:
        attention_resolution (int | None): token grid side of stage 2 at the
            model resolution; given, an :class:`Attention4DDownsample` branch is
            added (official ``asub=True``: names ``attn``, ``conv``, ``bn``),
            otherwise names are ``proj`` and ``norm``.
    """

    def __init__(self, in_dim, out_dim, attention_resolution=None):
        self.with_attention = attention_resolution is not None
        if self.with_attention:
            self.attn = Attention4DDownsample(in_dim, out_dim, resolution=attention_resolution)
            self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
            self.bn = _BackboneBatchNorm(out_dim, sync=True)
        else:
            self.proj = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
            self.norm = _BackboneBatchNorm(out_dim, sync=True)

    def execute(self, x):
        if self.with_attention:
            return self.attn(x) + self.bn(self.conv(x))
        return self.norm(self.proj(x))


class FFNBlock(nn.Module):
    """``x + drop_path(layer_scale_2 * mlp(x))``: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim, mlp_ratio, drop=0.0, drop_path=0.0, layer_scale_init_value=1e-5):
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_2 = jt.full((dim, 1, 1), layer_scale_init_value)

    def execute(self, x):
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttentionFFNBlock(nn.Module):
    """Attention4D then ConvMlp, each residual with layer scale: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim, mlp_ratio, resolution, stride=None, drop=0.0, drop_path=0.0,
                 layer_scale_init_value=1e-5):
        self.token_mixer = Attention4D(dim, resolution=resolution, stride=stride)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = jt.full((dim, 1, 1), layer_scale_init_value)
        self.layer_scale_2 = jt.full((dim, 1, 1), layer_scale_init_value)

    def execute(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


# ---------------------------------------------------------------------------------------------
# backbone


def _resolve_arch(arch):
    if isinstance(arch, str):
        if arch.lower() not in ARCHS:
            raise KeyError(f'EfficientFormerV2: unknown arch {arch!r}; choose from {sorted(ARCHS)} '
                           f'or pass a dict with widths, depths, expansion_ratios and vit_num')
        return dict(ARCHS[arch.lower()])
    arch = dict(arch)
    needed = {'widths', 'depths', 'expansion_ratios', 'vit_num'}
    if not needed <= set(arch):
        raise KeyError(f'EfficientFormerV2: a custom arch needs {sorted(needed)}, got {sorted(arch)}')
    arch.setdefault('drop_path_rate', 0.0)
    if len(arch['widths']) != 4 or len(arch['depths']) != 4 or \
            [len(r) for r in arch['expansion_ratios']] != list(arch['depths']):
        raise ValueError('EfficientFormerV2: widths and depths need 4 entries and expansion_ratios '
                         'one ratio per block')
    return arch


@MODELS.register_module()
class EfficientFormerV2(nn.Module):
    """EfficientFormerV2 returning the feature maps of its 4 stages (strides 4, 8, 16, 32).

    Args:
        arch (str | dict): ``'s0'``, ``'s1'``, ``'s2'``, ``'l'`` (see :data:`ARCHS`)
            or a dict with ``widths``, ``depths``, ``expansion_ratios``, ``vit_num``
            and optionally ``drop_path_rate``.
        out_indices (Sequence[int]): stages to return.
        resolution (int): input side the attention-bias tables are built for
            (official: 512). Other input sizes resize the biases bicubically.
        drop_rate (float): dropout inside the MLPs (official default 0).
        drop_path_rate (float | None): stochastic-depth rate of the last block,
            rising linearly from 0; ``None`` takes the arch's official value
            (S0/S1 0, S2 0.02, L 0.1).
        layer_scale_init_value (float): initial layer-scale value.
        use_layer_scale (bool): must be True (the official blocks fail without).
        norm_eval (bool | None): keep every BatchNorm of the backbone in eval mode
            (running statistics, no updates) even in training. ``None`` (default)
            follows the official backbone: frozen when it starts from scratch, but
            training when ``init_cfg``/``pretrained`` is given (the official code
            then converts its BatchNorms to SyncBatchNorm, which its freezing misses).
        fork_feat (bool): must be True: only the feature (segmentation) variant
            exists here.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=path)`` loads
            ImageNet (``'model'`` key) or other official weights in
            :meth:`init_weights`; optional ``prefix`` takes a sub-dict.
        pretrained (str | None): same as ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        style (str | None): accepted for mmseg configs and ignored, as officially.

    Input: (B, 3, H, W) with ``ceil(H / 16)`` and ``ceil(W / 16)`` even.
    Output: tuple of (B, widths[i], ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) for
    ``i`` in ``out_indices``.
    """

    def __init__(self, arch='s1', out_indices=(0, 1, 2, 3), resolution=512, drop_rate=0.0,
                 drop_path_rate=None, layer_scale_init_value=1e-5, use_layer_scale=True,
                 norm_eval=None, fork_feat=True, init_cfg=None, pretrained=None, style=None):
        if not fork_feat:
            raise ValueError('EfficientFormerV2: only the feature backbone (fork_feat=True) is '
                             'implemented, not the ImageNet classifier')
        if not use_layer_scale:
            raise ValueError('EfficientFormerV2: use_layer_scale=False is not supported (the '
                             'official FFN block cannot run without layer scale)')
        if init_cfg is not None and pretrained is not None:
            raise ValueError('EfficientFormerV2: give init_cfg or pretrained, not both')
        if pretrained is not None:
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is not None and (init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg):
            raise ValueError(f'EfficientFormerV2: init_cfg must be dict(type="Pretrained", '
                             f'checkpoint=...), got {init_cfg!r}')
        if not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f'EfficientFormerV2: out_indices must be in 0..3, got {out_indices}')
        spec = _resolve_arch(arch)
        widths, depths, vit_num = spec['widths'], spec['depths'], spec['vit_num']
        if drop_path_rate is None:
            drop_path_rate = spec['drop_path_rate']
        self.arch = spec
        self.widths = tuple(widths)
        self.out_indices = tuple(out_indices)
        self.resolution = resolution
        self.init_cfg = dict(init_cfg) if init_cfg is not None else None

        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, widths[0] // 2, 3, stride=2, padding=1),
            _BackboneBatchNorm(widths[0] // 2, sync=True), _gelu(),
            nn.Conv2d(widths[0] // 2, widths[0], 3, stride=2, padding=1),
            _BackboneBatchNorm(widths[0], sync=True), _gelu())

        total_blocks, block_id = sum(depths), 0
        network = []
        for i, (dim, depth) in enumerate(zip(widths, depths)):
            stage_res = math.ceil(resolution / 2 ** (i + 2))
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * block_id / max(total_blocks - 1, 1)
                ratio = spec['expansion_ratios'][i][j]
                if i >= 2 and j >= depth - vit_num:
                    blocks.append(AttentionFFNBlock(
                        dim, ratio, stage_res, stride=2 if i == 2 else None, drop=drop_rate,
                        drop_path=dpr, layer_scale_init_value=layer_scale_init_value))
                else:
                    blocks.append(FFNBlock(dim, ratio, drop=drop_rate, drop_path=dpr,
                                           layer_scale_init_value=layer_scale_init_value))
                block_id += 1
            network.append(nn.Sequential(*blocks))
            if i < 3:
                network.append(Embedding(dim, widths[i + 1],
                                         attention_resolution=stage_res if i >= 2 else None))
        self.network = nn.ModuleList(network)   # stages at 0, 2, 4, 6; Embeddings between
        if norm_eval is None:
            norm_eval = init_cfg is None and pretrained is None
        self.norm_eval = norm_eval
        self._reset_parameters()

    # -- modes ---------------------------------------------------------------------------------

    @property
    def norm_eval(self):
        return self._norm_eval

    @norm_eval.setter
    def norm_eval(self, value):
        self._norm_eval = bool(value)
        for m in self.modules():
            if isinstance(m, _BackboneBatchNorm):
                m.keep_eval = self._norm_eval

    def train(self, mode=True):
        """Training mode (``mode=False``: eval); with ``norm_eval`` the BatchNorms stay in eval mode."""
        if not mode:
            return self.eval()
        super().train()
        self.invalidate_cache()
        return self

    def eval(self):
        super().eval()
        self.invalidate_cache()
        return self

    def invalidate_cache(self):
        """Drop cached attention biases (also done automatically when weights change)."""
        for m in self.modules():
            if isinstance(m, _BiasedAttention):
                m.invalidate_cache()

    # -- weights -------------------------------------------------------------------------------

    def _reset_parameters(self):
        """Official random init: PyTorch defaults, MLP 1x1 convs trunc-normal(0.02) with zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                bound = 1.0 / math.sqrt(fan_in)
                jt.init.uniform_(m.weight, -bound, bound)
                if m.bias is not None:
                    jt.init.uniform_(m.bias, -bound, bound)
            elif isinstance(m, BatchNorm2d):
                m.weight.assign(jt.ones_like(m.weight))
                m.bias.assign(jt.zeros_like(m.bias))
                m.running_mean.assign(jt.zeros_like(m.running_mean))
                m.running_var.assign(jt.ones_like(m.running_var))
            elif isinstance(m, _BiasedAttention):
                m.attention_biases_seg.assign(jt.zeros_like(m.attention_biases_seg))
        for m in self.modules():
            if isinstance(m, ConvMlp):
                for conv in (m.fc1, m.fc2):
                    trunc_normal_(conv.weight, std=0.02)
                    conv.bias.assign(jt.zeros_like(conv.bias))
        self.invalidate_cache()

    def init_weights(self):
        """Official random init, then the ``init_cfg`` checkpoint if one is configured.

        Returns:
            LoadReport | None: what was loaded (unexpected keys such as the
            ImageNet classifier's ``head.*`` are reported, not fatal).
        """
        self._reset_parameters()
        if self.init_cfg is None:
            return None
        from jseg.runner.checkpoint import load_checkpoint
        path = self.init_cfg['checkpoint']
        if not osp.isfile(path):
            raise FileNotFoundError(f'EfficientFormerV2: pretrained checkpoint not found: {path} '
                                    f'(init_cfg.checkpoint; set init_cfg=None to train from scratch)')
        report, _ = load_checkpoint(self, path, strict=False, prefix=self.init_cfg.get('prefix'))
        return report

    # -- forward -------------------------------------------------------------------------------

    def execute(self, x):
        """x: (B, 3, H, W) -> tuple of the ``out_indices`` stage maps (B, C_i, H/2**(i+2), W/2**(i+2))."""
        h, w = x.shape[-2:]
        if math.ceil(h / 16) % 2 or math.ceil(w / 16) % 2:
            raise ValueError(f'EfficientFormerV2: input {h}x{w} gives an odd stride-16 feature map '
                             f'({math.ceil(h / 16)}x{math.ceil(w / 16)}); use sizes with ceil(H/16) '
                             f'and ceil(W/16) even (e.g. multiples of 32)')
        x = self.patch_embed(x)
        outs = []
        for idx, layer in enumerate(self.network):
            x = layer(x)
            if idx % 2 == 0 and idx // 2 in self.out_indices:
                outs.append(x)
        return tuple(outs)


def _official_factory(arch):
    def build(**kwargs):
        return EfficientFormerV2(arch=arch, **kwargs)
    build.__name__ = f'efficientformerv2_{arch}_feat'
    build.__qualname__ = build.__name__
    build.__doc__ = (f'EfficientFormerV2-{arch.upper()} features under the official OffSeg type name; '
                     f'keyword arguments as :class:`EfficientFormerV2`.')
    return MODELS.register_module(module=build)


efficientformerv2_s0_feat = _official_factory('s0')
efficientformerv2_s1_feat = _official_factory('s1')
efficientformerv2_s2_feat = _official_factory('s2')
efficientformerv2_l_feat = _official_factory('l')
