"""The final pixel features of a decode head: the input of its classifier.

Ideal class representation mining (:mod:`jseg.analysis.ideal_repr`) needs the
features E that the last classification step maps to class scores:

=============================== ===================== ==========================================
head                            classifier            E (its input)
=============================== ===================== ==========================================
``OffSegHead``                  ``offset_learning``   ``align`` output (1/4 resolution)
``SegformerHeadOffsetLearning`` ``offset_learning``   max-pooled ``fuse`` output (1/8)
``LightHamHeadOffsetLearning``  ``offset_learning``   ``decode`` output (1/8)
``SegformerHead``               ``conv_seg``          ``fuse`` output (1/4)
``LightHamHead``                ``conv_seg``          ``decode`` output (1/8)
=============================== ===================== ==========================================

For offset-learning heads E is taken before the learned offsets are added,
i.e. the features a fixed per-pixel classifier would see. The features are
captured at the classifier's input while the head runs (the classifier itself
is not computed), so every head's own forward pass stays the single source of
truth. Call it on a head in eval mode: in training mode the baseline heads'
Dropout2d would be applied.
"""
from jseg.config import ConfigError
from jseg.models.decode_heads import (LightHamHead, LightHamHeadOffsetLearning, OffSegHead, SegformerHead,
                                      SegformerHeadOffsetLearning)

__all__ = ['CLASSIFIERS', 'UnsupportedHeadError', 'classifier_of', 'final_features']

# head class -> attribute name of the module whose input is E (exact types: a subclass may change execute)
CLASSIFIERS = {
    OffSegHead: 'offset_learning',
    SegformerHeadOffsetLearning: 'offset_learning',
    LightHamHeadOffsetLearning: 'offset_learning',
    SegformerHead: 'conv_seg',
    LightHamHead: 'conv_seg',
}


class UnsupportedHeadError(ConfigError):
    """The config's decode head is one whose final features :func:`final_features` cannot take."""


class _Captured(Exception):
    """Stops the head's forward pass once the classifier input is known."""


def classifier_of(head):
    """(name, module) of the final classifier of ``head``; UnsupportedHeadError for unknown heads."""
    name = CLASSIFIERS.get(type(head))
    if name is None:
        known = ', '.join(sorted(cls.__name__ for cls in CLASSIFIERS))
        raise UnsupportedHeadError(f'ideal representation analysis does not know the final features of '
                                   f'{type(head).__name__}; supported decode heads: {known}')
    return name, getattr(head, name)


def final_features(head, inputs):
    """The features E that ``head``'s final classifier receives, (B, C, h, w).

    Args:
        head: a decode head listed in :data:`CLASSIFIERS`, in eval mode.
        inputs (list[jt.Var]): the backbone (+ neck) features, as the head takes them.
    """
    _, classifier = classifier_of(head)
    captured = []

    def capture(x, *args, **kwargs):
        captured.append(x)
        raise _Captured

    had_own = 'execute' in classifier.__dict__
    previous = classifier.__dict__.get('execute')
    classifier.execute = capture  # Module.__call__ runs self.execute: shadow it for this call only
    try:
        head(inputs)
    except _Captured:
        pass
    finally:
        if had_own:
            classifier.execute = previous
        else:
            del classifier.execute
    if not captured:
        raise UnsupportedHeadError(f'{type(head).__name__} finished without calling its classifier')
    return captured[0]
