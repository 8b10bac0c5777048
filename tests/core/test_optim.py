"""Optimizers follow PyTorch's update rules; paramwise custom_keys follow mmengine's matching rule."""
import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.runner.optim import build_optimizer, param_groups


class Net(nn.Module):
    def __init__(self):
        self.backbone = nn.Sequential(nn.Linear(3, 4))
        self.backbone_norm = nn.Linear(4, 4)  # name contains 'norm'
        self.decode_head = nn.Linear(4, 2)
        self.pos_block = nn.Linear(2, 2)

    def execute(self, x):
        return self.pos_block(self.decode_head(self.backbone_norm(self.backbone(x))))


CUSTOM = {'pos_block': dict(decay_mult=0.), 'norm': dict(decay_mult=0.), 'head': dict(lr_mult=10.)}


def test_custom_keys_longest_first_then_alphabetical():
    groups = param_groups(Net(), base_lr=1.0, base_wd=0.5, paramwise_cfg=dict(custom_keys=CUSTOM))
    by_name = {n: (g['lr'], g['weight_decay']) for g in groups for n in g['names']}
    assert by_name['backbone.0.weight'] == (1.0, 0.5)
    assert by_name['backbone_norm.weight'] == (1.0, 0.0)
    assert by_name['decode_head.weight'] == (10.0, 0.5)
    assert by_name['pos_block.bias'] == (1.0, 0.0)  # 'pos_block' (longest) wins
    with pytest.raises(ValueError, match='unknown options'):
        param_groups(Net(), 1.0, 0.0, dict(custom_keys={'x': dict(lr=1)}))


def _run(optimizer_cfg, steps=4):
    jt.set_seed(0)
    w = jt.array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))

    class M(nn.Module):
        def __init__(self):
            self.w = w

    model = M()
    opt, _ = build_optimizer(model, dict(optimizer=optimizer_cfg))
    xs = [np.random.RandomState(i).randn(2, 3).astype(np.float32) for i in range(steps)]
    for x in xs:
        loss = (model.w * jt.array(x)).sum() + (model.w * model.w).sum() * 0.5
        opt.step(loss)
    return model.w.numpy(), xs


def test_adamw_matches_pytorch_rule():
    cfg = dict(type='AdamW', lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    got, xs = _run(cfg)
    p = np.linspace(-1, 1, 6).reshape(2, 3)
    expect_p = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, x in enumerate(xs, 1):
        g = x + expect_p  # gradient of sum(w * x) + 0.5 * |w|^2
        expect_p = expect_p * (1 - 0.1 * 0.05)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        expect_p = expect_p - 0.1 / (1 - 0.9 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.99 ** t) + 1e-8)
    np.testing.assert_allclose(got, expect_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_matches_pytorch_rule(nesterov):
    cfg = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
    got, xs = _run(cfg)
    p = np.linspace(-1, 1, 6).reshape(2, 3)
    buf = None
    for x in xs:
        g = x + p + 1e-2 * p
        buf = g.copy() if buf is None else 0.9 * buf + g
        p = p - 0.05 * ((g + 0.9 * buf) if nesterov else buf)
    np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-6)


def test_bad_optim_wrapper_is_rejected():
    with pytest.raises(ValueError, match='unknown keys'):
        build_optimizer(Net(), dict(optimizer=dict(type='SGD', lr=0.1), bogus=1))
    with pytest.raises(ValueError, match='clip_grad'):
        build_optimizer(Net(), dict(optimizer=dict(type='SGD', lr=0.1), clip_grad=dict(norm=1)))


# ------------------------------------------------------------------ mmengine's norm_decay_mult rule

class Leaf(nn.Module):
    """A module holding one parameter directly (like Swin's attention with its bias table)."""

    def __init__(self, name, shape):
        setattr(self, name, jt.zeros(shape))


def m2f_like_model():
    """Mask2Former's parameter names in miniature: conv, GN, LN, BN, embeddings, linears."""
    from jseg.models.utils import build_norm_layer

    def ln(c=4):
        return build_norm_layer(dict(type='LN'), c)[1]

    class Ns(nn.Module):
        def __init__(self, **children):
            for k, v in children.items():
                setattr(self, k, v)

    block = Ns(norm1=ln(), attn=Ns(w_msa=Leaf('relative_position_bias_table', (9, 2))),
               ffn=Ns(layers=nn.Sequential(nn.Sequential(nn.Linear(4, 8)), nn.Linear(8, 4))))
    backbone = Ns(patch_embed=Ns(projection=nn.Conv2d(3, 4, 4, stride=4), norm=ln()),
                  stages=nn.Sequential(Ns(blocks=nn.Sequential(block), downsample=Ns(norm=ln(16)))),
                  norm0=ln(), extra_norm=nn.LayerNorm(4))
    pixel_decoder = Ns(input_convs=nn.Sequential(Ns(conv=nn.Conv2d(8, 4, 1), gn=nn.GroupNorm(2, 4))),
                       level_encoding=nn.Embedding(3, 4), bn=build_norm_layer(dict(type='BN'), 4)[1])
    head = Ns(pixel_decoder=pixel_decoder, query_embed=nn.Embedding(5, 4), query_feat=nn.Embedding(5, 4),
              level_embed=nn.Embedding(3, 4), transformer_decoder=Ns(post_norm=ln(), layers=nn.Sequential(
                  Ns(norms=nn.Sequential(ln())))), cls_embed=nn.Linear(4, 6),
              offset_learning=Ns(cls_offset_proj=nn.Linear(4, 4, bias=False)))
    return Ns(backbone=backbone, decode_head=head)


