"""ConvModule: conv -> norm -> activation, with mmcv's parameter names and initialisation.

Checkpoint keys are ``<prefix>.conv.weight``, ``<prefix>.<norm name>.weight``
(``bn``, ``gn``, ``ln``) exactly as mmcv's ConvModule writes them, and the
constructor initialises the weights as mmcv's does (Kaiming-normal conv with
fan_out and the ReLU gain, or the leaky-ReLU gain for LeakyReLU; norm weight 1, bias 0).

A 1x1, stride-1, unpadded, ungrouped convolution of at least
``GEMM_MIN_MACS`` multiply-adds runs as one batched matrix product,
Y[b] = W X[b], through jseg's packed GEMM operator (:func:`jseg.ops.gemm.gemm`)
where it applies (CPU, fused operators on); otherwise ``nn.Conv2d``. One AVX2
core, forward+backward, batch 2: OffSeg-T's ``align`` (256 -> 256 channels at
128x128) 240 -> 147 ms; the smaller ``pre`` convolutions (48 -> 32 at 64x64,
120 -> 64 at 32x32, about 2^24 multiply-adds) were 5-10% slower through the
operator (about 1.1 ms either way), 32 -> 32 at 128x128 faster (6-9 -> 4.5-5.4 ms).
"""
from jittor import nn

from jseg.ops.gemm import gemm, gemm_applies

from .activation import build_activation_layer
from .norm import build_norm_layer
from .weight_init import constant_init, kaiming_init

__all__ = ['ConvModule']

# Pointwise convolutions of at least this many multiply-adds use the packed GEMM operator.
GEMM_MIN_MACS = 1 << 24


class ConvModule(nn.Module):
    """A conv layer followed by an optional norm and an optional activation.

    Args:
        in_channels (int), out_channels (int), kernel_size (int | tuple),
        stride, padding, dilation, groups: as ``nn.Conv2d``.
        bias (bool | 'auto'): 'auto' adds a bias only when there is no norm.
        conv_cfg (dict | None): only ``None``/``dict(type='Conv2d')`` (plain conv).
        norm_cfg (dict | None): e.g. ``dict(type='GN', num_groups=32)``.
        act_cfg (dict | None): e.g. ``dict(type='ReLU')``; None for none.
        order (tuple[str]): ('conv', 'norm', 'act') by default.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H', W').
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias='auto', conv_cfg=None, norm_cfg=None, act_cfg=dict(type='ReLU'),
                 inplace=True, order=('conv', 'norm', 'act')):
        if conv_cfg not in (None, {'type': 'Conv2d'}, {'type': 'Conv'}):
            raise ValueError(f'ConvModule supports plain convolutions only, got conv_cfg={conv_cfg!r}')
        if set(order) != {'conv', 'norm', 'act'}:
            raise ValueError(f'ConvModule order must be a permutation of conv/norm/act, got {order}')
        self.order = tuple(order)
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        if bias == 'auto':
            bias = not self.with_norm
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        self.norm_name = None
        if self.with_norm:
            norm_channels = out_channels if self.order.index('norm') > self.order.index('conv') \
                else in_channels
            self.norm_name, norm = build_norm_layer(norm_cfg, norm_channels)
            setattr(self, self.norm_name, norm)
        if self.with_activation:
            self.activate = build_activation_layer(act_cfg)
        self.act_cfg = act_cfg
        self.init_weights()

    def init_weights(self):
        """mmcv's ConvModule initialisation (run by the constructor)."""
        if self.with_activation and self.act_cfg['type'] == 'LeakyReLU':
            nonlinearity, a = 'leaky_relu', self.act_cfg.get('negative_slope', 0.01)
        else:
            nonlinearity, a = 'relu', 0
        kaiming_init(self.conv, a=a, mode='fan_out', nonlinearity=nonlinearity, distribution='normal')
        if self.with_norm:
            constant_init(self.norm, 1, bias=0)

    @property
    def norm(self):
        return getattr(self, self.norm_name) if self.norm_name else None

    def _conv(self, x):
        """The convolution: a batched GEMM for a pointwise one where the operator applies."""
        conv = self.conv
        pointwise = (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
                     and conv.groups == 1)
        b, c, h, w = x.shape
        large = b * c * h * w * conv.out_channels >= GEMM_MIN_MACS
        if not (pointwise and large and gemm_applies(x) and x.dtype == conv.weight.dtype):
            return conv(x)
        y = gemm(conv.weight.reshape(conv.out_channels, c), x.reshape(b, c, h * w))  # (B, Cout, HW)
        y = y.reshape(b, conv.out_channels, h, w)
        return y if conv.bias is None else y + conv.bias.reshape(1, -1, 1, 1)

    def execute(self, x):
        for layer in self.order:
            if layer == 'conv':
                x = self._conv(x)
            elif layer == 'norm' and self.with_norm:
                x = self.norm(x)
            elif layer == 'act' and self.with_activation:
                x = self.activate(x)
        return x
