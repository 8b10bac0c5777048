"""A stand-in ``mmcv.ops`` for running official OpenMMLab-based code with mmcv-lite (no compiled operators).

Used by the ``tools/dev`` scripts that import official code at run time (they run with PyTorch,
never inside jseg). mmcv-lite ships mmcv's Python sources but no ``mmcv._ext``, so importing
``mmcv.ops`` fails. :func:`install_mmcv_ops_standin` puts an empty ``mmcv.ops`` package in its place
whose submodules still load from mmcv's own files (on import, or now for ``sources``) unless a module
is given for them (``modules``, e.g. a plain-PyTorch CARAFE; their other names become placeholders);
``mmcv._ext`` becomes a module whose every function raises when called, and any other name imported
from ``mmcv.ops`` is a placeholder class that raises when used. Nothing of mmcv is copied.
"""
import importlib
import importlib.machinery
import os
import sys
import types


class Unavailable:
    """What any ``mmcv.ops`` name not provided by the stand-in resolves to: raises when used."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError('mmcv.ops stand-in: this operator is not available')


def _placeholder_attr(name):
    if name.startswith('__'):
        raise AttributeError(name)
    return Unavailable


def install_mmcv_ops_standin(sources=(), modules=None):
    """Install the stand-in ``mmcv.ops`` (see the module doc) and return it.

    Args:
        sources (Sequence[str]): ``mmcv.ops`` submodules to import from mmcv's Python sources now
            (their CPU paths must be pure PyTorch, e.g. ``'point_sample'``).
        modules (dict[str, module] | None): modules installed as ``mmcv.ops.<name>``.
    """
    import mmcv
    ext = types.ModuleType('mmcv._ext')

    def compiled_op(*args, **kwargs):
        raise RuntimeError('a compiled mmcv operator was called (mmcv-lite has none)')

    def ext_attr(name):
        if name.startswith('__'):
            raise AttributeError(name)
        return compiled_op
    ext.__getattr__ = ext_attr
    ext.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)   # no loader: not mmcv-full
    sys.modules['mmcv._ext'] = ext

    ops = types.ModuleType('mmcv.ops')
    ops.__path__ = [os.path.join(os.path.dirname(mmcv.__file__), 'ops')]
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    for name, module in (modules or {}).items():
        if not hasattr(module, '__getattr__'):
            module.__getattr__ = _placeholder_attr
        sys.modules[f'mmcv.ops.{name}'] = module
        setattr(ops, name, module)
    for name in sources:
        importlib.import_module(f'mmcv.ops.{name}')

    ops.__getattr__ = _placeholder_attr
    return ops
