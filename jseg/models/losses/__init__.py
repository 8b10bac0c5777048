"""Losses, registered in ``MODELS``, and the accuracy metric of decode heads."""
from .accuracy import Accuracy, accuracy
from .cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy
from .dice_loss import DiceLoss, dice_loss
from .utils import get_class_weight, reduce_loss, weight_reduce_loss

__all__ = ['Accuracy', 'CrossEntropyLoss', 'DiceLoss', 'accuracy', 'binary_cross_entropy', 'cross_entropy', 'dice_loss',
           'get_class_weight', 'reduce_loss', 'weight_reduce_loss']
