"""Read PyTorch checkpoint files (``torch.save`` output) safely, without PyTorch.

:func:`load_torch_file` returns the object tree stored in a ``.pth``/``.pt``
file with every tensor as a C-contiguous NumPy array. It needs only NumPy and
the standard library, never imports ``torch`` and never imports or calls
anything named by the file beyond the short list of harmless functions below.

File formats
============

**Zip format** (``torch.save`` default since PyTorch 1.6). An uncompressed zip
archive whose members all live in one top-level folder, the *archive name*
(any name; torch uses the file's stem, or ``archive``)::

    <name>/data.pkl                the object tree, pickle protocol 2
    <name>/byteorder               "little" or "big" (absent: little)
    <name>/data/<key>              raw bytes of storage <key>
    <name>/version, .format_version, .storage_alignment, .data/serialization_id

``data.pkl`` refers to storages through *persistent ids*, tuples
``('storage', storage_type, key, location, numel)``: ``storage_type`` is a
global such as ``torch.FloatStorage`` (``numel`` counts its elements) or
``torch.storage.UntypedStorage`` (``numel`` counts bytes; torch >= 2 writes it
for dtypes without a legacy storage class, e.g. ``uint16``). ``TypedStorage``
itself does not appear: torch writes a typed storage under the legacy class
name of its dtype (checked with torch 2.13). ``torch._UntypedStorage``, the
untyped storage's name in torch 1.12, is accepted as an alias. Tensors are
rebuilt by ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`` or, over an untyped
storage, ``_rebuild_tensor_v3(..., backward_hooks, dtype[, metadata])`` with
``dtype`` a global such as ``torch.uint16``. Parameters wrap a tensor in
``torch._utils._rebuild_parameter(data, requires_grad, hooks)`` (or
``_rebuild_parameter_with_state``); tensors with Python attributes go through
``torch._tensor._rebuild_from_type_v2(func, torch.Tensor, args, state)``.
Several tensors may view one storage with different offsets and strides.

**Legacy format** (``_use_new_zipfile_serialization=False``, PyTorch < 1.6).
One stream of five pickles followed by raw data: the magic number
``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, a dict of system
information, the object tree (persistent ids ``('storage', storage_type, key,
location, numel, view_metadata)``), the sorted list of storage keys, and then,
for each key in that order, the element count as a little-endian int64
followed by the storage's bytes (always little-endian in this format).

Threat model
============

A checkpoint is untrusted input: ``torch.load`` without ``weights_only`` and
Jittor's ``jt.load`` unpickle arbitrary globals, so a crafted file runs code
(``__reduce__`` returning ``os.system``, ``builtins.eval``, ...). Here:

* The pickle is interpreted by a restricted ``pickle.Unpickler`` whose
  ``find_class`` resolves only an allow-list to *this module's own*
  implementations: the torch rebuild functions above, storage classes
  (``torch.<Name>Storage``, also under ``torch.cuda``), ``torch.<dtype>``,
  ``torch.Size`` (-> tuple), ``torch.device`` (-> str), the ``torch.Tensor``
  and ``torch.nn.parameter.Parameter`` type markers,
  ``collections.OrderedDict``, and argument-checked versions of what pickle
  protocol 2 needs for plain data (``builtins.set``/``frozenset``/``complex``/
  ``bytes``/``bytearray`` and ``_codecs.encode``; Python 2 module names are
  mapped first). Nothing else is imported or called: every other global
  (``os.system``, ``builtins.eval``/``exec``/``getattr``/``__import__``,
  ``subprocess.*``, ``numpy.*``, ``mmengine.*``, other ``torch.*`` ...) becomes
  an inert placeholder class; calling or instantiating it yields a
  :class:`RefusedObject` that discards its arguments and state. The name of
  every refused global is recorded (``return_refused=True``).
* Before unpickling, the opcode stream is checked with :mod:`pickletools`:
  no extension-registry or out-of-band-buffer opcodes, memo indices in range,
  every length backed by data (so no huge allocations from forged headers).
* Everything read from the file is validated: archive members and their
  sizes, persistent ids, dtype and storage names, sizes, strides and offsets
  against the storage (an out-of-range view raises :class:`TorchPickleError`
  instead of reading past a buffer), the legacy element counts, and the total
  number of bytes materialised (``MAX_OUTPUT_FACTOR``, ``MAX_OUTPUT_SLACK``:
  expanded or repeated views of one storage cannot inflate without bound).
  Objects this module hands to the unpickler are immutable, so a crafted
  ``BUILD`` opcode cannot alter them.

Memory: each storage is read once, when the first tensor viewing it is
rebuilt. A tensor that covers its whole storage contiguously becomes an array
over the storage buffer itself (no copy); any other view is taken with
``np.lib.stride_tricks.as_strided`` and copied to a C-contiguous array, so
returned arrays never share memory. Storage buffers not handed out are freed
when loading ends. In the legacy format the data follows the object pickle, so
that pickle is interpreted twice: first without data, to learn the storages'
types and sizes and to validate every tensor, then to build the arrays.

Results
=======

Tensors and parameters become ``np.ndarray`` (C-contiguous, the tensor's
shape and values). ``bfloat16`` becomes ``float32`` (exact: bfloat16 is the
upper half of a float32); ``bool`` becomes ``np.bool_``; conjugate/negative
views (tensor metadata) are resolved; ``requires_grad``, backward hooks and
Python attributes of tensors are dropped. Supported dtypes: float16/32/64,
bfloat16, complex64/128, int8/16/32/64, uint8/16/32/64, bool; float8 and
complex32 tensors raise :class:`TorchPickleError`; quantized and sparse
tensors come back refused (their rebuild functions are not allowed). Containers come back as
``dict``/``OrderedDict``/``list``/``tuple``/``set``, scalars and strings as
Python objects, ``torch.<dtype>`` values as :class:`TorchDtype`,
``torch.Size`` as ``tuple``, ``torch.device`` as ``str`` and a bare storage
object as a :class:`TorchStorage` (metadata only). Refused objects appear as
:class:`RefusedObject` instances (or, for a bare refused global that was never
called, the placeholder class); :func:`is_refused` recognises both and
:func:`find_refused` lists them inside any part of the tree, so a caller can
reject them in the weights and ignore them elsewhere::

    tree, refused = load_torch_file('iter_160000.pth', return_refused=True)
    weights = tree['state_dict']
    if find_refused(weights):
        raise ValueError(f'not tensors: {find_refused(weights)}')
    if refused:
        print('ignored non-weight objects:', ', '.join(refused))

(:func:`jseg.runner.checkpoint.checkpoint_state_dict` does exactly this.)

Not supported: TorchScript archives (``torch.jit.save``), the pre-0.4 tar
format, ``mmap``, sparse/quantized/nested tensors, tensor subclasses other
than ``Parameter`` (they come back refused).
"""
import _compat_pickle
import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = [
    'TorchPickleError', 'load_torch_file', 'RefusedObject', 'is_refused', 'find_refused', 'TorchDtype',
    'TorchStorage', 'MAX_OUTPUT_FACTOR', 'MAX_OUTPUT_SLACK'
]

