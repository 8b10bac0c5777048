"""Transformer building blocks with mmcv 2.x / mmdet 3.x names and semantics.

* :class:`FFN`: mmcv's ``FFN`` (``layers.0.0`` / ``layers.1`` Linear names, identity add).
* :class:`MultiheadAttentionCore`: the parameters and math of PyTorch's ``nn.MultiheadAttention``
  (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), with boolean / additive attention masks.
* :class:`MultiheadAttention`: mmcv's wrapper around it (``.attn.*`` names, positional
  encodings added to query and key, identity add).
* :class:`SinePositionalEncoding`: mmdet's DETR sine/cosine encoding of a padding mask.

The deformable attention module of Deformable DETR lives in
:mod:`jseg.models.utils.ms_deform_attn_module`.

Sources read for the semantics: open-mmlab/mmcv 2.x ``mmcv/cnn/bricks/transformer.py``,
open-mmlab/mmdetection 3.x ``mmdet/models/layers/positional_encoding.py`` and PyTorch's
``nn.MultiheadAttention`` (Apache-2.0 / BSD).
"""
import math

import jittor as jt
import numpy as np
from jittor import nn

from jseg.ops import softmax
from jseg.registry import MODELS

from .activation import build_activation_layer
from .drop import build_dropout

__all__ = ['FFN', 'LayerScale', 'MultiheadAttention', 'MultiheadAttentionCore', 'SinePositionalEncoding']


class LayerScale(nn.Module):
    """Per-channel scale of the last dimension: ``x * weight`` (mmcv ``LayerScale``, channels last).

    Args:
        dim (int): channels C.
        scale (float): initial value of every entry of ``weight`` (C,).
    """

    def __init__(self, dim, scale=1e-5):
        self.weight = jt.ones((dim,)) * scale

    def execute(self, x):
        return x * self.weight


@MODELS.register_module()
class FFN(nn.Module):
    """Feed-forward network with identity connection, as mmcv's ``FFN``.

    ``layers`` is ``Sequential(Sequential(Linear, act, Dropout) x (num_fcs - 1), Linear, Dropout)``,
    so a 2-layer FFN names its weights ``layers.0.0.weight`` (hidden, C) and ``layers.1.weight``
    (C, hidden), as in the official checkpoints.

    Args:
        embed_dims (int): C.
        feedforward_channels (int): hidden width.
        num_fcs (int): number of Linear layers (>= 2).
        act_cfg (dict): activation after every Linear but the last (ReLU officially; GELU in Swin).
        ffn_drop (float): dropout after the activation(s) and after the last Linear.
        dropout_layer (dict | None): applied to the branch before the identity add
            (``dict(type='DropPath', drop_prob=p)`` in Swin); see :func:`build_dropout`.
        add_identity (bool): add ``identity`` (default: the input) to the output.
        layer_scale_init_value (float): > 0 scales the branch by a learnable ``gamma2`` (LayerScale).
        init_cfg: accepted for config compatibility and ignored (the layers keep their default init).

    Shapes: x (..., C) -> (..., C).
    """

    def __init__(self, embed_dims=256, feedforward_channels=1024, num_fcs=2, act_cfg=dict(type='ReLU', inplace=True),
                 ffn_drop=0.0, dropout_layer=None, add_identity=True, init_cfg=None, layer_scale_init_value=0.0):
        if num_fcs < 2:
            raise ValueError(f'FFN: num_fcs must be at least 2, got {num_fcs}')
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_fcs = num_fcs
        layers = []
        in_channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(nn.Sequential(nn.Linear(in_channels, feedforward_channels),
                                        build_activation_layer(act_cfg), nn.Dropout(ffn_drop)))
            in_channels = feedforward_channels
        layers.append(nn.Linear(feedforward_channels, embed_dims))
        layers.append(nn.Dropout(ffn_drop))
        self.layers = nn.Sequential(*layers)
        self.dropout_layer = build_dropout(dropout_layer)
        self.add_identity = add_identity
        self.gamma2 = LayerScale(embed_dims, scale=layer_scale_init_value) if layer_scale_init_value > 0 else None

    def execute(self, x, identity=None):
        out = self.layers(x)
        if self.gamma2 is not None:
            out = self.gamma2(out)
        out = self.dropout_layer(out)
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out


def _additive_mask(mask, dtype):
    """Bool mask (True = blocked) -> 0 / -inf; a float mask is returned as is (added to the logits)."""
    if mask.dtype == jt.bool:
        return jt.ternary(mask, jt.full(mask.shape, float('-inf'), dtype), jt.zeros(mask.shape, dtype))
    return mask.cast(dtype)


