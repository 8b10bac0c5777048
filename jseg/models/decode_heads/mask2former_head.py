"""Mask2Former's head for semantic segmentation: pixel decoder, masked-attention decoder, mask classification.

* Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal
  Image Segmentation", CVPR 2022, arXiv:2112.01527.
* Source of this port: mmsegmentation 1.x ``mmseg/models/decode_heads/mask2former_head.py``
  (as shipped with OffSeg, https://github.com/HVision-NKU/OffSeg) on top of mmdetection 3.x
  ``mmdet/models/dense_heads/{mask2former,maskformer}_head.py`` and
  ``mmdet/models/layers/transformer/mask2former_layers.py`` (Apache-2.0, OpenMMLab).
  Parameter names match their checkpoints: ``pixel_decoder.*``,
  ``transformer_decoder.layers.{i}.{cross_attn,self_attn}.attn.*``, ``.ffn.*``,
  ``.norms.{0,1,2}``, ``transformer_decoder.post_norm``, ``query_embed``,
  ``query_feat``, ``level_embed``, ``cls_embed``, ``mask_embed.{0,2,4}``.

Forward (B images, Q queries, C channels, L = 3 memory levels, coarse to fine)::

    mask_feature, memory_0..2 = pixel_decoder(x)                 (B, C, H/4, W/4), 1/32, 1/16, 1/8
    input_l = memory_l + level_embed[l],  pos_l = sine(memory_l) (B, h_l*w_l, C)
    q       = query_feat                                          (B, Q, C)
    head(q): y = post_norm(q); cls = cls_embed(y) (B, Q, K+1); mask = mask_embed(y) . mask_feature (B, Q, H/4, W/4)
             attn_mask = sigmoid(resize(mask, next level)) < 0.5, per head, detached (True = blocked)
    for layer i = 0..8 (level i % 3): rows of attn_mask blocking every key are cleared;
             q = FFN(LN(self_attn(LN(cross_attn(q, input, mask=attn_mask)))))) then head(q)
    returns  10 class logits and 10 mask logits (after query_feat and after each layer)

``predict``: softmax over the K+1 classes without the no-object column times the
sigmoid masks of the last output, summed over the queries -> (B, K, H, W) scores.
``loss``: Hungarian matching and deep supervision, see :mod:`.mask2former_loss`.
"""
import copy

import jittor as jt
from jittor import nn

from jseg.registry import MODELS

from ..utils import build_norm_layer, resize
from ..utils.offset_learning import _per_image_matmul
from ..utils.transformer import FFN, MultiheadAttention, SinePositionalEncoding
from ..utils.weight_init import normal_init
from .mask2former_loss import Mask2FormerLoss
from .msdeformattn_pixel_decoder import caffe2_xavier_init, xavier_normal_matrices

__all__ = ['Mask2FormerHead', 'Mask2FormerTransformerDecoder', 'Mask2FormerTransformerDecoderLayer',
           'attention_mask_from_logits', 'mask_logits']


class Mask2FormerTransformerDecoderLayer(nn.Module):
    """Decoder layer: ``cross_attn`` -> ``norms.0`` -> ``self_attn`` -> ``norms.1`` -> ``ffn`` -> ``norms.2``.

    Args:
        self_attn_cfg, cross_attn_cfg (dict): :class:`MultiheadAttention` arguments.
        ffn_cfg (dict): :class:`FFN` arguments.
        norm_cfg (dict): the three norms (LayerNorm).
    """

    def __init__(self, self_attn_cfg, cross_attn_cfg, ffn_cfg, norm_cfg=dict(type='LN')):
        super().__init__()
        self.self_attn = MultiheadAttention(**self_attn_cfg)
        self.cross_attn = MultiheadAttention(**cross_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**ffn_cfg)
        self.norms = nn.ModuleList([build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(3)])

    def execute(self, query, key, value, query_pos=None, key_pos=None, cross_attn_mask=None, self_attn_mask=None):
        """query, query_pos (B, Q, C); key, value, key_pos (B, N, C); masks bool (B*nH, Q, N) -> (B, Q, C)."""
        query = self.cross_attn(query=query, key=key, value=value, query_pos=query_pos, key_pos=key_pos,
                                attn_mask=cross_attn_mask)
        query = self.norms[0](query)
        query = self.self_attn(query=query, key=query, value=query, query_pos=query_pos, key_pos=query_pos,
                               attn_mask=self_attn_mask)
        query = self.norms[1](query)
        query = self.ffn(query)
        return self.norms[2](query)