#: Arrays built from one file may total at most ``MAX_OUTPUT_FACTOR`` times the
#: file's storage bytes plus ``MAX_OUTPUT_SLACK`` bytes (views repeating or
#: expanding (stride 0) a storage are the only way to exceed 1x).
MAX_OUTPUT_FACTOR = 4
MAX_OUTPUT_SLACK = 256 << 20

_MAX_NDIM = 64
_MAX_KEY_LEN = 1024
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 24


class TorchPickleError(ValueError):
    """A file that cannot be read as a PyTorch checkpoint; the message names the file and the problem."""


def _immutable_setattr(self, name, value):
    raise AttributeError(f'{type(self).__name__} objects are read-only')


# ---------------------------------------------------------------------------------------------
# dtypes and storage types


class TorchDtype:
    """A ``torch.<name>`` dtype found in a file (as a value or as a tensor's dtype).

    Attributes:
        name (str): torch's name, e.g. ``'float32'``.
        itemsize (int): bytes per element in the file.
        numpy (np.dtype | None): dtype of the arrays this reader returns
            (``float32`` for ``bfloat16``), ``None`` if unsupported.
    """
    __slots__ = ('name', 'itemsize', 'numpy', '_file')
    __setattr__ = _immutable_setattr

    def __init__(self, name, itemsize, file_dtype=None, result_dtype=None):
        object.__setattr__(self, 'name', name)
        object.__setattr__(self, 'itemsize', itemsize)
        object.__setattr__(self, '_file', None if file_dtype is None else np.dtype(file_dtype))
        result = result_dtype or file_dtype
        object.__setattr__(self, 'numpy', None if result is None else np.dtype(result))

    def __repr__(self):
        return f'torch.{self.name}'

    def __reduce__(self):
        return _dtype_by_name, (self.name,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _dtype_by_name(name):
    return _DTYPES[name]


_DTYPES = {d.name: d for d in (
    TorchDtype('float32', 4, '<f4'),
    TorchDtype('float64', 8, '<f8'),
    TorchDtype('float16', 2, '<f2'),
    TorchDtype('bfloat16', 2, '<u2', np.float32),
    TorchDtype('complex64', 8, '<c8'),
    TorchDtype('complex128', 16, '<c16'),
    TorchDtype('int8', 1, 'i1'),
    TorchDtype('int16', 2, '<i2'),
    TorchDtype('int32', 4, '<i4'),
    TorchDtype('int64', 8, '<i8'),
    TorchDtype('uint8', 1, 'u1'),
    TorchDtype('uint16', 2, '<u2'),
    TorchDtype('uint32', 4, '<u4'),
    TorchDtype('uint64', 8, '<u8'),
    TorchDtype('bool', 1, 'u1', np.bool_),
    # known to torch, not readable here: values only (an error if a tensor uses one)
    TorchDtype('complex32', 4),
    TorchDtype('qint8', 1),
    TorchDtype('quint8', 1),
    TorchDtype('qint32', 4),
    TorchDtype('quint4x2', 1),
    TorchDtype('quint2x4', 1),
    TorchDtype('float8_e4m3fn', 1),
    TorchDtype('float8_e5m2', 1),
    TorchDtype('float8_e4m3fnuz', 1),
    TorchDtype('float8_e5m2fnuz', 1),
    TorchDtype('float8_e8m0fnu', 1),
)}


class _StorageType:
    """``torch.FloatStorage`` & co. as named in persistent ids."""
    __slots__ = ('name', 'dtype', 'untyped')
    __setattr__ = _immutable_setattr

    def __init__(self, name, dtype, untyped=False):
        object.__setattr__(self, 'name', name)
        object.__setattr__(self, 'dtype', _DTYPES[dtype])
        object.__setattr__(self, 'untyped', untyped)

    def __repr__(self):
        return f'torch.{self.name}'

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


_STORAGE_TYPES = {t.name: t for t in (
    _StorageType('FloatStorage', 'float32'),
    _StorageType('DoubleStorage', 'float64'),
    _StorageType('HalfStorage', 'float16'),
    _StorageType('BFloat16Storage', 'bfloat16'),
    _StorageType('ComplexFloatStorage', 'complex64'),
    _StorageType('ComplexDoubleStorage', 'complex128'),
    _StorageType('LongStorage', 'int64'),
    _StorageType('IntStorage', 'int32'),
    _StorageType('ShortStorage', 'int16'),
    _StorageType('CharStorage', 'int8'),
    _StorageType('ByteStorage', 'uint8'),
    _StorageType('BoolStorage', 'bool'),
    _StorageType('QInt8Storage', 'qint8'),
    _StorageType('QUInt8Storage', 'quint8'),
    _StorageType('QInt32Storage', 'qint32'),
    _StorageType('QUInt4x2Storage', 'quint4x2'),
    _StorageType('QUInt2x4Storage', 'quint2x4'),
)}
_UNTYPED = _StorageType('UntypedStorage', 'uint8', untyped=True)
_UNTYPED_NAMES = ('torch.UntypedStorage', 'torch.storage.UntypedStorage', 'torch._UntypedStorage',
                  'torch.storage._UntypedStorage')


class _TypeMarker:
    """``torch.Tensor`` / ``torch.nn.parameter.Parameter`` as arguments of ``_rebuild_from_type_v2``."""
    __slots__ = ('name',)
    __setattr__ = _immutable_setattr

    def __init__(self, name):
        object.__setattr__(self, 'name', name)

    def __repr__(self):
        return self.name


_TENSOR = _TypeMarker('torch.Tensor')
_PARAMETER = _TypeMarker('torch.nn.parameter.Parameter')


class TorchStorage:
    """A storage referenced by the file; in a result only where the file stored a bare storage.

    Attributes: ``key`` (str), ``dtype`` (:class:`TorchDtype`), ``numel``
    (elements; bytes for an untyped storage), ``nbytes``, ``location`` (the
    device torch saved it from). The data is not kept.
    """
    __slots__ = ('key', 'dtype', 'numel', 'nbytes', 'location', '_root', '_byte_offset', '_file_offset', '_buf',
                 '_handed_out')
    __setattr__ = _immutable_setattr

    def __init__(self, key, dtype, numel, location, root=None, byte_offset=0):
        for name, value in (('key', key), ('dtype', dtype), ('numel', numel), ('nbytes', numel * dtype.itemsize),
                            ('location', location), ('_root', root), ('_byte_offset', byte_offset),
                            ('_file_offset', None), ('_buf', None), ('_handed_out', False)):
            object.__setattr__(self, name, value)

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def __repr__(self):
        return f'<TorchStorage {self.key!r} {self.dtype.name}[{self.numel}] at {self.location!r}>'


# ---------------------------------------------------------------------------------------------
# refused globals


class _RefusedMeta(type):
    __setattr__ = _immutable_setattr

    def __repr__(cls):
        return f'<refused global {cls.refused_name}>'


class RefusedObject(metaclass=_RefusedMeta):
    """Stand-in for an object built by a global this reader refused to import.

    ``refused_name`` (class attribute) is the global's ``module.qualname``.
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

    def add(self, value):
        pass

    def __repr__(self):
        return f'<refused object {self.refused_name}>'

    def __reduce__(self):  # copy.deepcopy / pickling of a loaded tree
        return _refused_object, (self.refused_name,)


def _placeholder_class(name):
    return _RefusedMeta('RefusedObject', (RefusedObject,), {'__slots__': (), 'refused_name': name,
                                                             '__module__': __name__})


def _refused_object(name):
    return _placeholder_class(str(name))()


def is_refused(obj):
    """Whether ``obj`` stands for something refused: a :class:`RefusedObject` or a placeholder class."""
    return isinstance(obj, RefusedObject) or (isinstance(obj, type) and issubclass(obj, RefusedObject))


def find_refused(obj, path=''):
    """``[(path, global name), ...]`` for every refused object inside ``obj``.

    Walks dicts (keys and values), lists, tuples and sets; ``path`` is a
    dotted key path (``'meta.hub[2]'``), prefixed by ``path``.
    """
    found, seen = [], set()
    stack = [(path, obj)]
    while stack:
        where, item = stack.pop()
        if is_refused(item):
            found.append((where, item.refused_name))
            continue
        if not isinstance(item, (dict, list, tuple, set, frozenset)) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            children = []
            for key, value in item.items():
                name = f'{where}.{key}' if where else str(key)
                children.append((f'{name}<key>', key))
                children.append((name, value))
        elif isinstance(item, (set, frozenset)):
            children = [(f'{where}{{}}', v) for v in item]
        else:
            children = [(f'{where}[{i}]', v) for i, v in enumerate(item)]
        stack.extend(reversed(children))
    return found


# ---------------------------------------------------------------------------------------------
# pickle checks and unpicklers


_FORBIDDEN_OPS = {'EXT1', 'EXT2', 'EXT4', 'NEXT_BUFFER', 'READONLY_BUFFER'}
_PUT_OPS = {'PUT', 'BINPUT', 'LONG_BINPUT'}


class _BoundedReader:
    """File wrapper for :func:`pickletools.genops` that never asks for more than the file holds."""

    def __init__(self, f, end):
        self._f, self._end = f, end

    def read(self, n=-1):
        left = max(0, self._end - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self):
        return self._f.readline(max(0, self._end - self._f.tell()))

    def tell(self):
        return self._f.tell()


def _scan_pickle(f, fail, what):
    """Check the opcodes of the pickle at ``f``'s position; return the offset just after its STOP."""
    count = 0
    try:
        for opcode, arg, _ in pickletools.genops(f):
            count += 1
            if opcode.name in _FORBIDDEN_OPS:
                raise fail(f'{what}: pickle opcode {opcode.name} is not allowed')
            if opcode.name in _PUT_OPS and not 0 <= arg <= count:
                raise fail(f'{what}: pickle memo index {arg} out of range')
    except TorchPickleError:
        raise
    except Exception as err:  # noqa: BLE001 (truncated or malformed opcode stream)
        raise fail(f'{what}: corrupt or truncated pickle ({err})') from None
    return f.tell()


class _DataUnpickler(pickle.Unpickler):
    """For the small header pickles of the legacy format: plain data only."""

    def __init__(self, data, fail, what):
        super().__init__(io.BytesIO(data), encoding='utf-8')
        self._fail, self._what = fail, what

    def find_class(self, module, name):
        raise self._fail(f'{self._what}: unexpected global {module}.{name}')

    def persistent_load(self, pid):
        raise self._fail(f'{self._what}: unexpected persistent id')


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, loader):
        super().__init__(io.BytesIO(data), encoding='utf-8')
        self._loader = loader

    def find_class(self, module, name):
        return self._loader.find_global(module, name)

    def persistent_load(self, pid):
        return self._loader.persistent_load(pid)