class MultiheadAttentionCore(nn.Module):
    """The parameters and math of PyTorch's ``nn.MultiheadAttention`` (batch first).

    Official names: ``in_proj_weight`` (3C, C) stacking the query, key and value
    projections, ``in_proj_bias`` (3C,), ``out_proj.weight`` / ``out_proj.bias``.

    Masks follow PyTorch: ``attn_mask`` (Lq, Lk) or (B * num_heads, Lq, Lk) and
    ``key_padding_mask`` (B, Lk); a boolean entry True blocks that key (its logit
    becomes -inf), a float mask is added to the logits. A query whose keys are all
    blocked gets a softmax over only -inf, i.e. NaN outputs, as in PyTorch
    (Mask2Former unblocks such rows before calling).

    Args:
        embed_dims (int): C.
        num_heads (int): heads; C must be divisible by it.
        attn_drop (float): dropout on the attention weights.
        bias (bool): biases of the input and output projections.
    """

    def __init__(self, embed_dims, num_heads, attn_drop=0.0, bias=True):
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.in_proj_weight = jt.zeros((3 * embed_dims, embed_dims))
        self.in_proj_bias = jt.zeros((3 * embed_dims,)) if bias else None
        self.out_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        self.attn_drop = nn.Dropout(attn_drop) if attn_drop > 0 else None
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's init: Xavier-uniform input projection, zero biases."""
        c = self.embed_dims
        bound = math.sqrt(6.0 / (c + 3 * c))    # fan_in C, fan_out 3C
        jt.init.uniform_(self.in_proj_weight, -bound, bound)
        if self.in_proj_bias is not None:
            jt.init.constant_(self.in_proj_bias, 0.0)
            jt.init.constant_(self.out_proj.bias, 0.0)

    def _project(self, x, index):
        c = self.embed_dims
        weight = self.in_proj_weight[index * c:(index + 1) * c]
        bias = self.in_proj_bias[index * c:(index + 1) * c] if self.in_proj_bias is not None else None
        return nn.linear(x, weight, bias)

    def _split_heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)  # (B, h, N, d)

    def execute(self, query, key, value=None, attn_mask=None, key_padding_mask=None):
        """query (B, Lq, C), key (B, Lk, C), value (B, Lk, C) (default: key) -> (B, Lq, C)."""
        if value is None:
            value = key
        b, lq, c = query.shape
        lk = key.shape[1]
        head_dims = c // self.num_heads
        q = self._split_heads(self._project(query, 0)) * (head_dims ** -0.5)   # (B, h, Lq, d)
        k = self._split_heads(self._project(key, 1))                            # (B, h, Lk, d)
        v = self._split_heads(self._project(value, 2))                          # (B, h, Lk, d)
        logits = jt.matmul(q, k.transpose(0, 1, 3, 2))                          # (B, h, Lq, Lk)
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                mask = attn_mask.reshape(1, 1, lq, lk)
            elif attn_mask.ndim == 3 and attn_mask.shape[0] == b * self.num_heads:
                mask = attn_mask.reshape(b, self.num_heads, lq, lk)             # row index = b * h + head
            else:
                raise ValueError(f'attn_mask of shape {tuple(attn_mask.shape)}: expected ({lq}, {lk}) or '
                                 f'({b * self.num_heads}, {lq}, {lk})')
            logits = logits + _additive_mask(mask, logits.dtype)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (b, lk):
                raise ValueError(f'key_padding_mask of shape {tuple(key_padding_mask.shape)}: expected ({b}, {lk})')
            logits = logits + _additive_mask(key_padding_mask.reshape(b, 1, 1, lk), logits.dtype)
        attn = softmax(logits, -1)
        if self.attn_drop is not None:
            attn = self.attn_drop(attn)
        out = jt.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, lq, c)         # (B, Lq, C)
        return self.out_proj(out)


