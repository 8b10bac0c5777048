"""Chain transforms built from config dicts."""
from jseg.registry import TRANSFORMS

__all__ = ['Compose']


class Compose:
    """Apply transforms in order; stop and return ``None`` as soon as one returns ``None``.

    Args:
        transforms (list[dict | callable]): config dicts (built from
            ``TRANSFORMS``) or callables taking and returning a results dict.
    """

    def __init__(self, transforms):
        if transforms is None:
            transforms = []
        if isinstance(transforms, dict) or callable(transforms):
            transforms = [transforms]
        self.transforms = []
        for transform in transforms:
            if isinstance(transform, dict):
                transform = TRANSFORMS.build(transform)
            elif not callable(transform):
                raise TypeError(f'a transform must be a config dict or a callable, got {transform!r}')
            self.transforms.append(transform)

    def __call__(self, results):
        for transform in self.transforms:
            results = transform(results)
            if results is None:
                return None
        return results

    def __len__(self):
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)

    def __repr__(self):
        body = ''.join(f'\n    {t!r},' for t in self.transforms)
        return f'{type(self).__name__}([{body}\n])'
