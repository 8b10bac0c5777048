"""Losses, registered in ``MODELS``, and the accuracy metric of decode heads."""
from .accuracy import Accuracy, accuracy
from .cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy
from .utils import get_class_weight, reduce_loss, weight_reduce_loss

__all__ = ['Accuracy', 'CrossEntropyLoss', 'accuracy', 'binary_cross_entropy', 'cross_entropy',
           'get_class_weight', 'reduce_loss', 'weight_reduce_loss']