M2F_KEYS = {'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            'backbone.patch_embed.norm': dict(lr_mult=0.1, decay_mult=0.0),
            'backbone.norm': dict(lr_mult=0.1, decay_mult=0.0),
            'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
            'backbone.stages.0.blocks.0.norm': dict(lr_mult=0.1, decay_mult=0.0),
            'backbone.stages.0.downsample.norm': dict(lr_mult=0.1, decay_mult=0.0),
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0)}

# (lr_mult, decay_mult) of every parameter, by hand from mmengine's add_params
M2F_EXPECTED = {
    'backbone.patch_embed.projection.weight': (0.1, 1.0), 'backbone.patch_embed.projection.bias': (0.1, 1.0),
    'backbone.patch_embed.norm.weight': (0.1, 0.0), 'backbone.patch_embed.norm.bias': (0.1, 0.0),
    'backbone.stages.0.blocks.0.norm1.weight': (0.1, 0.0), 'backbone.stages.0.blocks.0.norm1.bias': (0.1, 0.0),
    'backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table': (0.1, 0.0),
    'backbone.stages.0.blocks.0.ffn.layers.0.0.weight': (0.1, 1.0),
    'backbone.stages.0.blocks.0.ffn.layers.0.0.bias': (0.1, 1.0),
    'backbone.stages.0.blocks.0.ffn.layers.1.weight': (0.1, 1.0),
    'backbone.stages.0.blocks.0.ffn.layers.1.bias': (0.1, 1.0),
    'backbone.stages.0.downsample.norm.weight': (0.1, 0.0), 'backbone.stages.0.downsample.norm.bias': (0.1, 0.0),
    'backbone.norm0.weight': (0.1, 0.0), 'backbone.norm0.bias': (0.1, 0.0),           # 'backbone.norm' is in the name
    # a LayerNorm only the 'backbone' key matches: the key wins over norm_decay_mult
    'backbone.extra_norm.weight': (0.1, 1.0), 'backbone.extra_norm.bias': (0.1, 1.0),
    'decode_head.pixel_decoder.input_convs.0.conv.weight': (1.0, 1.0),
    'decode_head.pixel_decoder.input_convs.0.conv.bias': (1.0, 1.0),
    'decode_head.pixel_decoder.input_convs.0.gn.weight': (1.0, 0.0),                 # GroupNorm, no key
    'decode_head.pixel_decoder.input_convs.0.gn.bias': (1.0, 0.0),
    'decode_head.pixel_decoder.level_encoding.weight': (1.0, 1.0),                   # 'level_embed' is not in it
    'decode_head.pixel_decoder.bn.weight': (1.0, 0.0), 'decode_head.pixel_decoder.bn.bias': (1.0, 0.0),
    'decode_head.query_embed.weight': (1.0, 0.0), 'decode_head.query_feat.weight': (1.0, 0.0),
    'decode_head.level_embed.weight': (1.0, 0.0),
    'decode_head.transformer_decoder.post_norm.weight': (1.0, 0.0),
    'decode_head.transformer_decoder.post_norm.bias': (1.0, 0.0),
    'decode_head.transformer_decoder.layers.0.norms.0.weight': (1.0, 0.0),
    'decode_head.transformer_decoder.layers.0.norms.0.bias': (1.0, 0.0),
    'decode_head.cls_embed.weight': (1.0, 1.0), 'decode_head.cls_embed.bias': (1.0, 1.0),
    'decode_head.offset_learning.cls_offset_proj.weight': (1.0, 1.0),
}


def by_name(groups):
    return {n: (g['lr'], g['weight_decay']) for g in groups for n in g['names']}


def test_norm_decay_mult_follows_mmengine_with_mask2former_keys():
    groups = param_groups(m2f_like_model(), base_lr=1e-4, base_wd=0.05,
                          paramwise_cfg=dict(custom_keys=M2F_KEYS, norm_decay_mult=0.0))
    got = by_name(groups)
    assert sorted(got) == sorted(M2F_EXPECTED)                       # BN running stats are not trained
    for name, (lr_mult, decay_mult) in M2F_EXPECTED.items():
        assert got[name] == pytest.approx((1e-4 * lr_mult, 0.05 * decay_mult)), name
    assert len(groups) == 4                                          # (0.1, 1), (0.1, 0), (1, 1), (1, 0)


def test_without_norm_decay_mult_norms_keep_their_decay():
    got = by_name(param_groups(m2f_like_model(), 1e-4, 0.05, dict(custom_keys=M2F_KEYS)))
    assert got['decode_head.pixel_decoder.input_convs.0.gn.weight'] == pytest.approx((1e-4, 0.05))
    assert got['decode_head.transformer_decoder.post_norm.bias'] == pytest.approx((1e-4, 0.05))


def test_bias_decay_and_lr_mult():
    cfg = dict(custom_keys={'cls_embed': dict(lr_mult=3.0)}, norm_decay_mult=0.0, bias_decay_mult=0.5,
               bias_lr_mult=2.0)
    got = by_name(param_groups(m2f_like_model(), 1.0, 1.0, cfg))
    assert got['decode_head.pixel_decoder.input_convs.0.conv.bias'] == (2.0, 0.5)   # bias outside a norm
    assert got['decode_head.pixel_decoder.input_convs.0.conv.weight'] == (1.0, 1.0)
    assert got['decode_head.pixel_decoder.input_convs.0.gn.bias'] == (1.0, 0.0)     # norm: no bias rules
    assert got['decode_head.cls_embed.bias'] == (3.0, 1.0)                          # a key suppresses both
    with pytest.raises(ValueError, match='not supported'):
        param_groups(m2f_like_model(), 1.0, 1.0, dict(dwconv_decay_mult=0.0))
