"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021, arXiv:2010.04159).

Semantics follow mmcv's ``mmcv.ops.multi_scale_deform_attn`` (its CUDA
kernels and its ``multi_scale_deformable_attn_pytorch`` fallback agree). For
``value`` (B, S, nH, D) holding L feature maps of sizes ``(H_l, W_l)``
concatenated level after level (row-major inside a level, ``S = sum H_l*W_l``),
sampling locations ``loc`` (B, Lq, nH, L, P, 2) given as normalised ``(x, y)``
with (0, 0) the top-left corner of the map and (1, 1) the bottom-right one, and
attention weights ``a`` (B, Lq, nH, L, P)::

    out[b, q, h*D + d] = sum_{l, p} a[b, q, h, l, p]
                         * bilinear(value_l[b, :, :, h, d], x * W_l - 0.5, y * H_l - 0.5)

where ``(x, y) = loc[b, q, h, l, p]`` and ``bilinear`` reads the map at
fractional pixel coordinates with zero padding: each of the four neighbouring
pixels that lies outside the map contributes zero (``grid_sample`` with
``mode='bilinear'``, ``padding_mode='zeros'``, ``align_corners=False``).

:func:`multi_scale_deformable_attn` is the public entry point.
:func:`ms_deform_attn_reference` is the pure-Jittor implementation (forward
and, through Jittor's autograd, backward); the public function dispatches to
it until a fused kernel is registered with :func:`set_ms_deform_attn_kernel`.
"""
import jittor as jt
from jittor import nn

__all__ = ['multi_scale_deformable_attn', 'ms_deform_attn_reference', 'set_ms_deform_attn_kernel',
           'normalize_spatial_shapes']

# A fused implementation with ms_deform_attn_reference's signature, or None.
# It is the seam for a jt.code kernel: multi_scale_deformable_attn() uses it when set.
_fused_kernel = None


def set_ms_deform_attn_kernel(fn):
    """Route :func:`multi_scale_deformable_attn` to ``fn`` (same signature); ``None`` restores the reference.

    Returns:
        callable | None: the kernel registered before, so that callers can restore it.
    """
    global _fused_kernel
    previous, _fused_kernel = _fused_kernel, fn
    return previous


def normalize_spatial_shapes(spatial_shapes):
    """``spatial_shapes`` as a tuple of ``(H_l, W_l)`` Python ints.

    Accepts any sequence of pairs of integers (tuples, lists, a NumPy array of
    shape (L, 2)). A ``jt.Var`` is refused: the level sizes define the kernel's
    shapes and must be known without a device sync.

    Raises:
        TypeError, ValueError: naming the offending entry.
    """
    if isinstance(spatial_shapes, jt.Var):
        raise TypeError('multi_scale_deformable_attn: spatial_shapes must be a tuple of (H, W) Python ints, '
                        'not a jt.Var (convert it once with .tolist())')
    if hasattr(spatial_shapes, 'tolist'):
        spatial_shapes = spatial_shapes.tolist()
    try:
        levels = list(spatial_shapes)
    except TypeError:
        raise TypeError(f'multi_scale_deformable_attn: spatial_shapes must be a sequence of (H, W) pairs, '
                        f'got {spatial_shapes!r}') from None
    shapes = []
    for i, level in enumerate(levels):
        try:
            h, w = level
            ih, iw = int(h), int(w)
        except (TypeError, ValueError):
            raise ValueError(f'multi_scale_deformable_attn: spatial_shapes[{i}] must be an (H, W) pair of ints, '
                             f'got {level!r}') from None
        if ih != h or iw != w or ih < 1 or iw < 1:
            raise ValueError(f'multi_scale_deformable_attn: spatial_shapes[{i}] must be positive ints, '
                             f'got {level!r}')
        shapes.append((ih, iw))
    if not shapes:
        raise ValueError('multi_scale_deformable_attn: spatial_shapes is empty')
    return tuple(shapes)


def _check(value, spatial_shapes, sampling_locations, attention_weights):
    """Validate the shapes; returns the normalised spatial shapes."""
    shapes = normalize_spatial_shapes(spatial_shapes)
    if value.ndim != 4:
        raise ValueError(f'multi_scale_deformable_attn: value must be (B, S, nH, D), got shape {tuple(value.shape)}')
    if sampling_locations.ndim != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError('multi_scale_deformable_attn: sampling_locations must be (B, Lq, nH, L, P, 2), '
                         f'got shape {tuple(sampling_locations.shape)}')
    b, s, nh, _ = value.shape
    _, lq, _, nl, npts, _ = sampling_locations.shape
    if tuple(sampling_locations.shape[:4]) != (b, lq, nh, len(shapes)):
        raise ValueError(f'multi_scale_deformable_attn: sampling_locations {tuple(sampling_locations.shape)} do not '
                         f'match value {tuple(value.shape)} and {len(shapes)} levels: expected '
                         f'({b}, Lq, {nh}, {len(shapes)}, P, 2)')
    if tuple(attention_weights.shape) != (b, lq, nh, nl, npts):
        raise ValueError(f'multi_scale_deformable_attn: attention_weights must have shape {(b, lq, nh, nl, npts)}, '
                         f'got {tuple(attention_weights.shape)}')
    total = sum(h * w for h, w in shapes)
    if total != s:
        raise ValueError(f'multi_scale_deformable_attn: value has {s} positions but spatial_shapes {shapes} '
                         f'sum to {total}')
    return shapes


def multi_scale_deformable_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """Multi-scale deformable attention sampling (mmcv semantics, see the module docstring).

    Args:
        value (jt.Var): (B, S, nH, D), the levels concatenated along S.
        spatial_shapes (tuple[tuple[int, int]]): ``(H_l, W_l)`` per level,
            ``sum H_l * W_l == S``.
        sampling_locations (jt.Var): (B, Lq, nH, L, P, 2), normalised ``(x, y)``;
            values outside [0, 1] are allowed (they read zero padding).
        attention_weights (jt.Var): (B, Lq, nH, L, P).

    Returns:
        jt.Var: (B, Lq, nH*D), channel ``h*D + d``.
    """
    shapes = _check(value, spatial_shapes, sampling_locations, attention_weights)
    if _fused_kernel is not None:
        return _fused_kernel(value, shapes, sampling_locations, attention_weights)
    return ms_deform_attn_reference(value, shapes, sampling_locations, attention_weights)


def ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights):
    """Pure-Jittor multi-scale deformable attention; same arguments and result as
    :func:`multi_scale_deformable_attn`.

    As mmcv's ``multi_scale_deformable_attn_pytorch``: per level, the value map
    (B*nH, D, H_l, W_l) is sampled with ``grid_sample`` at ``2*loc - 1``
    (B*nH, Lq, P, 2), giving (B*nH, D, Lq, P); the levels are stacked, weighted
    and summed over levels and points.
    """
    shapes = _check(value, spatial_shapes, sampling_locations, attention_weights)
    b, _, nh, d = value.shape
    _, lq, _, nl, npts, _ = sampling_locations.shape
    grids = sampling_locations * 2 - 1
    sampled, start = [], 0
    for level, (h, w) in enumerate(shapes):
        value_l = value[:, start:start + h * w]                                  # (B, h*w, nH, D)
        value_l = value_l.permute(0, 2, 3, 1).reshape(b * nh, d, h, w)
        grid_l = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(b * nh, lq, npts, 2)
        sampled.append(nn.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                      align_corners=False))                      # (B*nH, D, Lq, P)
        start += h * w
    stacked = jt.stack(sampled, dim=-2).reshape(b * nh, d, lq, nl * npts)
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(b * nh, 1, lq, nl * npts)
    out = (stacked * weights).sum(-1).reshape(b, nh * d, lq)
    return out.permute(0, 2, 1)
