"""Registries: map the ``type=`` strings of a config to classes and functions.

Every configurable part of jseg is registered under a name in one of the
registries below and built from a config dict::

    @MODELS.register_module()
    class OffSegHead(BaseDecodeHead):
        ...

    head = MODELS.build(dict(type='OffSegHead', in_channels=[32, 48, 120, 224], ...))

Registering a name twice is an error; building an unknown name raises a
``KeyError`` that lists the closest registered names.
"""
import copy
import difflib
import inspect

__all__ = ['Registry', 'RegistryError', 'BuildError', 'MODELS', 'DATASETS', 'TRANSFORMS', 'OPTIMIZERS',
           'SCHEDULERS', 'HOOKS', 'METRICS', 'build_from_cfg']


class RegistryError(KeyError):
    """An unknown or duplicate registered name; the message lists close matches."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


class BuildError(TypeError):
    """A config dict whose arguments do not fit the constructor of its ``type``."""


class Registry:
    """A named table of buildable objects.

    Args:
        name (str): what the registry holds, used in error messages ("model").
    """

    def __init__(self, name):
        self.name = name
        self._table = {}

    def __contains__(self, key):
        return key in self._table

    def __len__(self):
        return len(self._table)

    def __repr__(self):
        return f'Registry({self.name!r}, {sorted(self._table)})'

    def keys(self):
        return sorted(self._table)

    def register_module(self, name=None, module=None, force=False):
        """Register ``module`` under ``name`` (default: its ``__name__``).

        Use as a decorator (``@REG.register_module()``) or call it directly
        (``REG.register_module('SGD', module=jt.optim.SGD)``).
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f'{self.name} registry: name must be a string, got {name!r}')

        def _register(obj):
            key = name or obj.__name__
            if not force and key in self._table and self._table[key] is not obj:
                raise RegistryError(f'{key!r} is already registered in the {self.name} registry '
                               f'(by {self._table[key].__module__})')
            self._table[key] = obj
            return obj

        if module is not None:
            return _register(module)
        return _register

    def get(self, key):
        """The object registered under ``key``; a ``KeyError`` with hints if absent."""
        if key in self._table:
            return self._table[key]
        close = difflib.get_close_matches(key, self._table.keys(), n=3, cutoff=0.5)
        hint = f'; did you mean {", ".join(repr(c) for c in close)}?' if close else ''
        raise RegistryError(f'unknown {self.name} type {key!r}{hint} '
                       f'({len(self._table)} registered: see jseg.registry.'
                       f'{_REGISTRY_VARS.get(self.name, self.name.upper())}.keys())')

    def build(self, cfg, **default_args):
        """Build an object from ``cfg`` (a dict with ``type``); see :func:`build_from_cfg`."""
        return build_from_cfg(cfg, self, **default_args)


def build_from_cfg(cfg, registry, **default_args):
    """Instantiate ``cfg['type']`` from ``registry`` with the remaining keys as arguments.

    ``type`` may also be a class or function itself. ``default_args`` fill in
    arguments the config does not give. An argument the constructor does not
    accept is reported with the config type's name.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise BuildError(f'a {registry.name} config must be a dict with a "type" key, got {cfg!r}')
    args = copy.deepcopy(dict(cfg))
    obj_type = args.pop('type')
    for key, value in default_args.items():
        args.setdefault(key, value)
    obj_cls = registry.get(obj_type) if isinstance(obj_type, str) else obj_type
    if not callable(obj_cls):
        raise BuildError(f'{registry.name} type must be a name or a callable, got {obj_type!r}')
    try:
        return obj_cls(**args)
    except TypeError as err:
        try:
            inspect.signature(obj_cls).bind(**args)
        except TypeError as bind_err:
            raise BuildError(f'{getattr(obj_cls, "__name__", obj_type)}: {bind_err}') from err
        except ValueError:
            pass
        raise


MODELS = Registry('model')
DATASETS = Registry('dataset')
TRANSFORMS = Registry('transform')
OPTIMIZERS = Registry('optimizer')
SCHEDULERS = Registry('scheduler')
HOOKS = Registry('hook')
METRICS = Registry('metric')

_REGISTRY_VARS = {'model': 'MODELS', 'dataset': 'DATASETS', 'transform': 'TRANSFORMS',
                  'optimizer': 'OPTIMIZERS', 'scheduler': 'SCHEDULERS', 'hook': 'HOOKS',
                  'metric': 'METRICS'}
