"""Test-time augmentation: one results dict becomes a list of views."""
import copy
import itertools

from jseg.registry import TRANSFORMS

from .compose import Compose

__all__ = ['TestTimeAug']


@TRANSFORMS.register_module()
class TestTimeAug:
    """Run every combination of the alternative transforms in ``transforms``.

    ``transforms`` is a list of stages; each stage lists alternatives. Every
    element of the product of the stages (first stage outermost, as
    ``itertools.product`` orders it) is applied to a deep copy of the input.
    With the usual ``[[Resize(r) for r in ratios], [no flip, flip],
    [LoadAnnotations], [PackSegInputs]]`` the views come in the order
    ``(r0, no flip), (r0, flip), (r1, no flip), ...``.

    Returns:
        list: one packed sample per combination (a list of dicts, which the
        loader collates into ``{'views': [...]}``).
    """

    def __init__(self, transforms):
        stages = []
        for stage in transforms:
            if isinstance(stage, dict) or callable(stage):
                stage = [stage]
            stages.append([TRANSFORMS.build(t) if isinstance(t, dict) else t for t in stage])
        if not stages or not all(stages):
            raise ValueError('TestTimeAug needs a non-empty list of non-empty stages')
        self.subroutines = [Compose(list(chain)) for chain in itertools.product(*stages)]

    def __call__(self, results):
        views = []
        for subroutine in self.subroutines:
            view = subroutine(copy.deepcopy(results))
            if view is None:
                raise ValueError(f'a TestTimeAug branch returned None: {subroutine!r}')
            views.append(view)
        return views

    def __repr__(self):
        body = ''.join(f'\n  {s!r}' for s in self.subroutines)
        return f'{type(self).__name__}(transforms={body})'