@MODELS.register_module()
class MultiheadAttention(nn.Module):
    """mmcv's ``MultiheadAttention``: PyTorch attention (``attn``) with positional encodings and identity.

    Parameters are named ``attn.in_proj_weight`` (3C, C), ``attn.in_proj_bias``,
    ``attn.out_proj.weight`` and ``attn.out_proj.bias``, as in the official checkpoints.

    Args:
        embed_dims (int): C.
        num_heads (int): heads.
        attn_drop (float): dropout on the attention weights.
        proj_drop (float): dropout on the attention output.
        dropout_layer (dict | None): applied before the identity add (mmcv default: Dropout 0).
        init_cfg: accepted for config compatibility and ignored.
        batch_first (bool): inputs are (B, L, C) when True, else (L, B, C).
        bias (bool): projection biases (PyTorch's ``bias`` keyword).
    """

    def __init__(self, embed_dims, num_heads, attn_drop=0.0, proj_drop=0.0,
                 dropout_layer=dict(type='Dropout', drop_prob=0.0), init_cfg=None, batch_first=False, bias=True):
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.batch_first = batch_first
        self.attn = MultiheadAttentionCore(embed_dims, num_heads, attn_drop=attn_drop, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else None
        self.dropout_layer = build_dropout(dropout_layer)

    def execute(self, query, key=None, value=None, identity=None, query_pos=None, key_pos=None, attn_mask=None,
                key_padding_mask=None):
        """Attention of ``query`` over ``key`` / ``value``, plus the identity.

        Args:
            query (Var): (B, Lq, C) if ``batch_first`` else (Lq, B, C).
            key (Var | None): (B, Lk, C) or (Lk, B, C); default ``query``.
            value (Var | None): like ``key``; default ``key`` (before ``key_pos`` is added).
            identity (Var | None): added to the output; default ``query`` (before ``query_pos``).
            query_pos (Var | None): added to the query; also to the key when ``key_pos`` is None
                and the shapes agree (self-attention), as mmcv does.
            key_pos (Var | None): added to the key.
            attn_mask (Var | None): bool (True = blocked) or float, (Lq, Lk) or (B * num_heads, Lq, Lk).
            key_padding_mask (Var | None): bool (B, Lk), True = ignored key.

        Returns:
            Var: same layout as ``query``.
        """
        if key is None:
            key = query
        if value is None:
            value = key
        if identity is None:
            identity = query
        if key_pos is None and query_pos is not None and tuple(query_pos.shape) == tuple(key.shape):
            key_pos = query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        if not self.batch_first:
            query, key, value = (t.transpose(1, 0, 2) for t in (query, key, value))
        out = self.attn(query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        if not self.batch_first:
            out = out.transpose(1, 0, 2)
        if self.proj_drop is not None:
            out = self.proj_drop(out)
        return identity + self.dropout_layer(out)


@MODELS.register_module()
class SinePositionalEncoding(nn.Module):
    """DETR's sine/cosine encoding of pixel positions, as mmdet's ``SinePositionalEncoding``.

    With v = cumulative count of valid (mask False) pixels along y (rows) or x (columns),
    optionally normalised to ``(v + offset) / (v_last + eps) * scale``, and
    ``dim_t[k] = temperature ** (2 * (k // 2) / num_feats)``, each axis gives
    ``num_feats`` channels interleaving ``sin(v / dim_t[2i])`` and ``cos(v / dim_t[2i+1])``;
    the output concatenates the y channels, then the x channels.

    Args:
        num_feats (int): channels per axis (output has 2 * num_feats).
        temperature (float): 10000.
        normalize (bool): normalise the positions by the last valid one.
        scale (float): applied after normalisation (2 pi).
        eps (float): added to the normaliser.
        offset (float): added to the positions before normalisation.
        init_cfg: accepted for config compatibility and ignored.

    Shapes: mask (B, H, W), True = padding -> (B, 2 * num_feats, H, W) float32. With
    ``mask=None`` an all-valid mask of ``input``'s (B, _, H, W) size is used.
    """

    def __init__(self, num_feats, temperature=10000, normalize=False, scale=2 * math.pi, eps=1e-6, offset=0.0,
                 init_cfg=None):
        if normalize and not isinstance(scale, (float, int)):
            raise TypeError(f'SinePositionalEncoding: scale must be a number when normalize=True, got {scale!r}')
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def execute(self, mask, input=None):
        if mask is None:
            if input is None:
                raise ValueError('SinePositionalEncoding: give a mask or an input')
            b, _, h, w = input.shape
            not_mask = jt.ones((b, h, w), dtype='float32')
        else:
            b, h, w = mask.shape
            not_mask = 1.0 - mask.float32()
        y_embed = jt.cumsum(not_mask, dim=1)                                   # (B, H, W)
        x_embed = jt.cumsum(not_mask, dim=2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        k = np.arange(self.num_feats)
        dim_t = jt.array((self.temperature ** (2 * (k // 2) / self.num_feats)).astype(np.float32))   # (F,)
        pos_x = x_embed.unsqueeze(-1) / dim_t                                  # (B, H, W, F)
        pos_y = y_embed.unsqueeze(-1) / dim_t
        pos_x = jt.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=4).reshape(b, h, w, -1)
        pos_y = jt.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=4).reshape(b, h, w, -1)
        return jt.concat([pos_y, pos_x], dim=3).permute(0, 3, 1, 2)            # (B, 2F, H, W)