def _load_pickle(unpickler, fail, what):
    try:
        return unpickler.load()
    except TorchPickleError:
        raise
    except RecursionError:
        raise fail(f'{what}: pickle nested too deeply') from None
    except Exception as err:  # noqa: BLE001 (anything a malformed pickle provokes)
        raise fail(f'{what}: invalid pickle data ({type(err).__name__}: {err})') from None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _ascii(value):
    return value.decode('ascii') if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------
# the loader


class _Loader:
    """State of one :func:`load_torch_file` call: allowed globals, storages, refused names."""

    def __init__(self, path, legacy):
        self.path = path
        self.legacy = legacy
        self.refused = set()
        self.storages = {}
        self.views = {}
        self.dry = False
        self.budget = 0
        self.byteorder = 'little'  # of the storages (zip: the byteorder record; legacy: always little)
        self.read_storage = None  # callable(storage) -> bytearray, set per format
        self.member_size = None  # zip: callable(key) -> size or None
        self._placeholders = {}
        self.globals = {
            'collections.OrderedDict': OrderedDict,
            'builtins.set': self._set,
            'builtins.frozenset': self._frozenset,
            'builtins.complex': self._complex,
            'builtins.bytes': self._bytes,
            'builtins.bytearray': self._bytearray,
            '_codecs.encode': self._encode,
            'torch._utils._rebuild_tensor': self._rebuild_tensor,
            'torch._utils._rebuild_tensor_v2': self._rebuild_tensor_v2,
            'torch._utils._rebuild_tensor_v3': self._rebuild_tensor_v3,
            'torch._utils._rebuild_parameter': self._rebuild_parameter,
            'torch._utils._rebuild_parameter_with_state': self._rebuild_parameter_with_state,
            'torch._tensor._rebuild_from_type_v2': self._rebuild_from_type_v2,
            'torch.Tensor': _TENSOR,
            'torch.nn.parameter.Parameter': _PARAMETER,
            'torch.Size': self._size,
            'torch.device': self._device,
        }
        # the exact objects find_global hands out (each attribute access makes a new bound method)
        self._rebuilders = tuple(self.globals[f'torch._utils.{name}'] for name in (
            '_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3', '_rebuild_parameter',
            '_rebuild_parameter_with_state'))
        self.globals.update({name: _UNTYPED for name in _UNTYPED_NAMES})
        for name, storage_type in _STORAGE_TYPES.items():
            self.globals[f'torch.{name}'] = storage_type
            self.globals[f'torch.cuda.{name}'] = storage_type
        self.globals.update({f'torch.{name}': dtype for name, dtype in _DTYPES.items()})

    def fail(self, message):
        return TorchPickleError(f'{self.path}: {message}')

    def close(self):
        """Drop storage buffers (those not handed out as arrays are freed) and break reference cycles."""
        self.storages.clear()
        self.views.clear()
        self.globals.clear()
        self._rebuilders = ()
        self.read_storage = self.member_size = None

    # -- globals ---------------------------------------------------------------------------

    def find_global(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f'{module}.{name}'
        allowed = self.globals.get(full)
        if allowed is not None:
            return allowed
        self.refused.add(full)
        placeholder = self._placeholders.get(full)
        if placeholder is None:
            placeholder = _placeholder_class(full)
            self._placeholders[full] = placeholder
        return placeholder

    def _set(self, items=()):
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise self.fail(f'builtins.set called with {type(items).__name__}')
        return set(items)

    def _frozenset(self, items=()):
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise self.fail(f'builtins.frozenset called with {type(items).__name__}')
        return frozenset(items)

    def _complex(self, real=0.0, imag=0.0):
        if not all(isinstance(v, (int, float)) for v in (real, imag)):
            raise self.fail('builtins.complex called with non-numbers')
        return complex(real, imag)

    def _bytes(self, *args):
        if not args:
            return b''
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return bytes(args[0])
        if len(args) == 2 and isinstance(args[0], str):
            return self._encode(*args)
        raise self.fail('builtins.bytes called with unsupported arguments')

    def _bytearray(self, *args):
        return bytearray(self._bytes(*args))

    def _encode(self, text, encoding='utf-8'):
        if not isinstance(text, str) or encoding not in ('latin1', 'latin-1', 'utf-8', 'utf8', 'ascii'):
            raise self.fail('_codecs.encode called with unsupported arguments')
        return text.encode(encoding)

    def _size(self, dims=()):
        return self._int_tuple(dims, 'torch.Size', minimum=None)

    def _device(self, kind, index=None):
        if not isinstance(kind, str) or not (index is None or _is_int(index)):
            raise self.fail('torch.device called with unsupported arguments')
        return kind if index is None else f'{kind}:{index}'

    # -- storages --------------------------------------------------------------------------

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise self.fail(f'persistent id must be a non-empty tuple, got {type(pid).__name__}')
        typename = _ascii(pid[0])
        if typename == 'module' and self.legacy and len(pid) == 4:
            return pid[1]  # a pickled nn.Module class: refused by find_global already
        if typename != 'storage':
            raise self.fail(f'unknown persistent id type {typename!r}')
        expected = 6 if self.legacy else 5
        if len(pid) != expected:
            raise self.fail(f'storage persistent id has {len(pid)} fields, expected {expected}')
        storage_type, key, location, numel = pid[1:5]
        key, location = _ascii(key), _ascii(location)
        if not isinstance(storage_type, _StorageType):
            raise self.fail(f'unknown storage type {storage_type!r}')
        if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_LEN:
            raise self.fail(f'invalid storage key {key!r}')
        if not isinstance(location, str):
            raise self.fail(f'invalid storage location {location!r}')
        if not _is_int(numel) or numel < 0:
            raise self.fail(f'invalid element count {numel!r} for storage {key!r}')
        storage = self.storages.get(key)
        if storage is None:
            storage = TorchStorage(key, storage_type.dtype, numel, location)
            if self.member_size is not None:
                size = self.member_size(key)
                if size is None:
                    raise self.fail(f'storage {key!r} is missing from the archive (data/{key})')
                if size != storage.nbytes:
                    raise self.fail(f'storage {key!r} holds {size} bytes but {storage.nbytes} are declared '
                                    f'({numel} x {storage.dtype.name})')
            self.storages[key] = storage
        elif storage.dtype is not storage_type.dtype or storage.numel != numel:
            raise self.fail(f'storage {key!r} is declared twice with different types or sizes')
        view = pid[5] if self.legacy else None
        if view is None:
            return storage
        return self._legacy_view(storage, view)

    def _legacy_view(self, root, view):
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])):
            raise self.fail(f'invalid storage view metadata {view!r}')
        view_key, offset, size = _ascii(view[0]), view[1], view[2]
        if not isinstance(view_key, str) or offset < 0 or size < 0 or offset + size > root.numel:
            raise self.fail(f'storage view {view!r} does not fit storage {root.key!r} ({root.numel} elements)')
        existing = self.views.get(view_key)
        if existing is None:
            existing = TorchStorage(view_key, root.dtype, size, root.location, root=root,
                                    byte_offset=offset * root.dtype.itemsize)
            self.views[view_key] = existing
        elif existing._root is not root or existing.numel != size:
            raise self.fail(f'storage view {view_key!r} is declared twice differently')
        return existing

    def _storage_bytes(self, storage):
        """The storage's bytes (read once, cached until loading ends)."""
        if storage._root is not None:
            data = self._storage_bytes(storage._root)
            return memoryview(data)[storage._byte_offset:storage._byte_offset + storage.nbytes]
        if storage._buf is None:
            buf = self.read_storage(storage)
            if len(buf) != storage.nbytes:
                raise self.fail(f'storage {storage.key!r}: read {len(buf)} bytes, expected {storage.nbytes}')
            storage._set('_buf', buf)
        return storage._buf

    # -- tensors ---------------------------------------------------------------------------

    def _int_tuple(self, value, what, minimum=0):
        if not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM:
            raise self.fail(f'invalid tensor {what} {value!r}')
        if not all(_is_int(v) and (minimum is None or v >= minimum) for v in value):
            raise self.fail(f'invalid tensor {what} {tuple(value)!r}')
        return tuple(value)

    def _tensor(self, storage, offset, size, stride, dtype, metadata):
        if not isinstance(storage, TorchStorage):
            raise self.fail(f'tensor rebuilt from {type(storage).__name__}, not a storage')
        if not isinstance(dtype, TorchDtype):
            raise self.fail(f'invalid tensor dtype {dtype!r}')
        if dtype.numpy is None:
            raise self.fail(f'tensor dtype torch.{dtype.name} is not supported')
        size, stride = self._int_tuple(size, 'size'), self._int_tuple(stride, 'stride')
        if len(size) != len(stride):
            raise self.fail(f'tensor size {size} and stride {stride} differ in length')
        if not _is_int(offset) or offset < 0:
            raise self.fail(f'invalid storage offset {offset!r}')
        conj, neg = self._metadata(metadata, dtype)
        itemsize = dtype.itemsize
        available = storage.nbytes // itemsize
        numel = 1
        for n in size:
            numel *= n
        if numel == 0:
            return _DRY if self.dry else np.zeros(size, dtype.numpy)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= available:
            raise self.fail(f'tensor of size {size}, stride {stride} and offset {offset} needs {last + 1} '
                            f'elements of storage {storage.key!r}, which holds {available} torch.{dtype.name}')
        out_bytes = numel * dtype.numpy.itemsize
        if out_bytes > self.budget:
            raise self.fail(f'tensors total more bytes than allowed for this file ({out_bytes} more requested; '
                            f'see MAX_OUTPUT_FACTOR)')
        self.budget -= out_bytes
        if self.dry:
            return _DRY
        data = self._storage_bytes(storage)
        file_dtype = dtype._file if self.byteorder == 'little' else dtype._file.newbyteorder('>')
        base = np.frombuffer(data, dtype=file_dtype, count=available)
        contiguous = all(s == e for n, s, e in zip(size, stride, _c_strides(size)) if n != 1)
        if (storage._root is None and not storage._handed_out and offset == 0 and numel == available
                and numel * itemsize == storage.nbytes and contiguous):
            array = base.reshape(size)  # the whole storage, in order: no copy
            storage._set('_handed_out', True)
        else:
            view = np.lib.stride_tricks.as_strided(base[offset:], shape=size,
                                                   strides=tuple(s * itemsize for s in stride), writeable=False)
            array = np.array(view, order='C', copy=True)
        return self._convert(array, dtype, conj, neg)

    def _metadata(self, metadata, dtype):
        if metadata is None:
            return False, False
        if not isinstance(metadata, dict) or not set(metadata) <= {'conj', 'neg'} or \
                not all(isinstance(v, bool) for v in metadata.values()):
            raise self.fail(f'unsupported tensor metadata {metadata!r}')
        conj, neg = metadata.get('conj', False), metadata.get('neg', False)
        if conj and dtype.numpy.kind != 'c' or neg and dtype.name == 'bool':
            raise self.fail(f'tensor metadata {metadata!r} does not fit dtype torch.{dtype.name}')
        return conj, neg

    @staticmethod
    def _convert(array, dtype, conj, neg):
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder('='))
        if dtype.name == 'bfloat16':
            array = (array.astype(np.uint32) << 16).view(np.float32)
        elif dtype.name == 'bool':
            array = array.view(np.bool_) if array.size == 0 or array.max() <= 1 else array != 0
        if conj:
            array = np.conj(array)
        if neg:
            array = np.negative(array)
        return array if array.flags.c_contiguous else array.copy(order='C')  # keeps 0-d arrays 0-d

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return self._tensor(storage, storage_offset, size, stride, getattr(storage, 'dtype', None), None)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                           metadata=None):
        return self._tensor(storage, storage_offset, size, stride, getattr(storage, 'dtype', None), metadata)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                           metadata=None):
        return self._tensor(storage, storage_offset, size, stride, dtype, metadata)

    def _check_tensor(self, data, what):
        if not (isinstance(data, np.ndarray) or data is _DRY):
            raise self.fail(f'{what} built from {type(data).__name__}, not a tensor')
        return data

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        return self._check_tensor(data, 'parameter')

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return self._check_tensor(data, 'parameter')

    def _rebuild_from_type_v2(self, func, new_type, args, state):
        if is_refused(func):
            return func()
        if not any(func is f for f in self._rebuilders) or not isinstance(args, tuple):
            raise self.fail(f'_rebuild_from_type_v2 called with {func!r}')
        result = func(*args)
        if new_type is _TENSOR or new_type is _PARAMETER:
            return result
        if is_refused(new_type):  # a tensor subclass: its class is refused, so is the tensor
            return new_type()
        raise self.fail(f'_rebuild_from_type_v2 called with type {new_type!r}')


class _Dry:
    __slots__ = ()
    __setattr__ = _immutable_setattr


_DRY = _Dry()


def _c_strides(size):
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _budget(storage_bytes):
    return MAX_OUTPUT_FACTOR * storage_bytes + MAX_OUTPUT_SLACK


# ---------------------------------------------------------------------------------------------
# formats


def _load_zip(f, loader):
    fail = loader.fail
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as err:  # noqa: BLE001 (zipfile raises many kinds on a damaged directory)
        raise fail(f'not a readable zip archive (truncated or corrupt?): {type(err).__name__}: {err}') from None
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise fail('zip archive has duplicate members')
    by_name = {info.filename: info for info in infos}
    pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if not pickles:
        if any(n.endswith('constants.pkl') for n in names):
            raise fail('TorchScript archive (torch.jit.save); only torch.save files can be read')
        raise fail('zip archive has no <name>/data.pkl: not a torch.save file')
    if len(pickles) > 1:
        raise fail(f'zip archive has several data.pkl records: {pickles[:4]}')
    prefix = pickles[0][:-len('data.pkl')]
    if prefix + 'constants.pkl' in by_name:
        raise fail('TorchScript archive (torch.jit.save); only torch.save files can be read')

    def read_member(name, limit=None):
        info = by_name[name]
        if limit is not None and info.file_size > limit:
            raise fail(f'archive member {name} is too large ({info.file_size} bytes)')
        try:
            return zf.read(info)
        except Exception as err:  # noqa: BLE001
            raise fail(f'cannot read archive member {name} (truncated or corrupt?): {type(err).__name__}: '
                       f'{err}') from None

    if prefix + 'byteorder' in by_name:
        order = read_member(prefix + 'byteorder', limit=16)
        if order not in (b'little', b'big'):
            raise fail(f'unknown byte order record {order[:16]!r}')
        loader.byteorder = order.decode()
    data_prefix = prefix + 'data/'
    loader.budget = _budget(sum(i.file_size for i in infos if i.filename.startswith(data_prefix)))

    def member_size(key):
        info = by_name.get(data_prefix + key)
        return None if info is None else info.file_size

    def read_storage(storage):
        name = data_prefix + storage.key
        buf = bytearray(storage.nbytes)
        view = memoryview(buf)
        pos = 0
        try:
            with zf.open(by_name[name]) as member:
                while pos < len(buf):
                    chunk = member.read(min(_CHUNK, len(buf) - pos))
                    if not chunk:
                        break
                    view[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
                member.read(1)  # reach the end of the member, so that its CRC is checked
        except Exception as err:  # noqa: BLE001
            raise fail(f'cannot read storage {name} (truncated or corrupt?): {type(err).__name__}: {err}') from None
        if pos != len(buf):
            raise fail(f'storage {name} is truncated: {pos} of {len(buf)} bytes')
        return buf

    loader.member_size = member_size
    loader.read_storage = read_storage
    try:
        data = read_member(pickles[0])
        _scan_pickle(io.BytesIO(data), fail, pickles[0])
        return _load_pickle(_RestrictedUnpickler(data, loader), fail, pickles[0])
    finally:
        zf.close()


def _read_pickle(f, end, fail, what):
    start = f.tell()
    stop = _scan_pickle(_BoundedReader(f, end), fail, what)
    f.seek(start)
    data = f.read(stop - start)
    if len(data) != stop - start:
        raise fail(f'{what}: file truncated')
    return data


def _load_legacy(f, loader):
    fail = loader.fail
    end = os.fstat(f.fileno()).st_size

    def small(what):
        data = _read_pickle(f, end, fail, what)
        return _load_pickle(_DataUnpickler(data, fail, what), fail, what)

    magic = small('magic number')
    if magic != _LEGACY_MAGIC:
        raise fail('not a PyTorch file (invalid magic number)')
    protocol = small('protocol version')
    if protocol != _LEGACY_PROTOCOL:
        raise fail(f'unsupported legacy protocol version {protocol!r}')
    if not isinstance(small('system info'), dict):
        raise fail('invalid system info record')
    main = _read_pickle(f, end, fail, 'object pickle')

    # First pass: declare storages and validate the tree without data (it comes after the pickle).
    loader.dry, loader.budget = True, float('inf')
    _load_pickle(_RestrictedUnpickler(main, loader), fail, 'object pickle')
    keys = small('storage key list')
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise fail('invalid storage key list')
    pos = f.tell()
    for key in keys:
        storage = loader.storages.get(key)
        if storage is None:
            raise fail(f'storage key {key!r} is listed but no tensor uses it')
        header = f.read(8)
        if len(header) != 8:
            raise fail(f'file truncated at storage {key!r}')
        (count,) = struct.unpack('<q', header)
        if count != storage.numel:
            raise fail(f'storage {key!r} has {count} elements in the file, {storage.numel} declared')
        storage._set('_file_offset', pos + 8)
        pos += 8 + storage.nbytes
        if pos > end:
            raise fail(f'file truncated in storage {key!r} ({pos - end} bytes missing)')
        f.seek(pos)
    missing = sorted(k for k, s in loader.storages.items() if s._file_offset is None)
    if missing:
        raise fail(f'storages {missing[:5]} have no data in the file')

    def read_storage(storage):
        buf = bytearray(storage.nbytes)
        view = memoryview(buf)
        f.seek(storage._file_offset)
        pos = 0
        while pos < len(buf):
            n = f.readinto(view[pos:pos + _CHUNK])
            if not n:
                raise fail(f'file truncated in storage {storage.key!r}')
            pos += n
        return buf

    loader.read_storage = read_storage
    loader.dry, loader.budget = False, _budget(end)
    return _load_pickle(_RestrictedUnpickler(main, loader), fail, 'object pickle')


def load_torch_file(path, *, return_refused=False):
    """Load a ``torch.save`` file (zip or legacy format) with tensors as NumPy arrays.

    Nothing in the file is executed and ``torch`` is not needed; see the module
    docstring for what is supported and what is refused.

    Args:
        path (str | os.PathLike): the file.
        return_refused (bool): also return the refused global names.

    Returns:
        The unpickled object tree (``dict``/``OrderedDict``/``list``/``tuple``,
        Python scalars and strings, ``np.ndarray`` for tensors), where objects
        of refused classes are :class:`RefusedObject` markers. With
        ``return_refused=True``, ``(tree, names)`` where ``names`` is the sorted
        list of refused globals (``module.qualname``), e.g.
        ``['mmengine.logging.history_buffer.HistoryBuffer', 'numpy.dtype']``.

    Raises:
        TorchPickleError: the file cannot be opened, is not a PyTorch file, is
            truncated or corrupt, or describes tensors inconsistently; the
            message names the file and the problem.
    """
    path = os.fspath(path)
    loader = _Loader(path, legacy=False)
    try:
        with open(path, 'rb') as f:
            head = f.read(512)
            f.seek(0)
            if head.startswith((b'PK\x03\x04', b'PK\x05\x06')):
                tree = _load_zip(f, loader)
            elif head[:1] == b'\x80':
                loader.legacy = True
                tree = _load_legacy(f, loader)
            elif head[257:262] == b'ustar':
                raise TorchPickleError(f'{path}: the tar-based format of PyTorch < 0.4 is not supported')
            else:
                raise TorchPickleError(f'{path}: not a PyTorch file (neither a zip archive nor a pickle)')
    except OSError as err:
        raise TorchPickleError(f'{path}: cannot read file: {err}') from None
    finally:
        loader.close()
    if return_refused:
        return tree, sorted(loader.refused)
    return tree
