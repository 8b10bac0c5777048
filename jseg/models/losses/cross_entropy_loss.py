"""Cross-entropy loss with mmseg's semantics (``mmseg.models.losses.CrossEntropyLoss``).

The default reduction averages over *all* pixels, ignored ones included
(``avg_non_ignore=False``), as mmseg does; ``avg_non_ignore=True`` averages
over the labelled pixels only, as PyTorch's ``F.cross_entropy`` does.
"""
import warnings

import jittor as jt
from jittor import nn

from jseg.ops.softmax_nll import softmax_nll
from jseg.registry import MODELS

from .utils import get_class_weight, weight_reduce_loss

__all__ = ['CrossEntropyLoss', 'binary_cross_entropy', 'cross_entropy']


def _log_softmax(x, dim):
    shifted = x - x.max(dim, keepdims=True)
    return shifted - shifted.exp().sum(dim, keepdims=True).log()


def cross_entropy(pred, label, weight=None, class_weight=None, reduction='mean', avg_factor=None,
                  ignore_index=-100, avg_non_ignore=False):
    """Softmax cross-entropy over dim 1.

    Args:
        pred (jt.Var): (N, C, ...) logits.
        label (jt.Var): (N, ...) integer labels; ``ignore_index`` marks
            pixels with no loss.
        weight (jt.Var | None): element-wise weight, (N, ...).
        class_weight (jt.Var | None): (C,) weight of each class.
        reduction (str): 'none', 'mean' or 'sum'.
        avg_factor (float | None): divisor of a 'mean' reduction; by default
            the number of pixels (``avg_non_ignore=False``), of labelled
            pixels (``avg_non_ignore=True``), or, with ``class_weight``, the
            summed class weights of the labelled pixels.

    With ``class_weight``, mmseg computes the divisor by indexing the class
    weights with every label, which fails when an ignored label is present
    (open-mmlab/mmsegmentation#3734). Here ignored pixels add 0 to the
    divisor in both ``avg_non_ignore`` modes, which agrees with mmseg whenever
    it runs and with PyTorch's weighted mean.
    """
    valid = label != ignore_index
    pixel_weight = None
    if class_weight is None:
        loss = softmax_nll(pred, label, ignore_index)                      # (N, ...), 0 where ignored
    else:
        safe = jt.where(valid, label, jt.zeros_like(label))                # (N, ...)
        classes = jt.index(pred.shape, 1)                                  # class id along dim 1
        onehot = classes == safe.unsqueeze(1)                              # (N, C, ...)
        nll = -(_log_softmax(pred, 1) * onehot).sum(1)                     # (N, ...)
        pixel_weight = (class_weight.reshape([1, -1] + [1] * (pred.ndim - 2)) * onehot).sum(1)
        loss = jt.where(valid, nll * pixel_weight, jt.zeros_like(nll))
    if avg_factor is None and reduction == 'mean':
        if class_weight is None:
            avg_factor = valid.int32().sum().float32().detach() if avg_non_ignore else label.numel()
        else:
            avg_factor = jt.where(valid, pixel_weight, jt.zeros_like(pixel_weight)).sum().detach()
    if weight is not None:
        weight = weight.float32()
    return weight_reduce_loss(loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


def binary_cross_entropy(pred, label, weight=None, reduction='mean', avg_factor=None, class_weight=None,
                         ignore_index=-100, avg_non_ignore=False):
    """Sigmoid cross-entropy (mmseg's ``binary_cross_entropy``), without class weights.

    ``pred`` (N, 1, ...) with binary labels (N, ...), or (N, C, ...) with
    class labels (N, ...) expanded to one-hot. Labels < 0 or equal to
    ``ignore_index`` get weight 0.
    """
    if class_weight is not None:
        raise NotImplementedError('binary_cross_entropy: class_weight (pos_weight) is not supported')
    if pred.shape[1] == 1 and pred.ndim == label.ndim + 1:
        pred = pred.squeeze(1)
    valid = jt.logical_and(label >= 0, label != ignore_index)
    if pred.ndim != label.ndim:
        classes = jt.index(pred.shape, 1)
        target = (classes == label.unsqueeze(1)).float32()                 # one-hot; ignored rows all 0
        valid_mask = valid.unsqueeze(1).broadcast(pred.shape).float32()
        weight = valid_mask if weight is None else weight.unsqueeze(1) * valid_mask
    else:
        target = label.float32()
        valid_mask = valid.float32()
        weight = valid_mask if weight is None else weight * valid_mask
    if reduction == 'mean' and avg_factor is None and avg_non_ignore:
        avg_factor = valid_mask.sum().detach()
    max_val = (-pred).maximum(0)
    loss = (1 - target) * pred + max_val + ((-max_val).exp() + (-pred - max_val).exp()).log()
    return weight_reduce_loss(loss, weight, reduction=reduction, avg_factor=avg_factor)


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy loss (softmax, or sigmoid with ``use_sigmoid``).

    Args:
        use_sigmoid (bool): sigmoid cross-entropy instead of softmax.
        use_mask (bool): mmseg's mask cross-entropy (not supported).
        reduction (str): 'none', 'mean' or 'sum'.
        class_weight (list[float] | str | None): per-class weights, or a
            ``.npy``/``.json`` file holding them.
        loss_weight (float): factor on the loss.
        loss_name (str): key of the loss in the loss dict; it must contain
            'loss' for the runner to optimise it.
        avg_non_ignore (bool): average over labelled pixels only.
    """

    def __init__(self, use_sigmoid=False, use_mask=False, reduction='mean', class_weight=None, loss_weight=1.0,
                 loss_name='loss_ce', avg_non_ignore=False):
        super().__init__()
        if use_mask:
            raise NotImplementedError('CrossEntropyLoss: use_mask (mask cross-entropy) is not supported')
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.class_weight = get_class_weight(class_weight)
        self.avg_non_ignore = avg_non_ignore
        if not avg_non_ignore and reduction == 'mean':
            warnings.warn('CrossEntropyLoss averages over all pixels, ignored ones included '
                          '(avg_non_ignore=False, as mmseg); set avg_non_ignore=True to average over '
                          'labelled pixels only.', stacklevel=2)
        self.cls_criterion = binary_cross_entropy if use_sigmoid else cross_entropy
        self._loss_name = loss_name

    @property
    def loss_name(self):
        return self._loss_name

    def execute(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None,
                ignore_index=-100, **kwargs):
        """cls_score (N, C, ...), label (N, ...) -> loss (shape [1], or (N, ...) for 'none')."""
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError(f'reduction_override must be None/none/mean/sum, got {reduction_override!r}')
        reduction = reduction_override or self.reduction
        class_weight = None if self.class_weight is None else jt.array(self.class_weight).float32()
        loss = self.cls_criterion(cls_score, label, weight, class_weight=class_weight, reduction=reduction,
                                  avg_factor=avg_factor, avg_non_ignore=self.avg_non_ignore,
                                  ignore_index=ignore_index, **kwargs)
        return self.loss_weight * loss
