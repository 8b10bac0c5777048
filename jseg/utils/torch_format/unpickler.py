"""The restricted unpickler: resolves an allow-list of globals, everything else becomes inert.

``torch.load`` without ``weights_only`` and Jittor's ``jt.load`` unpickle
arbitrary globals, so a crafted file runs code (``__reduce__`` returning
``os.system``, ``builtins.eval``, ...). Here ``find_class`` resolves only:

* ``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter`` and
  ``_rebuild_parameter_with_state`` -> :class:`~.tensors.TensorBuilder` methods;
* the storage classes of :data:`~.tensors.STORAGE_TYPES` (``torch.FloatStorage``
  ..., also under ``torch.cuda``);
* ``collections.OrderedDict``.

Nothing else is imported or called: every other global (``os.system``,
``builtins.eval``, ``numpy.*``, ``mmengine.*``, other ``torch.*``) becomes a
placeholder class; calling or instantiating it yields a :class:`RefusedObject`
that discards its arguments and state. Checkpoint metadata (mmengine message
hubs, numpy scalars) thus loads as refused objects, and a caller rejects them
where it needs weights (:func:`find_refused`).
"""
import _compat_pickle
import io
import pickle
from collections import OrderedDict

from .tensors import STORAGE_TYPES

__all__ = ['RefusedObject', 'RestrictedUnpickler', 'allowed_globals', 'find_refused', 'is_refused']

_REBUILDERS = {
    'torch._utils._rebuild_tensor_v2': 'tensor',
    'torch._utils._rebuild_parameter': 'parameter',
    'torch._utils._rebuild_parameter_with_state': 'parameter',
}


def allowed_globals():
    """The ``'module.name'`` globals the unpickler resolves."""
    names = {'collections.OrderedDict', *_REBUILDERS}
    for name in STORAGE_TYPES:
        names.update((f'torch.{name}', f'torch.cuda.{name}'))
    return frozenset(names)


def _immutable_setattr(self, name, value):
    raise AttributeError(f'{type(self).__name__} objects are read-only')


class _RefusedMeta(type):
    __setattr__ = _immutable_setattr

    def __repr__(cls):
        return f'<refused global {cls.refused_name}>'


class RefusedObject(metaclass=_RefusedMeta):
    """Stand-in for an object built by a refused global; ``refused_name`` is the global's name.

    Arguments, state and items given to it by the pickle are discarded.
    """
    __slots__ = ()
    refused_name = '?'

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return type(self)()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __repr__(self):
        return f'<refused object {self.refused_name}>'


def _placeholder_class(name):
    return _RefusedMeta('RefusedObject', (RefusedObject,), {'__slots__': (), 'refused_name': name,
                                                             '__module__': __name__})


def is_refused(obj):
    """Whether ``obj`` stands for something refused: a :class:`RefusedObject` or a placeholder class."""
    return isinstance(obj, RefusedObject) or (isinstance(obj, type) and issubclass(obj, RefusedObject))


def find_refused(obj, path=''):
    """``[(path, global name), ...]`` for every refused object inside ``obj`` (dicts, lists, tuples).

    ``path`` is a dotted key path (``'meta.hub[2]'``). The walk is iterative: no recursion limit.
    """
    found, seen = [], set()
    stack = [(path, obj)]
    while stack:
        where, item = stack.pop()
        if is_refused(item):
            found.append((where, item.refused_name))
            continue
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            children = []
            for key, value in item.items():
                name = f'{where}.{key}' if where else str(key)
                children += [(f'{name}<key>', key), (name, value)]
        else:
            children = [(f'{where}[{i}]', v) for i, v in enumerate(item)]
        stack.extend(reversed(children))
    return found


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data`` with the allow-list above; ``builder`` rebuilds storages and tensors."""

    def __init__(self, data, builder):
        super().__init__(io.BytesIO(data), encoding='utf-8')
        self._builder = builder
        self.refused = set()
        self._placeholders = {}
        self._globals = {'collections.OrderedDict': OrderedDict}
        self._globals.update({name: getattr(builder, method) for name, method in _REBUILDERS.items()})
        for name, storage_type in STORAGE_TYPES.items():
            self._globals[f'torch.{name}'] = self._globals[f'torch.cuda.{name}'] = storage_type

    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol 2 writes Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f'{module}.{name}'
        allowed = self._globals.get(full)
        if allowed is not None:
            return allowed
        self.refused.add(full)
        if full not in self._placeholders:
            self._placeholders[full] = _placeholder_class(full)
        return self._placeholders[full]

    def persistent_load(self, pid):
        return self._builder.storage(pid)
