"""Mask2Former's pixel decoder: a deformable-attention encoder over the coarse levels, then an FPN to 1/4.

* Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal
  Image Segmentation", CVPR 2022, arXiv:2112.01527.
* Source of this port: mmdetection 3.x (Apache-2.0, OpenMMLab),
  ``mmdet/models/layers/msdeformattn_pixel_decoder.py`` and the encoder layers of
  ``mmdet/models/layers/transformer/{deformable_detr,mask2former}_layers.py``, as
  used by the Mask2Former configs of mmsegmentation 1.x and OffSeg. Parameter
  names match their checkpoints (``input_convs.{i}.conv/gn``,
  ``encoder.layers.{j}.self_attn/ffn/norms.{0,1}``, ``level_encoding``,
  ``lateral_convs.0``, ``output_convs.0``, ``mask_feature``).

Forward, for backbone levels x_0..x_3 at strides 4, 8, 16, 32 (encoder levels
listed coarse to fine, i = 0 is x_3)::

    q_i     = input_convs[i](x_{3-i})                    1x1 conv + GN      (B, C, h_i, w_i)
    pos_i   = sine(h_i, w_i) + level_encoding[i]                            (B, C, h_i, w_i)
    memory  = encoder(concat_i q_i, concat_i pos_i)      6 x {MSDeformAttn, LN, FFN, LN}   (B, S, C)
    out_i   = memory split back into levels                                 (B, C, h_i, w_i)
    y       = output_convs[0](lateral_convs[0](x_0) + up(out_2))            3x3 conv + GN + ReLU, 1/4
    returns   mask_feature(y) (B, C_out, H/4, W/4), [out_0, out_1, out_2] (1/32, 1/16, 1/8)
"""
import math

import jittor as jt
import numpy as np
from jittor import init, nn

from jseg.registry import MODELS

from ..utils import ConvModule, build_norm_layer, resize
from ..utils.ms_deform_attn_module import MultiScaleDeformableAttention
from ..utils.transformer import FFN, SinePositionalEncoding
from ..utils.weight_init import normal_init, xavier_init

__all__ = ['DeformableDetrTransformerEncoderLayer', 'Mask2FormerTransformerEncoder', 'MSDeformAttnPixelDecoder',
           'caffe2_xavier_init', 'xavier_normal_matrices']


def caffe2_xavier_init(module, bias=0.0):
    """mmengine's ``caffe2_xavier_init``: U(+-sqrt(3 / fan_in)) weights (Kaiming-uniform, a = 1)."""
    fan_in = int(np.prod(module.weight.shape[1:]))
    bound = math.sqrt(3.0 / fan_in)
    init.uniform_(module.weight, -bound, bound)
    if getattr(module, 'bias', None) is not None:
        init.constant_(module.bias, bias)


def xavier_normal_matrices(module):
    """``nn.init.xavier_normal_`` on every parameter of ``module`` with more than one dimension.

    std = sqrt(2 / (fan_in + fan_out)) with PyTorch's fans (dims 1 and 0 times the receptive field).
    """
    for param in module.parameters():
        shape = param.shape
        if len(shape) < 2:
            continue
        receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        init.gauss_(param, 0.0, math.sqrt(2.0 / float(fan_in + fan_out)))


class DeformableDetrTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: ``self_attn`` (multi-scale deformable) -> ``norms.0`` -> ``ffn`` -> ``norms.1``.

    Args:
        self_attn_cfg (dict): :class:`MultiScaleDeformableAttention` arguments.
        ffn_cfg (dict): :class:`FFN` arguments.
        norm_cfg (dict): the two norms (LayerNorm).
    """

    def __init__(self, self_attn_cfg, ffn_cfg, norm_cfg=dict(type='LN')):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(**self_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**ffn_cfg)
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(2)])

    def execute(self, query, query_pos, reference_points, spatial_shapes):
        """query, query_pos (B, S, C); reference_points (B, S, L, 2) -> (B, S, C)."""
        query = self.self_attn(query=query, value=query, identity=query, query_pos=query_pos,
                               reference_points=reference_points, spatial_shapes=spatial_shapes)
        query = self.norms[0](query)
        query = self.ffn(query)
        return self.norms[1](query)


class Mask2FormerTransformerEncoder(nn.Module):
    """``num_layers`` :class:`DeformableDetrTransformerEncoderLayer` s sharing the reference points.

    Args:
        num_layers (int): 6 in Mask2Former.
        layer_cfg (dict): ``self_attn_cfg`` and ``ffn_cfg`` of every layer.
        init_cfg: accepted for the official signature; must be None.
    """

    def __init__(self, num_layers, layer_cfg, init_cfg=None):
        super().__init__()
        if init_cfg is not None:
            raise ValueError(f'Mask2FormerTransformerEncoder: init_cfg is not supported, got {init_cfg!r}')
        self.num_layers = num_layers
        self.layers = nn.ModuleList([DeformableDetrTransformerEncoderLayer(**layer_cfg) for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def execute(self, query, query_pos, reference_points, spatial_shapes):
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, spatial_shapes)
        return query


def encoder_reference_points(spatial_shapes, strides, batch_size, num_levels):
    """Pixel-centre reference points of all encoder levels, normalised to [0, 1].

    Computed as mmdet does (``MlvlPointGenerator`` centres ``(x + 0.5) * stride``
    divided by ``w * stride``, in float32), then repeated for every level.

    Args:
        spatial_shapes (list[tuple[int, int]]): (h_l, w_l) per level.
        strides (list[int]): stride of each level.

    Returns:
        jt.Var: (B, S, num_levels, 2) as (x, y), S = sum h_l * w_l.
    """
    points = []
    for (h, w), stride in zip(spatial_shapes, strides):
        xs = (np.arange(w, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
        ys = (np.arange(h, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
        grid_x, grid_y = np.meshgrid(xs / np.float32(w * stride), ys / np.float32(h * stride))
        points.append(np.stack([grid_x.reshape(-1), grid_y.reshape(-1)], axis=-1))
    points = np.concatenate(points, axis=0)                                     # (S, 2)
    points = np.broadcast_to(points[None, :, None], (batch_size, points.shape[0], num_levels, 2))
    return jt.array(np.ascontiguousarray(points))


@MODELS.register_module()
class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder with multi-scale deformable attention (mmdet ``MSDeformAttnPixelDecoder``).

    Args:
        in_channels (list[int]): channels of the backbone levels (fine to coarse).
        strides (list[int]): their strides, e.g. [4, 8, 16, 32].
        feat_channels (int): C of the encoder and FPN.
        out_channels (int): channels of ``mask_feature``.
        num_outs (int): multi-scale outputs returned (coarse to fine).
        norm_cfg, act_cfg (dict): of the ConvModules (GN(32), ReLU).
        encoder (dict): :class:`Mask2FormerTransformerEncoder` arguments; its
            ``layer_cfg.self_attn_cfg.num_levels`` sets how many coarse levels
            are encoded.
        positional_encoding (dict): :class:`SinePositionalEncoding` arguments.
        init_cfg: accepted for the official signature; must be None.
    """

    def __init__(self, in_channels=(256, 512, 1024, 2048), strides=(4, 8, 16, 32), feat_channels=256,
                 out_channels=256, num_outs=3, norm_cfg=dict(type='GN', num_groups=32), act_cfg=dict(type='ReLU'),
                 encoder=None, positional_encoding=dict(num_feats=128, normalize=True), init_cfg=None):
        super().__init__()
        if encoder is None:
            raise ValueError('MSDeformAttnPixelDecoder needs an encoder config')
        if init_cfg is not None:
            raise ValueError(f'MSDeformAttnPixelDecoder: init_cfg is not supported, got {init_cfg!r}')
        if len(in_channels) != len(strides):
            raise ValueError(f'in_channels {list(in_channels)} and strides {list(strides)} differ in length')
        self.strides = list(strides)
        self.num_input_levels = len(in_channels)
        self.num_encoder_levels = encoder['layer_cfg']['self_attn_cfg']['num_levels']
        if not 1 <= self.num_encoder_levels <= self.num_input_levels:
            raise ValueError(f'the encoder attends to {self.num_encoder_levels} levels, '
                             f'but there are {self.num_input_levels} inputs')
        # coarse to fine: input_convs[0] projects the last (stride 32) level
        self.input_convs = nn.ModuleList([
            ConvModule(in_channels[i], feat_channels, kernel_size=1, norm_cfg=norm_cfg, act_cfg=None, bias=True)
            for i in range(self.num_input_levels - 1, self.num_input_levels - self.num_encoder_levels - 1, -1)])
        self.encoder = Mask2FormerTransformerEncoder(**encoder)
        self.postional_encoding = SinePositionalEncoding(**positional_encoding)  # official (misspelt) name
        self.level_encoding = nn.Embedding(self.num_encoder_levels, feat_channels)
        use_bias = norm_cfg is None
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            self.lateral_convs.append(ConvModule(in_channels[i], feat_channels, kernel_size=1, bias=use_bias,
                                                 norm_cfg=norm_cfg, act_cfg=None))
            self.output_convs.append(ConvModule(feat_channels, feat_channels, kernel_size=3, stride=1, padding=1,
                                                bias=use_bias, norm_cfg=norm_cfg, act_cfg=act_cfg))
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, kernel_size=1, stride=1, padding=0)
        self.num_outs = num_outs

    def init_weights(self):
        """mmdet's init: Xavier-uniform input convs, caffe2-Xavier FPN and ``mask_feature``,
        N(0, 1) ``level_encoding``, Xavier-normal encoder matrices, then the deformable attentions' own init."""
        for conv in self.input_convs:
            xavier_init(conv.conv, gain=1, bias=0, distribution='uniform')
        for lateral, output in zip(self.lateral_convs, self.output_convs):
            caffe2_xavier_init(lateral.conv, bias=0)
            caffe2_xavier_init(output.conv, bias=0)
        caffe2_xavier_init(self.mask_feature, bias=0)
        normal_init(self.level_encoding, mean=0, std=1)
        xavier_normal_matrices(self.encoder)
        for module in self.encoder.layers.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.init_weights()

    def execute(self, feats):
        """feats: list of (B, in_channels[i], H_i, W_i), fine to coarse.

        Returns:
            tuple[jt.Var, list[jt.Var]]: ``mask_feature`` (B, out_channels, H_0, W_0)
            and ``num_outs`` maps (B, feat_channels, h, w), coarse to fine.
        """
        batch_size = feats[0].shape[0]
        queries, positions, spatial_shapes, strides = [], [], [], []
        for i in range(self.num_encoder_levels):
            level = self.num_input_levels - i - 1
            feat = feats[level]
            h, w = int(feat.shape[2]), int(feat.shape[3])
            projected = self.input_convs[i](feat)                                    # (B, C, h, w)
            no_padding = jt.zeros((batch_size, h, w), dtype='bool')
            pos = self.postional_encoding(no_padding)                                # (B, C, h, w)
            pos = pos + self.level_encoding.weight[i].reshape(1, -1, 1, 1)
            queries.append(projected.flatten(2).transpose(0, 2, 1))                 # (B, h*w, C)
            positions.append(pos.flatten(2).transpose(0, 2, 1))
            spatial_shapes.append((h, w))
            strides.append(self.strides[level])
        spatial_shapes = tuple(spatial_shapes)
        reference_points = encoder_reference_points(spatial_shapes, strides, batch_size, self.num_encoder_levels)
        memory = self.encoder(jt.concat(queries, dim=1), jt.concat(positions, dim=1), reference_points,
                              spatial_shapes)                                        # (B, S, C)
        memory = memory.transpose(0, 2, 1)                                           # (B, C, S)
        outs, start = [], 0
        for h, w in spatial_shapes:
            outs.append(memory[:, :, start:start + h * w].reshape(batch_size, -1, h, w))
            start += h * w
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            merged = lateral + resize(outs[-1], size=lateral.shape[-2:], mode='bilinear', align_corners=False)
            outs.append(self.output_convs[i](merged))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
