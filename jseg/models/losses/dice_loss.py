"""Dice loss with mmdet's semantics (``mmdet.models.losses.DiceLoss``, used by Mask2Former).

Not mmseg's ``DiceLoss`` (smooth/exponent form over classes): this one compares
n predicted masks with n target masks, each flattened.
"""
from jittor import nn

from jseg.registry import MODELS

from .utils import weight_reduce_loss

__all__ = ['DiceLoss', 'dice_loss']


def dice_loss(pred, target, weight=None, eps=1e-3, reduction='mean', naive_dice=False, avg_factor=None):
    """Per-mask dice loss, then weighted and reduced.

    Args:
        pred (jt.Var): (n, ...) probabilities (already activated).
        target (jt.Var): (n, ...) binary or soft targets, same size.
        weight (jt.Var | None): (n,) weight of each mask.
        eps (float): smoothing term.
        reduction (str): 'none', 'mean' or 'sum'.
        naive_dice (bool): ``1 - (2 p.t + eps) / (sum p + sum t + eps)``;
            otherwise the V-Net form ``1 - 2 p.t / (sum p^2 + eps + sum t^2 + eps)``.
        avg_factor (float | None): divisor of a 'mean' reduction.

    Returns:
        jt.Var: the reduced loss, or (n,) for 'none'.
    """
    n = pred.shape[0]
    if target.shape[0] != n or target.numel() != pred.numel():
        raise ValueError(f'dice_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in size')
    pred = pred.reshape(n, -1)
    target = target.reshape(n, -1).float32()
    inter = (pred * target).sum(1)                                          # (n,)
    if naive_dice:
        loss = 1 - (2 * inter + eps) / (pred.sum(1) + target.sum(1) + eps)
    else:
        loss = 1 - (2 * inter) / (((pred * pred).sum(1) + eps) + ((target * target).sum(1) + eps))
    if weight is not None and tuple(weight.shape) != (n,):
        raise ValueError(f'dice_loss: weight must be ({n},), got {tuple(weight.shape)}')
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class DiceLoss(nn.Module):
    """mmdet's DiceLoss.

    Args:
        use_sigmoid (bool): activate with a sigmoid (the only activation).
        activate (bool): apply the activation to ``pred`` (False: ``pred``
            holds probabilities already).
        reduction (str): 'none', 'mean' or 'sum'.
        naive_dice (bool): first-power denominator (see :func:`dice_loss`).
        loss_weight (float): factor on the loss.
        eps (float): smoothing term (Mask2Former: 1.0).
        loss_name (str): key of the loss in a loss dict.
    """

    def __init__(self, use_sigmoid=True, activate=True, reduction='mean', naive_dice=False, loss_weight=1.0,
                 eps=1e-3, loss_name='loss_dice'):
        super().__init__()
        if activate and not use_sigmoid:
            raise NotImplementedError('DiceLoss: only the sigmoid activation is supported (as mmdet)')
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"DiceLoss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        self.use_sigmoid = use_sigmoid
        self.activate = activate
        self.reduction = reduction
        self.naive_dice = naive_dice
        self.loss_weight = loss_weight
        self.eps = eps
        self._loss_name = loss_name

    @property
    def loss_name(self):
        return self._loss_name

    def execute(self, pred, target, weight=None, reduction_override=None, avg_factor=None):
        """pred (n, ...) logits (or probabilities with ``activate=False``), target (n, ...) -> loss."""
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError(f'reduction_override must be None/none/mean/sum, got {reduction_override!r}')
        reduction = reduction_override or self.reduction
        if self.activate:
            pred = pred.sigmoid()
        return self.loss_weight * dice_loss(pred, target, weight, eps=self.eps, reduction=reduction,
                                            naive_dice=self.naive_dice, avg_factor=avg_factor)
