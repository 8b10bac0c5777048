"""``resize``: the one interpolation helper of jseg (PyTorch ``F.interpolate`` semantics)."""
from jittor import nn

from jseg.ops.resize_bilinear import resize_bilinear

__all__ = ['resize']


def resize(input, size=None, scale_factor=None, mode='nearest', align_corners=None):
    """Resize (B, C, H, W) to ``size`` (h, w) or by ``scale_factor``.

    Follows PyTorch/mmseg: output size is ``floor(H * scale_factor)`` when a
    factor is given; ``align_corners`` only matters for bilinear/bicubic.
    The coordinate scale is always ``in / out`` of the sizes (for a factor,
    PyTorch uses ``1 / scale_factor``: the same for integer factors).
    ``mode='bilinear'`` runs :func:`jseg.ops.resize_bilinear` (a JIT CPU
    operator where it applies, else Jittor's ``nn.interpolate``).
    """
    if size is None and scale_factor is None:
        raise ValueError('resize needs a size or a scale_factor')
    if size is None:
        if isinstance(scale_factor, (tuple, list)):
            sh, sw = scale_factor
        else:
            sh = sw = scale_factor
        size = (int(input.shape[-2] * sh), int(input.shape[-1] * sw))
    size = tuple(int(s) for s in size)
    if tuple(input.shape[-2:]) == size and mode in ('nearest', 'bilinear', 'bicubic'):
        return input
    if mode == 'bilinear':
        return resize_bilinear(input, size, align_corners=bool(align_corners))
    return nn.interpolate(input, size=size, mode=mode, align_corners=bool(align_corners))
