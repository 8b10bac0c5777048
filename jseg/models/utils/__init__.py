"""Building blocks shared by backbones and heads."""
from .activation import build_activation_layer
from .conv_module import ConvModule
from .drop import DropPath, drop_path
from .norm import BatchNorm2d, GroupNorm, LayerNorm, build_norm_layer
from .wrappers import resize

__all__ = ['BatchNorm2d', 'ConvModule', 'DropPath', 'GroupNorm', 'LayerNorm', 'build_activation_layer',
           'build_norm_layer', 'drop_path', 'resize']
