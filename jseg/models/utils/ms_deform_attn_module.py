"""Multi-scale deformable attention module (Deformable DETR, Zhu et al., ICLR 2021, arXiv:2010.04159).

mmcv 2.x's ``MultiScaleDeformableAttention`` (``mmcv/ops/multi_scale_deform_attn.py``): parameter
names ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``, its
initialisation and its forward, computing the sampling with :func:`jseg.ops.multi_scale_deformable_attn`.
"""
import math

import jittor as jt
import numpy as np
from jittor import nn

from jseg.ops import multi_scale_deformable_attn
from jseg.ops.ms_deform_attn import normalize_spatial_shapes
from jseg.registry import MODELS

from .weight_init import constant_init, xavier_init

__all__ = ['MultiScaleDeformableAttention', 'sampling_offset_grid']


def sampling_offset_grid(num_heads, num_levels, num_points):
    """mmcv's initial ``sampling_offsets.bias`` as an array (num_heads, num_levels, num_points, 2).

    Head h points in direction theta_h = 2 pi h / num_heads, (cos, sin) scaled so that its
    larger component is +-1; point p of every level is that direction times (p + 1).
    """
    thetas = np.arange(num_heads, dtype=np.float32) * np.float32(2.0 * math.pi / num_heads)
    grid = np.stack([np.cos(thetas), np.sin(thetas)], -1)                       # (nH, 2)
    grid = grid / np.abs(grid).max(-1, keepdims=True)
    grid = np.tile(grid[:, None, None, :], (1, num_levels, num_points, 1))      # (nH, L, P, 2)
    grid = grid * np.arange(1, num_points + 1, dtype=np.float32)[None, None, :, None]
    return grid.astype(np.float32)


@MODELS.register_module()
class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention of each query over ``num_points`` sampled points per level and head.

    Args:
        embed_dims (int): C (divisible by ``num_heads``).
        num_heads (int): nH.
        num_levels (int): L feature levels.
        num_points (int): P sampling points per level and head.
        im2col_step (int): accepted for config compatibility (a CUDA batching detail of mmcv).
        dropout (float): dropout on the output before the identity add (mmcv default 0.1).
        batch_first (bool): (B, N, C) inputs when True, else (N, B, C).
        norm_cfg: accepted for config compatibility and unused, as in mmcv.
        init_cfg: accepted for config compatibility and ignored.
        value_proj_ratio (float): width of ``value_proj`` relative to C.

    Parameters (mmcv names): ``sampling_offsets`` Linear(C, nH*L*P*2), ``attention_weights``
    Linear(C, nH*L*P), ``value_proj`` Linear(C, C'), ``output_proj`` Linear(C', C).
    """

    def __init__(self, embed_dims=256, num_heads=8, num_levels=4, num_points=4, im2col_step=64, dropout=0.1,
                 batch_first=False, norm_cfg=None, init_cfg=None, value_proj_ratio=1.0):
        if embed_dims % num_heads:
            raise ValueError(f'MultiScaleDeformableAttention: embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = im2col_step
        self.batch_first = batch_first
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        value_proj_size = int(embed_dims * value_proj_ratio)
        self.value_proj = nn.Linear(embed_dims, value_proj_size)
        self.output_proj = nn.Linear(value_proj_size, embed_dims)
        self.init_weights()

    def init_weights(self):
        """mmcv's init: zero offset weights with the direction grid as bias, zero attention
        weights and bias (uniform attention), Xavier-uniform value/output projections, zero biases."""
        constant_init(self.sampling_offsets, 0.0)
        grid = sampling_offset_grid(self.num_heads, self.num_levels, self.num_points)
        self.sampling_offsets.bias.assign(jt.array(grid.reshape(-1)))
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution='uniform', bias=0.0)
        xavier_init(self.output_proj, distribution='uniform', bias=0.0)

    def execute(self, query, value=None, identity=None, query_pos=None, reference_points=None, spatial_shapes=None,
                key_padding_mask=None, key=None, level_start_index=None):
        """Deformable attention plus the identity.

        Args:
            query (Var): (B, Lq, C) if ``batch_first`` else (Lq, B, C).
            value (Var | None): (B, S, C) or (S, B, C), the L levels flattened and
                concatenated, S = sum H_l * W_l; default ``query``.
            identity (Var | None): added to the output; default ``query`` (before ``query_pos``).
            query_pos (Var | None): added to the query (drives offsets and weights, not the value).
            reference_points (Var): (B, Lq, L, 2) normalised (x, y) in [0, 1], or (B, Lq, L, 4)
                boxes (cx, cy, w, h).
            spatial_shapes: the L pairs (H_l, W_l) as Python ints (tuple, list or NumPy array).
            key_padding_mask (Var | None): bool (B, S), True = padding (its values are zeroed).
            key, level_start_index: accepted for mmcv call compatibility and unused (as in mmcv).

        Returns:
            Var: same layout as ``query``.
        """
        if reference_points is None or spatial_shapes is None:
            raise ValueError('MultiScaleDeformableAttention: reference_points and spatial_shapes are required')
        shapes = normalize_spatial_shapes(spatial_shapes)
        if len(shapes) != self.num_levels:
            raise ValueError(f'MultiScaleDeformableAttention: {len(shapes)} spatial_shapes for '
                             f'num_levels={self.num_levels}')
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(1, 0, 2), value.transpose(1, 0, 2)
        b, num_query, _ = query.shape
        num_value = value.shape[1]
        if sum(h * w for h, w in shapes) != num_value:
            raise ValueError(f'MultiScaleDeformableAttention: value has {num_value} tokens, spatial_shapes '
                             f'{shapes} give {sum(h * w for h, w in shapes)}')
        nh, nl, npt = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)                                             # (B, S, C')
        if key_padding_mask is not None:
            padded = key_padding_mask.reshape(b, num_value, 1).broadcast(value.shape)
            value = jt.ternary(padded, jt.zeros_like(value), value)
        value = value.reshape(b, num_value, nh, -1)                                # (B, S, nH, D)
        offsets = self.sampling_offsets(query).reshape(b, num_query, nh, nl, npt, 2)
        weights = self.attention_weights(query).reshape(b, num_query, nh, nl * npt)
        weights = nn.softmax(weights, dim=-1).reshape(b, num_query, nh, nl, npt)   # over levels x points
        if reference_points.shape[-1] == 2:
            normalizer = jt.array(np.array([[w, h] for h, w in shapes], dtype=np.float32))   # (L, 2) as (x, y)
            locations = (reference_points.reshape(b, num_query, 1, nl, 1, 2)
                         + offsets / normalizer.reshape(1, 1, 1, nl, 1, 2))        # (B, Lq, nH, L, P, 2)
        elif reference_points.shape[-1] == 4:
            ref = reference_points.reshape(b, num_query, 1, nl, 1, 4)
            locations = ref[..., :2] + offsets / npt * ref[..., 2:] * 0.5
        else:
            raise ValueError(f'MultiScaleDeformableAttention: last dim of reference_points must be 2 or 4, '
                             f'got {reference_points.shape[-1]}')
        out = multi_scale_deformable_attn(value, shapes, locations, weights)      # (B, Lq, C')
        out = self.output_proj(out)                                                # (B, Lq, C)
        if not self.batch_first:
            out = out.transpose(1, 0, 2)
        if self.dropout is not None:
            out = self.dropout(out)
        return out + identity
