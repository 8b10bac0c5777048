"""Pixel accuracy (``acc_seg``) with mmseg's semantics."""
import jittor as jt
from jittor import nn

from jseg.ops.argmax import argmax

from .utils import FLOAT32_EPS

__all__ = ['Accuracy', 'accuracy']


def accuracy(pred, target, topk=1, thresh=None, ignore_index=None):
    """Percentage of pixels whose label is among the top-k predictions.

    Args:
        pred (jt.Var): (N, K, ...) scores.
        target (jt.Var): (N, ...) labels.
        topk (int | tuple[int]): k, or several.
        thresh (float | None): a prediction only counts when its score is above it.
        ignore_index (int | None): label left out of both counts.

    Returns:
        jt.Var | tuple[jt.Var]: shape [1] accuracies in percent,
        ``(correct + eps) * 100 / (total + eps)`` as mmseg computes them (an
        all-ignored batch gives 100). No gradient flows through them.
    """
    single = isinstance(topk, int)
    topk = (topk,) if single else tuple(topk)
    maxk = max(topk)
    if pred.shape[0] == 0:
        res = [jt.zeros(1) for _ in topk]
        return res[0] if single else tuple(res)
    if pred.ndim != target.ndim + 1 or pred.shape[0] != target.shape[0]:
        raise ValueError(f'accuracy: pred {pred.shape} does not fit target {target.shape}')
    if maxk > pred.shape[1]:
        raise ValueError(f'accuracy: maxk {maxk} exceeds pred dimension {pred.shape[1]}')
    pred = pred.detach()
    target = target.detach()
    if maxk == 1:
        label, value = argmax(pred, 1)
        labels, values = label.unsqueeze(1), value.unsqueeze(1)      # (N, 1, ...)
    else:
        values, labels = jt.topk(pred, maxk, dim=1)                  # (N, maxk, ...)
    correct = labels == target.unsqueeze(1)
    if thresh is not None:
        correct = jt.logical_and(correct, values > thresh)
    valid = None
    if ignore_index is not None:
        valid = (target != ignore_index).unsqueeze(1)
        correct = jt.logical_and(correct, valid)
        total = valid.float32().sum() + FLOAT32_EPS
    else:
        total = float(target.numel()) + FLOAT32_EPS
    res = []
    for k in topk:
        correct_k = correct[:, :k].float32().sum() + FLOAT32_EPS
        res.append(correct_k * (100.0 / total))
    return res[0] if single else tuple(res)


class Accuracy(nn.Module):
    """Module form of :func:`accuracy`."""

    def __init__(self, topk=(1,), thresh=None, ignore_index=None):
        super().__init__()
        self.topk = topk
        self.thresh = thresh
        self.ignore_index = ignore_index

    def execute(self, pred, target):
        return accuracy(pred, target, self.topk, self.thresh, self.ignore_index)
