"""jseg.analysis.features.final_features: the classifier input of every supported decode head.

For each head, the classifier applied to the captured features must give the
head's own output (eval mode), and the captured features must be what the
head's documented stages compute. Shapes are those of the head tests.
"""
import warnings

import numpy as np
import pytest

import jseg  # noqa: F401  (configures Jittor first)
import jittor as jt

from jseg.analysis.features import CLASSIFIERS, UnsupportedHeadError, classifier_of, final_features
from jseg.models.decode_heads import SegformerHead
from jseg.registry import MODELS

SEGFORMER = dict(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=16, num_classes=5,
                 norm_cfg=dict(type='BN'), align_corners=False)
HAM = dict(in_channels=[8, 16, 24], in_index=[1, 2, 3], channels=16, ham_channels=16, num_classes=5,
           norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
           ham_kwargs=dict(MD_S=1, MD_R=4, train_steps=6, eval_steps=7, inv_t=100, rand_init=True))
OFFSEG = dict(in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128], in_index=[0, 1, 2, 3], channels=256,
              dropout_ratio=0.1, num_classes=19, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
              align_corners=False)


def segformer_feats():
    h, w = 16, 20
    return [jt.randn(2, c, -(-h // 2 ** i), -(-w // 2 ** i)) for i, c in enumerate([8, 16, 24, 32])]


def ham_feats():
    h, w = 8, 10
    return [jt.randn(2, 4, 2 * h, 2 * w)] + [jt.randn(2, c, -(-h // 2 ** i), -(-w // 2 ** i))
                                            for i, c in enumerate([8, 16, 24])]


def offseg_feats():
    return [jt.randn(*shape) for shape in [(2, 32, 16, 24), (2, 48, 8, 12), (2, 120, 4, 6), (2, 224, 2, 3)]]


def build(kind, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        head = MODELS.build(dict(type=kind, **cfg))
    jt.sync_all()
    return head.eval()


CASES = {
    'SegformerHead': (SEGFORMER, segformer_feats, lambda head, x: head.fuse(x)),
    'SegformerHeadOffsetLearning': (SEGFORMER, segformer_feats, lambda head, x: head.maxpool(head.fuse(x))),
    'LightHamHead': (HAM, ham_feats, lambda head, x: head.decode(x)),
    'LightHamHeadOffsetLearning': (HAM, ham_feats, lambda head, x: head.decode(x)),
    'OffSegHead': (OFFSEG, offseg_feats, None),
}


def test_every_supported_head_is_tested():
    assert {cls.__name__ for cls in CLASSIFIERS} == set(CASES)


@pytest.mark.parametrize('kind', sorted(CASES))
def test_classifier_of_final_features_is_the_head_output(kind):
    cfg, make_feats, stages = CASES[kind]
    jt.set_global_seed(0)
    head = build(kind, cfg)
    x = make_feats()
    jt.sync(x)                           # draw the inputs before the seeded calls below
    name, classifier = classifier_of(head)
    with jt.no_grad():
        jt.set_global_seed(1)            # LightHamHead's NMF draws random bases on every call:
        feats = final_features(head, x)
        feats.sync()                     # Jittor draws them when the graph runs, so run it now
        jt.set_global_seed(1)
        expected = head(x).numpy()
        assert 'execute' not in classifier.__dict__       # the capture is undone
        assert feats.shape[:2] == [2, head.channels]
        np.testing.assert_allclose(classifier(feats).numpy(), expected, rtol=1e-4, atol=1e-5)
        if stages is not None:
            jt.set_global_seed(1)
            np.testing.assert_allclose(feats.numpy(), stages(head, x).numpy(), rtol=1e-5, atol=1e-6)
    assert name == ('conv_seg' if kind in ('SegformerHead', 'LightHamHead') else 'offset_learning')


def test_unknown_heads_are_refused_by_name():
    class MyHead(SegformerHead):  # a subclass may change execute(): not assumed to work
        pass

    head = MyHead(**SEGFORMER)
    with pytest.raises(UnsupportedHeadError, match='MyHead.*supported decode heads: LightHamHead'):
        final_features(head, segformer_feats())
