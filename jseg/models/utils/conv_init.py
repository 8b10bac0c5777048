"""mmcv's construction-time init of a ``ConvModule``, for heads ported from mmseg."""
from .weight_init import constant_init, kaiming_init

__all__ = ['init_conv_module']


def init_conv_module(module):
    """Kaiming-normal conv (fan_out, ReLU gain, zero bias), norm weight 1 / bias 0.

    mmcv's ``ConvModule`` runs this in its constructor (for any activation but
    LeakyReLU, which the heads here do not use).
    """
    kaiming_init(module.conv, a=0, mode='fan_out', nonlinearity='relu', distribution='normal')
    if module.norm is not None:
        constant_init(module.norm, 1, bias=0)