class Mask2FormerTransformerDecoder(nn.Module):
    """The decoder layers plus the ``post_norm`` applied before every prediction.

    The head runs the layers one by one (each needs the attention mask of the
    previous prediction), so this module has no forward of its own.

    Args:
        num_layers (int): 9 in Mask2Former.
        layer_cfg (dict): :class:`Mask2FormerTransformerDecoderLayer` arguments.
        post_norm_cfg (dict): the shared output norm (LayerNorm).
        return_intermediate (bool): accepted for the official signature (the head
            always predicts after every layer); must be True.
        init_cfg: accepted for the official signature; must be None.
    """

    def __init__(self, num_layers, layer_cfg, post_norm_cfg=dict(type='LN'), return_intermediate=True,
                 init_cfg=None):
        super().__init__()
        if not return_intermediate:
            raise ValueError('Mask2FormerTransformerDecoder: the head predicts after every layer '
                             '(return_intermediate must be True)')
        if init_cfg is not None:
            raise ValueError(f'Mask2FormerTransformerDecoder: init_cfg is not supported, got {init_cfg!r}')
        self.num_layers = num_layers
        self.layers = nn.ModuleList([Mask2FormerTransformerDecoderLayer(**layer_cfg) for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        self.post_norm = build_norm_layer(post_norm_cfg, self.embed_dims)[1]


def mask_logits(mask_embed, mask_feature):
    """Per-query dot product with every pixel embedding (einsum 'bqc,bchw->bqhw').

    Args:
        mask_embed (jt.Var): (B, Q, C).
        mask_feature (jt.Var): (B, C, H, W).

    Returns:
        jt.Var: (B, Q, H, W) mask logits.
    """
    b, c, h, w = mask_feature.shape
    return _per_image_matmul(mask_embed, mask_feature.reshape(b, c, h * w)).reshape(b, -1, h, w)


def attention_mask_from_logits(mask_pred, size, num_heads):
    """The boolean cross-attention mask of the next decoder layer (True = blocked).

    Bilinear resize (``align_corners=False``) of the mask logits to the next
    level's ``size``, then ``sigmoid < 0.5``, repeated for every head (row
    ``b * num_heads + head``) and detached. Rows that would block every key are
    NOT cleared here; :meth:`Mask2FormerHead.execute` does it before each layer.

    Args:
        mask_pred (jt.Var): (B, Q, H, W) mask logits.
        size (tuple[int, int]): (h, w) of the attended level.
        num_heads (int): attention heads.

    Returns:
        jt.Var: bool (B * num_heads, Q, h * w).
    """
    b, q = mask_pred.shape[:2]
    resized = resize(mask_pred, size=size, mode='bilinear', align_corners=False)
    blocked = resized.reshape(b, 1, q, -1).sigmoid() < 0.5                     # (B, 1, Q, hw)
    blocked = blocked.broadcast((b, num_heads, q, blocked.shape[-1]))
    return blocked.reshape(b * num_heads, q, -1).stop_grad()


def clear_fully_blocked_rows(attn_mask):
    """Unblock every key of a query whose mask blocks all keys (bool (B*nH, Q, N) -> same)."""
    num_keys = attn_mask.shape[-1]
    full = attn_mask.int32().sum(-1, keepdims=True) == num_keys                 # (B*nH, Q, 1)
    return jt.logical_and(attn_mask, jt.logical_not(full))


@MODELS.register_module()
class Mask2FormerHead(nn.Module):
    """Mask2Former decode head (mmseg ``Mask2FormerHead`` on mmdet's).

    Args:
        in_channels (list[int]): backbone channels (fine to coarse).
        feat_channels (int): C of the pixel and transformer decoders.
        out_channels (int): channels of the pixel decoder's ``mask_feature``
            (the mask embedding width); ``self.out_channels`` is then set to
            ``num_classes``, as mmseg does, for the segmentor.
        num_classes (int): K (the classifier has K + 1 outputs, the last is no-object).
        num_queries (int): Q.
        num_transformer_feat_level (int): memory levels attended in turn (3).
        pixel_decoder (dict): :class:`MSDeformAttnPixelDecoder` config
            (``in_channels``, ``feat_channels``, ``out_channels`` are filled in).
        enforce_decoder_input_project (bool): 1x1 conv on the memories even when
            their width equals the decoder's (official: False -> identity).
        transformer_decoder (dict): :class:`Mask2FormerTransformerDecoder` arguments.
        positional_encoding (dict): :class:`SinePositionalEncoding` of the memories.
        strides (list[int] | None): strides of the inputs, passed to the pixel
            decoder unless its config sets them (the official head ignores this
            key and the pixel decoder's default [4, 8, 16, 32] applies).
        loss_cls, loss_mask, loss_dice (dict): loss configs (see :class:`Mask2FormerLoss`).
        train_cfg (dict | None): ``num_points``, ``oversample_ratio``,
            ``importance_sample_ratio``, ``assigner`` (with its ``match_costs``)
            and ``sampler`` (only MaskPseudoSampler).
        align_corners (bool): False (of the final resize; the official head
            always resizes with False).
        ignore_index (int): label without a ground-truth instance.
        test_cfg, init_cfg: accepted for the official signature (init_cfg must be None).

    Shapes: ``execute(list of (B, in_channels[i], H_i, W_i))`` -> (list of
    (B, Q, K+1), list of (B, Q, H_0, W_0)), one entry per prediction (layers + 1).
    """

    #: the head has no ``conv_seg`` (mask classification); nothing is constructed but unused
    uses_conv_seg = False

    def __init__(self, in_channels, feat_channels, out_channels, num_classes, num_queries=100,
                 num_transformer_feat_level=3, pixel_decoder=None, enforce_decoder_input_project=False,
                 transformer_decoder=None,
                 positional_encoding=dict(num_feats=128, normalize=True),
                 strides=None,
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                               class_weight=[1.0] * 150 + [0.1]),
                 loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
                 loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                                naive_dice=True, eps=1.0, loss_weight=5.0),
                 train_cfg=None, test_cfg=None, align_corners=False, ignore_index=255, init_cfg=None):
        super().__init__()
        if pixel_decoder is None or transformer_decoder is None:
            raise ValueError('Mask2FormerHead needs pixel_decoder and transformer_decoder configs')
        if init_cfg is not None:
            raise ValueError(f'Mask2FormerHead: init_cfg is not supported, got {init_cfg!r}')
        self.num_classes = num_classes
        self.out_channels = num_classes          # what the segmentor reads (mmseg overrides it the same way)
        self.mask_channels = out_channels
        self.feat_channels = feat_channels
        self.threshold = None
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.num_queries = num_queries
        self.num_transformer_feat_level = num_transformer_feat_level
        self.num_heads = transformer_decoder['layer_cfg']['cross_attn_cfg']['num_heads']
        self.num_transformer_decoder_layers = transformer_decoder['num_layers']
        encoder_levels = pixel_decoder['encoder']['layer_cfg']['self_attn_cfg']['num_levels']
        if encoder_levels != num_transformer_feat_level:
            raise ValueError(f'the pixel decoder encodes {encoder_levels} levels but the transformer decoder '
                             f'attends to num_transformer_feat_level={num_transformer_feat_level}')
        pixel_decoder = copy.deepcopy(dict(pixel_decoder))
        pixel_decoder.update(in_channels=in_channels, feat_channels=feat_channels, out_channels=out_channels)
        if strides is not None:
            pixel_decoder.setdefault('strides', strides)
        self.pixel_decoder = MODELS.build(pixel_decoder)
        self.transformer_decoder = Mask2FormerTransformerDecoder(**transformer_decoder)
        self.decoder_embed_dims = self.transformer_decoder.embed_dims
        self.decoder_input_projs = nn.ModuleList()
        for _ in range(num_transformer_feat_level):
            if self.decoder_embed_dims != feat_channels or enforce_decoder_input_project:
                self.decoder_input_projs.append(nn.Conv2d(feat_channels, self.decoder_embed_dims, kernel_size=1))
            else:
                self.decoder_input_projs.append(nn.Identity())
        self.decoder_positional_encoding = SinePositionalEncoding(**positional_encoding)
        self.query_embed = nn.Embedding(num_queries, feat_channels)
        self.query_feat = nn.Embedding(num_queries, feat_channels)
        self.level_embed = nn.Embedding(num_transformer_feat_level, feat_channels)
        for embedding in (self.query_embed, self.query_feat, self.level_embed):
            normal_init(embedding, mean=0.0, std=1.0)      # PyTorch's nn.Embedding init
        self.cls_embed = nn.Linear(feat_channels, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(feat_channels, feat_channels), nn.ReLU(),
            nn.Linear(feat_channels, feat_channels), nn.ReLU(),
            nn.Linear(feat_channels, out_channels))
        self.test_cfg = test_cfg
        self.train_cfg = train_cfg
        # matching and losses (mmdet keeps them on the head as loss_cls/loss_mask/loss_dice/assigner);
        # it holds no parameters, so the state dict is the official one
        self.criterion = Mask2FormerLoss(num_classes=num_classes, loss_cls=loss_cls, loss_mask=loss_mask,
                                         loss_dice=loss_dice, train_cfg=train_cfg, ignore_index=ignore_index)

    # ------------------------------------------------------------------ construction helpers

    def unused_parameter_names(self):
        """Every parameter takes part in the forward pass."""
        return []

    def init_weights(self):
        """mmdet's init: 1x1 input projections (if any) caffe2-Xavier, the pixel decoder's own init,
        Xavier-normal on every matrix of the transformer decoder. Embeddings, ``cls_embed`` and
        ``mask_embed`` keep their construction-time init, as in the official model."""
        for proj in self.decoder_input_projs:
            if isinstance(proj, nn.Conv2d):
                caffe2_xavier_init(proj, bias=0)
        self.pixel_decoder.init_weights()
        xavier_normal_matrices(self.transformer_decoder)

    # ------------------------------------------------------------------ forward

    def _mask_logits(self, mask_embed, mask_feature):
        """(B, Q, C) mask embeddings and (B, C, H, W) pixel embeddings -> (B, Q, H, W) mask logits."""
        return mask_logits(mask_embed, mask_feature)

    def _forward_head(self, decoder_out, mask_feature, attn_mask_target_size):
        """Predictions from the decoder state.

        Args:
            decoder_out (jt.Var): (B, Q, C) queries.
            mask_feature (jt.Var): (B, C, H, W).
            attn_mask_target_size (tuple[int, int]): (h, w) of the next attended level.

        Returns:
            tuple[jt.Var, jt.Var, jt.Var]: class logits (B, Q, K+1), mask logits
            (B, Q, H, W), bool attention mask (B * num_heads, Q, h * w).
        """
        decoder_out = self.transformer_decoder.post_norm(decoder_out)
        cls_pred = self.cls_embed(decoder_out)
        mask_embed = self.mask_embed(decoder_out)
        mask_pred = self._mask_logits(mask_embed, mask_feature)
        attn_mask = attention_mask_from_logits(mask_pred, attn_mask_target_size, self.num_heads)
        return cls_pred, mask_pred, attn_mask

    def execute(self, inputs):
        """list of (B, in_channels[i], H_i, W_i) -> (list of (B, Q, K+1), list of (B, Q, H_0, W_0))."""
        batch_size = inputs[0].shape[0]
        mask_features, memories = self.pixel_decoder(inputs)     # memories coarse to fine
        decoder_inputs, decoder_positions, sizes = [], [], []
        for i in range(self.num_transformer_feat_level):
            h, w = int(memories[i].shape[2]), int(memories[i].shape[3])
            memory = self.decoder_input_projs[i](memories[i])
            memory = memory.flatten(2).transpose(0, 2, 1)                        # (B, hw, C)
            decoder_inputs.append(memory + self.level_embed.weight[i].reshape(1, 1, -1))
            position = self.decoder_positional_encoding(jt.zeros((batch_size, h, w), dtype='bool'))
            decoder_positions.append(position.flatten(2).transpose(0, 2, 1))    # (B, hw, C)
            sizes.append((h, w))
        query_feat = self.query_feat.weight.unsqueeze(0).repeat(batch_size, 1, 1)    # (B, Q, C)
        query_embed = self.query_embed.weight.unsqueeze(0).repeat(batch_size, 1, 1)

        cls_pred, mask_pred, attn_mask = self._forward_head(query_feat, mask_features, sizes[0])
        cls_preds, mask_preds = [cls_pred], [mask_pred]
        for i in range(self.num_transformer_decoder_layers):
            level = i % self.num_transformer_feat_level
            attn_mask = clear_fully_blocked_rows(attn_mask)
            query_feat = self.transformer_decoder.layers[i](
                query=query_feat, key=decoder_inputs[level], value=decoder_inputs[level], query_pos=query_embed,
                key_pos=decoder_positions[level], cross_attn_mask=attn_mask)
            next_size = sizes[(i + 1) % self.num_transformer_feat_level]
            cls_pred, mask_pred, attn_mask = self._forward_head(query_feat, mask_features, next_size)
            cls_preds.append(cls_pred)
            mask_preds.append(mask_pred)
        return cls_preds, mask_preds

    # ------------------------------------------------------------------ decode-head interface

    def predict(self, inputs, batch_img_metas, test_cfg=None):
        """Semantic scores (B, K, H, W) at ``pad_shape`` (else ``img_shape``) of the first meta.

        score[k] = sum_q softmax(cls_q)[k] * sigmoid(mask_q), no-object column dropped,
        from the last prediction, masks resized bilinearly (``align_corners=False``).
        """
        cls_preds, mask_preds = self(inputs)
        return self.predict_by_feat(cls_preds[-1], mask_preds[-1], batch_img_metas)

    def predict_by_feat(self, cls_pred, mask_pred, batch_img_metas):
        """(B, Q, K+1) class logits and (B, Q, h, w) mask logits -> (B, K, H, W) scores."""
        meta = batch_img_metas[0]
        size = tuple(meta['pad_shape'][:2] if 'pad_shape' in meta else meta['img_shape'][:2])
        masks = resize(mask_pred, size=size, mode='bilinear', align_corners=False).sigmoid()   # (B, Q, H, W)
        scores = nn.softmax(cls_pred, dim=-1)[:, :, :-1]                                       # (B, Q, K)
        b, q, h, w = masks.shape
        seg = _per_image_matmul(scores.transpose(0, 2, 1), masks.reshape(b, q, h * w))        # (B, K, HW)
        return seg.reshape(b, -1, h, w)

    def loss(self, inputs, gt_seg, train_cfg=None):
        """Losses of all predictions against (B, H, W) (or (B, 1, H, W)) label maps.

        Keys ``loss_cls``, ``loss_mask``, ``loss_dice`` (last prediction) and
        ``d{i}.loss_*`` (prediction i = 0 .. layers - 1), as mmdet names them.
        """
        cls_preds, mask_preds = self(inputs)
        return self.criterion(cls_preds, mask_preds, gt_seg)
