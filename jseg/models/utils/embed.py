"""Patch embedding and patch merging with mmseg 1.x names and semantics (``mmseg/models/utils/embed.py``).

* :class:`AdaptivePadding`: zero padding so that a kernel/stride covers the whole input
  ('corner': bottom/right only; 'same': split around, as TensorFlow's SAME).
* :class:`PatchEmbed`: conv ``projection`` (+ optional ``norm``) turning an image into tokens.
* :class:`PatchMerging`: ``nn.Unfold``-style grouping of k x k neighbours, ``norm``, linear
  ``reduction``. The grouped channel order is the unfold order ``c * k*k + ki * k + kj``
  (not the original Swin concatenation of x0..x3), as the mmseg-converted Swin weights expect.
"""
import math

import jittor as jt
from jittor import nn

from .norm import build_norm_layer

__all__ = ['AdaptivePadding', 'PatchEmbed', 'PatchMerging']


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class AdaptivePadding(nn.Module):
    """Pad (B, C, H, W) with zeros so that ``ceil(H / stride)`` windows of the dilated kernel fit.

    Args:
        kernel_size, stride, dilation (int | tuple): the filter that follows.
        padding (str): 'corner' pads bottom/right; 'same' splits the padding (extra at bottom/right).
    """

    def __init__(self, kernel_size=1, stride=1, dilation=1, padding='corner'):
        if padding not in ('same', 'corner'):
            raise ValueError(f'AdaptivePadding: padding must be "same" or "corner", got {padding!r}')
        self.padding = padding
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)

    def get_pad_shape(self, input_shape):
        """(pad_h, pad_w) for an (H, W) input."""
        pads = []
        for size, k, s, d in zip(input_shape, self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            pads.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0))
        return tuple(pads)

    def execute(self, x):
        pad_h, pad_w = self.get_pad_shape(x.shape[-2:])
        if pad_h > 0 or pad_w > 0:
            if self.padding == 'corner':
                x = nn.pad(x, [0, pad_w, 0, pad_h])
            else:
                x = nn.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return x


class PatchEmbed(nn.Module):
    """Image to tokens by a conv (``projection``) and an optional ``norm``.

    Args:
        in_channels (int), embed_dims (int).
        conv_type (str): only 'Conv2d'.
        kernel_size (int), stride (int | None): stride defaults to the kernel size.
        padding (int | tuple | str): a number pads the conv; 'corner' / 'same' pad adaptively.
        dilation (int), bias (bool): of the conv.
        norm_cfg (dict | None): norm over the tokens.
        input_size: accepted for mmseg compatibility (only used there to precompute sizes).
        init_cfg: accepted for config compatibility and ignored.

    Shapes: (B, in_channels, H, W) -> tokens (B, H' * W', embed_dims) and (H', W').
    """

    def __init__(self, in_channels=3, embed_dims=768, conv_type='Conv2d', kernel_size=16, stride=None,
                 padding='corner', dilation=1, bias=True, norm_cfg=None, input_size=None, init_cfg=None):
        if conv_type != 'Conv2d':
            raise ValueError(f'PatchEmbed: conv_type must be "Conv2d", got {conv_type!r}')
        self.embed_dims = embed_dims
        if stride is None:
            stride = kernel_size
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if isinstance(padding, str):
            self.adap_padding = AdaptivePadding(kernel_size, stride, dilation, padding)
            padding = 0
        else:
            self.adap_padding = None
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride, padding=_pair(padding),
                                    dilation=dilation, bias=bias)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1] if norm_cfg is not None else None

    def execute(self, x):
        if self.adap_padding is not None:
            x = self.adap_padding(x)
        x = self.projection(x)                               # (B, C, H', W')
        b, c, h, w = x.shape
        x = x.reshape(b, c, h * w).transpose(0, 2, 1)        # (B, H'W', C)
        if self.norm is not None:
            x = self.norm(x)
        return x, (h, w)


class PatchMerging(nn.Module):
    """Group k x k neighbouring tokens (k = kernel_size = stride), normalise, project.

    Args:
        in_channels (int), out_channels (int).
        kernel_size (int): 2 in Swin; stride (int | None) must equal it (non-overlapping groups).
        padding (str | int): 'corner' (Swin) pads odd maps at the bottom/right; 0 requires
            sizes divisible by the kernel.
        dilation (int): must be 1.
        bias (bool): of ``reduction``.
        norm_cfg (dict | None): norm over the k*k*in_channels grouped features.
        init_cfg: accepted for config compatibility and ignored.

    Shapes: tokens (B, H*W, C_in) and (H, W) -> (B, ceil(H/k) * ceil(W/k), C_out) and the new size.
    Grouped feature index ``c * k*k + ki * k + kj`` holds channel c of the token at row offset
    ki, column offset kj inside the group (``nn.Unfold``'s order).
    """

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=None, padding='corner', dilation=1,
                 bias=False, norm_cfg=dict(type='LN'), init_cfg=None):
        stride = stride or kernel_size
        if _pair(stride) != _pair(kernel_size) or _pair(dilation) != (1, 1):
            raise ValueError('PatchMerging: only non-overlapping groups are supported '
                             f'(stride == kernel_size, dilation 1), got kernel {kernel_size}, stride {stride}, '
                             f'dilation {dilation}')
        if not isinstance(padding, str) and _pair(padding) != (0, 0):
            raise ValueError(f'PatchMerging: numeric padding must be 0, got {padding!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.adap_padding = AdaptivePadding(kernel_size, stride, dilation, padding) \
            if isinstance(padding, str) else None
        sample_dim = self.kernel_size[0] * self.kernel_size[1] * in_channels
        self.norm = build_norm_layer(norm_cfg, sample_dim)[1] if norm_cfg is not None else None
        self.reduction = nn.Linear(sample_dim, out_channels, bias=bias)

    def execute(self, x, input_size):
        b, n, c = x.shape
        h, w = input_size
        if n != h * w:
            raise ValueError(f'PatchMerging: {n} tokens do not form a {h}x{w} map')
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)                    # (B, C, H, W)
        if self.adap_padding is not None:
            x = self.adap_padding(x)
        kh, kw = self.kernel_size
        h, w = x.shape[-2:]
        if h % kh or w % kw:
            raise ValueError(f'PatchMerging: a {h}x{w} map does not split into {kh}x{kw} groups')
        oh, ow = h // kh, w // kw
        x = x.reshape(b, c, oh, kh, ow, kw).permute(0, 2, 4, 1, 3, 5)    # (B, oh, ow, C, kh, kw)
        x = x.reshape(b, oh * ow, c * kh * kw)                            # unfold order c*kh*kw + ki*kw + kj
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x), (oh, ow)
