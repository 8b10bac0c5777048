"""SegTTAModel averages the softmax of every view's logits, as mmseg's merge_preds."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

from jseg.models.segmentors.seg_tta import SegTTAModel
from jseg.registry import MODELS


class FakeSegmentor(nn.Module):
    """Returns fixed per-sample logits for each view (chosen by the view's 'flip' meta and scale)."""

    def __init__(self, logits_per_view):
        super().__init__()
        self.logits_per_view = logits_per_view
        self.weight = jt.zeros((2,))
        self.seen = []

    def execute(self, batch, mode='loss'):
        assert mode == 'predict'
        self.seen.append(batch['view_id'])
        return [jt.array(x) for x in self.logits_per_view[batch['view_id']]]


def softmax(x):
    e = np.exp(x - x.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def test_average_of_softmax_over_views():
    rng = np.random.RandomState(0)
    logits = [[rng.randn(3, 4, 5).astype(np.float32) for _ in range(2)] for _ in range(4)]  # 4 views, 2 samples
    module = FakeSegmentor(logits)
    tta = SegTTAModel(module)
    batch = {'views': [{'view_id': v} for v in range(4)]}
    merged = tta(batch, mode='predict')
    assert module.seen == [0, 1, 2, 3] and len(merged) == 2
    for i in range(2):
        expected = np.mean([softmax(logits[v][i]) for v in range(4)], axis=0)
        np.testing.assert_allclose(merged[i].numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(merged[i].numpy().sum(0), 1.0, rtol=1e-5)


def test_plain_batch_single_channel_and_weights():
    module = FakeSegmentor([[np.zeros((1, 2, 2), np.float32)]])
    tta = MODELS.build(dict(type='SegTTAModel', module=module))
    merged = tta({'view_id': 0}, mode='predict')
    np.testing.assert_allclose(merged[0].numpy(), 0.5)         # sigmoid for a binary segmentor
    assert list(tta.state_dict()) == list(module.state_dict())  # the segmentor's own names
    with pytest.raises(ValueError, match='predict'):
        tta({'view_id': 0}, mode='loss')
