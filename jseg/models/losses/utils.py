"""Loss reduction helpers with mmseg's semantics (``weight_reduce_loss``)."""
import numpy as np

__all__ = ['FLOAT32_EPS', 'get_class_weight', 'reduce_loss', 'weight_reduce_loss']

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def get_class_weight(class_weight):
    """``class_weight`` as a list of floats: a sequence, or a ``.npy``/``.json`` file name, or None."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight.endswith('.npy'):
            class_weight = np.load(class_weight)
        elif class_weight.endswith('.json'):
            import json
            with open(class_weight) as f:
                class_weight = json.load(f)
        else:
            raise ValueError(f'class_weight file must be .npy or .json, got {class_weight!r}')
    return [float(w) for w in np.asarray(class_weight).reshape(-1)]


def reduce_loss(loss, reduction):
    """Reduce an element-wise loss: 'none', 'mean' or 'sum'."""
    if reduction == 'none':
        return loss
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def weight_reduce_loss(loss, weight=None, reduction='mean', avg_factor=None):
    """Apply element-wise ``weight``, then reduce.

    With ``avg_factor`` and reduction 'mean' the result is
    ``sum(loss) / (avg_factor + eps)`` (eps = float32 epsilon, so that an
    all-ignored batch gives 0 rather than a division by zero).
    """
    if weight is not None:
        if weight.ndim != loss.ndim:
            raise ValueError(f'weight has {weight.ndim} dims but the loss has {loss.ndim}')
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == 'mean':
        return loss.sum() / (avg_factor + FLOAT32_EPS)
    if reduction != 'none':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss
