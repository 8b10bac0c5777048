"""Write PyTorch checkpoint files without PyTorch, for tests.

CI has no ``torch``, so tests produce real ``torch.save`` files with this
module. It writes what PyTorch 2.x writes, byte for byte for the same object
tree (only the random ``.data/serialization_id`` and the legacy storage keys,
which torch derives from memory addresses, are chosen here):

* :func:`save_zip`: the zip format (``torch.save`` default): pickle protocol 2
  in ``<name>/data.pkl`` with persistent ids ``('storage', storage_type, key,
  location, numel)``, records ``.format_version``, ``.storage_alignment``,
  ``byteorder``, ``data/<key>``, ``version`` and ``.data/serialization_id``,
  laid out as PyTorch's miniz-based writer does (local headers with data
  descriptors, ``FB`` padding fields aligning every record to 64 bytes, zip64
  end records).
* :func:`save_legacy`: the format of ``_use_new_zipfile_serialization=False``:
  magic number, protocol version, system info, the object pickle (persistent
  ids ``('storage', storage_type, key, location, numel, None)``), the sorted
  key list, then each storage as a little-endian int64 element count and its
  bytes.

Object trees may hold ``dict``/``OrderedDict``/``list``/``tuple``, scalars and
strings, and:

* ``np.ndarray`` or :func:`tensor` -> a tensor with its own storage;
  :class:`Tensor` -> any view (offset, size, stride) of a :class:`Storage`,
  e.g. several tensors sharing one storage; :class:`Parameter` -> an
  ``nn.Parameter``. Dtypes: torch names (``'float32'``, ``'bfloat16'``,
  ``'uint16'`` ...); ``uint16/32/64`` are written as torch does for dtypes
  without a legacy storage class (``UntypedStorage`` + ``_rebuild_tensor_v3``).
* :class:`Reduce` -> ``GLOBAL module name`` + args + ``REDUCE`` (+ ``BUILD``),
  :class:`Instance` -> an object of any class as protocol 2 pickles it
  (``NEWOBJ`` + ``BUILD``), :class:`Global` -> a bare global, :class:`Build` -> any
  object followed by ``BUILD state``,
  :class:`Pickled` -> an object pickled by its own ``__reduce_ex__`` (e.g. a
  real NumPy array); any other object is pickled as ``pickle`` would (so a
  class whose ``__reduce__`` returns ``os.system`` makes a malicious file).

The names in these objects are written, never imported.
"""
import _compat_pickle
import io
import os
import pickle
import struct
import zlib
from collections import OrderedDict

import numpy as np

__all__ = ['Storage', 'Tensor', 'Parameter', 'Global', 'Reduce', 'Instance', 'Build', 'Pickled', 'tensor', 'parameter',
           'bfloat16_bits', 'save_zip', 'save_legacy', 'zip_bytes', 'zip_records', 'zip_archive', 'legacy_bytes',
           'legacy_parts']

# torch dtype name -> (little-endian NumPy dtype of the stored bytes, legacy storage class or None)
DTYPES = {
    'float32': ('<f4', 'FloatStorage'),
    'float64': ('<f8', 'DoubleStorage'),
    'float16': ('<f2', 'HalfStorage'),
    'bfloat16': ('<u2', 'BFloat16Storage'),
    'complex64': ('<c8', 'ComplexFloatStorage'),
    'complex128': ('<c16', 'ComplexDoubleStorage'),
    'int64': ('<i8', 'LongStorage'),
    'int32': ('<i4', 'IntStorage'),
    'int16': ('<i2', 'ShortStorage'),
    'int8': ('i1', 'CharStorage'),
    'uint8': ('u1', 'ByteStorage'),
    'bool': ('u1', 'BoolStorage'),
    'uint16': ('<u2', None),
    'uint32': ('<u4', None),
    'uint64': ('<u8', None),
}
_FROM_NUMPY = {'float32': 'float32', 'float64': 'float64', 'float16': 'float16', 'complex64': 'complex64',
               'complex128': 'complex128', 'int64': 'int64', 'int32': 'int32', 'int16': 'int16', 'int8': 'int8',
               'uint8': 'uint8', 'bool': 'bool', 'uint16': 'uint16', 'uint32': 'uint32', 'uint64': 'uint64'}
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001
LEGACY_SYS_INFO = {'protocol_version': LEGACY_PROTOCOL, 'little_endian': True,
                   'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
_CPU = 'cpu'


class Global:
    """A global pickled as ``GLOBAL module name`` (Python 3 names mapped to Python 2 ones, as pickle does)."""
    _cache = {}

    def __new__(cls, module, name):
        key = (module, name)
        if key not in cls._cache:  # one object per name, so that pickle memoizes it like torch's classes
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._cache[key] = obj
        return cls._cache[key]

    def __call__(self, *args):  # pickle requires reduce functions to be callable; never called
        raise TypeError(f'{self.module}.{self.name} is only a name')

    def __repr__(self):
        return f'Global({self.module!r}, {self.name!r})'


class Reduce:
    """``module.name(*args)`` as a pickle ``REDUCE`` (then ``BUILD`` with ``state`` if given)."""

    def __init__(self, module, name, args=(), state=None):
        self.module, self.name, self.args, self.state = module, name, tuple(args), state


class Instance:
    """An instance of class ``module.name`` as protocol 2 pickles one: ``NEWOBJ`` then ``BUILD state``."""

    def __init__(self, module, name, state=None):
        self.module, self.name, self.state = module, name, state


class Build:
    """``obj`` followed by ``BUILD state`` (to try to alter an object after it was made)."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state


class Pickled:
    """``obj`` pickled through its own ``__reduce_ex__(2)`` (e.g. a NumPy array as NumPy pickles it)."""

    def __init__(self, obj):
        self.obj = obj


class Storage:
    """A storage: ``data`` (any shape, taken in C order) stored as torch dtype ``dtype``.

    ``dtype`` defaults to ``data``'s NumPy dtype; for ``'bfloat16'`` pass the
    raw bits as uint16 (see :func:`bfloat16_bits`). ``key`` sets the legacy
    format's storage key (torch uses a memory address). ``location`` is the
    device recorded in the file.
    """

    def __init__(self, data, dtype=None, key=None, location=_CPU):
        data = np.asarray(data)
        dtype = dtype or _FROM_NUMPY[data.dtype.name]
        self.dtype = dtype
        file_dtype = np.dtype(DTYPES[dtype][0])
        self.data = np.ascontiguousarray(data.reshape(-1)).astype(file_dtype)
        self.numel = self.data.size
        self.key = key
        self.location = location

    @property
    def untyped(self):
        return DTYPES[self.dtype][1] is None

    def raw(self, byteorder='little'):
        data = self.data if byteorder == 'little' else self.data.astype(self.data.dtype.newbyteorder('>'))
        return data.tobytes()


class Tensor:
    """A tensor viewing ``storage`` (the storage's dtype) with the given offset, size and stride."""

    def __init__(self, storage, offset=0, size=None, stride=None, requires_grad=False, metadata=None):
        self.storage = storage
        self.offset = offset
        self.size = tuple((storage.numel,) if size is None else size)
        self.stride = tuple(_contiguous_stride(self.size) if stride is None else stride)
        self.requires_grad = requires_grad
        self.metadata = metadata

    def view(self, offset, size, stride):
        """Another tensor on the same storage."""
        return Tensor(self.storage, offset, size, stride)


class Parameter:
    """``torch.nn.Parameter(tensor, requires_grad)``."""

    def __init__(self, data, requires_grad=True):
        self.data = data if isinstance(data, Tensor) else tensor(data)
        self.requires_grad = requires_grad


def tensor(array, dtype=None, **kwargs):
    """A contiguous tensor holding ``array`` in a storage of its own."""
    array = np.asarray(array)
    return Tensor(Storage(array, dtype), 0, array.shape, None, **kwargs)


def parameter(array, requires_grad=True):
    return Parameter(array, requires_grad)


def bfloat16_bits(values):
    """float32 values -> bfloat16 bit patterns (uint16), rounding to nearest even like torch."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def _contiguous_stride(size):
    stride, step = [], 1
    for n in reversed(size):
        stride.append(step)
        step *= max(n, 1)
    return tuple(reversed(stride))


class _Pickler(pickle._Pickler):
    """Pure-Python pickler (same output as the C one) with torch's reductions for the classes above."""
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, storage_pid):
        super().__init__(file, protocol=2)
        self._storage_pid = storage_pid
        self._keep = []  # objects created while pickling stay alive, so their ids stay unique

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return self._storage_pid(obj)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            obj = tensor(obj)
            self._keep.append(obj)
        if isinstance(obj, Tensor):
            hooks = OrderedDict()
            self._keep.append(hooks)
            args = (obj.storage, obj.offset, obj.size, obj.stride, obj.requires_grad, hooks)
            if obj.storage.untyped:
                func = Global('torch._utils', '_rebuild_tensor_v3')
                args += (Global('torch', obj.storage.dtype),)
            else:
                func = Global('torch._utils', '_rebuild_tensor_v2')
            if obj.metadata:  # torch builds this dict in C++: fresh key strings, never memo hits
                args += ({(k + '.')[:-1]: v for k, v in obj.metadata.items()},)
            return func, args
        if isinstance(obj, Parameter):
            hooks = OrderedDict()
            self._keep.append(hooks)
            return Global('torch._utils', '_rebuild_parameter'), (obj.data, obj.requires_grad, hooks)
        if isinstance(obj, Reduce):
            rv = (Global(obj.module, obj.name), obj.args)
            return rv if obj.state is None else rv + (obj.state,)
        if isinstance(obj, Pickled):
            return obj.obj.__reduce_ex__(2)
        return NotImplemented

    def _save_global_name(self, obj):
        module, name = obj.module, obj.name
        if (module, name) in _compat_pickle.REVERSE_NAME_MAPPING:
            module, name = _compat_pickle.REVERSE_NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.REVERSE_IMPORT_MAPPING:
            module = _compat_pickle.REVERSE_IMPORT_MAPPING[module]
        self.write(pickle.GLOBAL + f'{module}\n{name}\n'.encode('utf-8'))
        self.memoize(obj)

    def _save_instance(self, obj):
        self.save(Global(obj.module, obj.name))
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        if obj.state is not None:
            self.save(obj.state)
            self.write(pickle.BUILD)

    def _save_build(self, obj):
        self.save(obj.obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    dispatch[Global] = _save_global_name
    dispatch[Instance] = _save_instance
    dispatch[Build] = _save_build


def _storage_type(storage):
    if storage.untyped:
        return Global('torch.storage', 'UntypedStorage'), storage.data.nbytes
    return Global('torch', DTYPES[storage.dtype][1]), storage.numel


def _pickle_tree(obj, storage_pid):
    buf = io.BytesIO()
    _Pickler(buf, storage_pid).dump(obj)
    return buf.getvalue()


def zip_bytes(obj, archive_name='archive', serialization_id=None, byteorder='little'):
    """The bytes ``torch.save(obj, f)`` writes (zip format)."""
    return zip_archive(zip_records(obj, archive_name, serialization_id, byteorder))


def zip_records(obj, archive_name='archive', serialization_id=None, byteorder='little'):
    """``[(member name, bytes), ...]`` of the zip format, in torch's order (to tamper with in tests)."""
    storages = {}  # id(Storage) -> (key, storage), in order of first use, like torch

    def storage_pid(storage):
        if id(storage) not in storages:
            storages[id(storage)] = (str(len(storages)), storage)
        key, _ = storages[id(storage)]
        storage_type, numel = _storage_type(storage)
        return ('storage', storage_type, key, storage.location, numel)

    data_pkl = _pickle_tree(obj, storage_pid)
    records = [('data.pkl', data_pkl), ('.format_version', b'1'), ('.storage_alignment', b'64'),
               ('byteorder', byteorder.encode())]
    records += [(f'data/{key}', storage.raw(byteorder)) for key, storage in storages.values()]
    records.append(('version', b'3\n'))
    if serialization_id is None:
        crc = 0
        for _, data in records:
            crc = zlib.crc32(data, crc)
        serialization_id = f'{crc:020d}{len(records):020d}'
    records.append(('.data/serialization_id', serialization_id.encode()))
    return [(f'{archive_name}/{name}', data) for name, data in records]


def zip_archive(records):
    """A zip archive laid out as PyTorch's miniz writer lays it out (stored, 64-byte aligned data)."""
    out = bytearray()
    central = []
    for name, data in records:
        offset = len(out)
        encoded = name.encode('utf-8')
        if offset >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF:
            raise ValueError('this writer does not write zip64 records')
        pad = -(offset + 30 + len(encoded) + 4) % 64
        extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
        flags = 0x0808 if data else 0x0800
        crc = zlib.crc32(data)
        out += struct.pack('<IHHHHHIIIHH', 0x04034B50, 0, flags, 0, 0, 0, 0, 0, 0, len(encoded), len(extra))
        out += encoded + extra + data
        if data:
            out += struct.pack('<IIII', 0x08074B50, crc, len(data), len(data))
        central.append(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 0, 0, flags, 0, 0, 0, crc, len(data),
                                   len(data), len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    directory = b''.join(central)
    cd_offset, count = len(out), len(records)
    out += directory
    eocd64 = len(out)
    out += struct.pack('<IQHHIIQQQQ', 0x06064B50, 44, 0x031E, 0x2D, 0, 0, count, count, len(directory), cd_offset)
    out += struct.pack('<IIQI', 0x07064B50, 0, eocd64, 1)
    out += struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, count, count, len(directory), cd_offset, 0)
    return bytes(out)


def legacy_bytes(obj):
    """The bytes ``torch.save(obj, f, _use_new_zipfile_serialization=False)`` writes."""
    parts = legacy_parts(obj)
    return b''.join(parts['headers'] + [parts['pickle'], parts['keys']] + parts['storages'])


def legacy_parts(obj):
    """The legacy format in pieces (to tamper with in tests): a dict of ``headers`` (the magic
    number, protocol and system info pickles), ``pickle`` (the object tree), ``keys`` (the key
    list pickle) and ``storages`` (per key: int64 element count + bytes)."""
    storages = {}  # key -> storage

    def storage_pid(storage):
        if storage.key is None:  # torch uses the storage's address; any unique number works
            storage.key = str(94000000000000 + 64 * (len(storages) + 1))
        other = storages.setdefault(storage.key, storage)
        if other is not storage:
            raise ValueError(f'two storages with key {storage.key!r}')
        storage_type, numel = _storage_type(storage)
        # torch computes str(storage._cdata) anew for each tensor: a fresh string, never a memo hit
        return ('storage', storage_type, (storage.key + '.')[:-1], storage.location, numel, None)

    headers = [pickle.dumps(h, protocol=2) for h in (LEGACY_MAGIC, LEGACY_PROTOCOL, LEGACY_SYS_INFO)]
    tree = _pickle_tree(obj, storage_pid)
    keys = sorted(storages)
    data = []
    for key in keys:
        storage = storages[key]
        raw = storage.raw('little')
        data.append(struct.pack('<q', len(raw) // (1 if storage.untyped else storage.data.itemsize)) + raw)
    return {'headers': headers, 'pickle': tree, 'keys': pickle.dumps(keys, protocol=2), 'storages': data}


def save_zip(obj, path, archive_name=None, **kwargs):
    """Write ``obj`` to ``path`` as ``torch.save`` does (archive name: the file's stem, like torch)."""
    if archive_name is None:
        archive_name = os.path.splitext(os.path.basename(os.fspath(path)))[0] or 'archive'
    with open(path, 'wb') as f:
        f.write(zip_bytes(obj, archive_name, **kwargs))
    return path


def save_legacy(obj, path):
    """Write ``obj`` to ``path`` as ``torch.save(..., _use_new_zipfile_serialization=False)`` does."""
    with open(path, 'wb') as f:
        f.write(legacy_bytes(obj))
    return path
