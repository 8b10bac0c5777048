"""Storages and tensors of a ``torch.save`` file, rebuilt as NumPy arrays.

The supported dtypes are those of real checkpoints: float16/32/64, bfloat16
(returned as float32: exact, a bfloat16 is the upper half of a float32),
int8/16/32/64, uint8 and bool, stored little-endian. A storage is named in the
pickle by a typed class (``torch.FloatStorage`` ...); torch 2.x still writes
these names for the dtypes above. Other storage classes (complex, quantised,
``UntypedStorage`` for uint16/32/64 and float8) are refused by name.

A storage's bytes are read once, when the first tensor viewing it is rebuilt.
A tensor covering its whole storage in order becomes an array over the
storage's buffer (no copy); any other view (shared storages, offsets,
transposes) is copied to a C-contiguous array, so returned arrays never share
memory. Arrays built from one file total at most ``MAX_OUTPUT_FACTOR`` times
the storage bytes of the file plus ``MAX_OUTPUT_SLACK``: stride-0 or repeated
views cannot inflate a small file.
"""
import numpy as np

__all__ = ['MAX_OUTPUT_FACTOR', 'MAX_OUTPUT_SLACK', 'STORAGE_TYPES', 'StorageType', 'Storage', 'TensorBuilder']

MAX_OUTPUT_FACTOR = 4
MAX_OUTPUT_SLACK = 16 << 20
_MAX_NDIM = 16
_MAX_KEY_LEN = 256


def _immutable_setattr(self, name, value):
    raise AttributeError(f'{type(self).__name__} objects are read-only')


class StorageType:
    """``torch.FloatStorage`` & co. as named in persistent ids: the dtype of a storage."""
    __slots__ = ('name', 'torch_dtype', 'file_dtype', 'result_dtype')
    __setattr__ = _immutable_setattr

    def __init__(self, name, torch_dtype, file_dtype, result_dtype=None):
        for key, value in (('name', name), ('torch_dtype', torch_dtype), ('file_dtype', np.dtype(file_dtype)),
                           ('result_dtype', np.dtype(result_dtype or file_dtype))):
            object.__setattr__(self, key, value)

    @property
    def itemsize(self):
        return self.file_dtype.itemsize

    def __repr__(self):
        return f'torch.{self.name}'


STORAGE_TYPES = {t.name: t for t in (
    StorageType('FloatStorage', 'float32', '<f4'),
    StorageType('DoubleStorage', 'float64', '<f8'),
    StorageType('HalfStorage', 'float16', '<f2'),
    StorageType('BFloat16Storage', 'bfloat16', '<u2', np.float32),
    StorageType('LongStorage', 'int64', '<i8'),
    StorageType('IntStorage', 'int32', '<i4'),
    StorageType('ShortStorage', 'int16', '<i2'),
    StorageType('CharStorage', 'int8', 'i1'),
    StorageType('ByteStorage', 'uint8', 'u1'),
    StorageType('BoolStorage', 'bool', 'u1', np.bool_),
)}


class Storage:
    """A storage named by the pickle: ``key`` (archive member ``data/<key>``), type, element count."""
    __slots__ = ('key', 'type', 'numel', '_buf', '_handed_out')
    __setattr__ = _immutable_setattr

    def __init__(self, key, storage_type, numel):
        for name, value in (('key', key), ('type', storage_type), ('numel', numel), ('_buf', None),
                            ('_handed_out', False)):
            object.__setattr__(self, name, value)

    @property
    def nbytes(self):
        return self.numel * self.type.itemsize

    def __repr__(self):
        return f'<storage {self.key!r} {self.type.torch_dtype}[{self.numel}]>'


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _c_strides(size):
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class TensorBuilder:
    """Declares storages and rebuilds tensors for one file.

    Args:
        fail (callable): message -> exception naming the file.
        member_size (callable): key -> size in bytes of ``data/<key>`` (None: absent).
        read_member (callable): key -> the member's bytes (``bytearray``).
    """

    def __init__(self, fail, member_size, read_member):
        self.fail, self._member_size, self._read_member = fail, member_size, read_member
        self.storages = {}
        self.budget = 0

    def storage(self, pid):
        """The storage of persistent id ``('storage', storage_type, key, location, numel)``."""
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != 'storage':
            raise self.fail(f'unsupported persistent id {pid!r:.200}')
        storage_type, key, _, numel = pid[1:]
        if not isinstance(storage_type, StorageType):
            name = getattr(storage_type, 'refused_name', None) or repr(storage_type)[:100]
            raise self.fail(f'unsupported storage type {name} (supported: '
                            f'{", ".join(t.torch_dtype for t in STORAGE_TYPES.values())})')
        if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_LEN or '/' in key:
            raise self.fail(f'invalid storage key {key!r:.100}')
        if not _is_int(numel) or numel < 0:
            raise self.fail(f'invalid element count {numel!r:.100} for storage {key!r}')
        storage = self.storages.get(key)
        if storage is None:
            storage = Storage(key, storage_type, numel)
            size = self._member_size(key)
            if size is None:
                raise self.fail(f'storage {key!r} is missing from the archive (data/{key})')
            if size != storage.nbytes:
                raise self.fail(f'storage {key!r} holds {size} bytes but {storage.nbytes} are declared '
                                f'({numel} x {storage_type.torch_dtype})')
            self.storages[key] = storage
            self.budget += MAX_OUTPUT_FACTOR * storage.nbytes
        elif storage.type is not storage_type or storage.numel != numel:
            raise self.fail(f'storage {key!r} is declared twice with different types or sizes')
        return storage

    def _bytes(self, storage):
        if storage._buf is None:
            object.__setattr__(storage, '_buf', self._read_member(storage.key))
        return storage._buf

    def _int_tuple(self, value, what):
        if not isinstance(value, tuple) or len(value) > _MAX_NDIM or \
                not all(_is_int(v) and v >= 0 for v in value):
            raise self.fail(f'invalid tensor {what} {value!r:.200}')
        return value

    def tensor(self, storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
        """``torch._utils._rebuild_tensor_v2``: the view (offset, size, stride) of ``storage`` as an array."""
        if not isinstance(storage, Storage):
            raise self.fail(f'tensor rebuilt from {type(storage).__name__}, not a storage')
        if metadata:
            raise self.fail(f'tensor metadata {metadata!r:.100} (conjugate/negative views) is not supported')
        size, stride = self._int_tuple(size, 'size'), self._int_tuple(stride, 'stride')
        if len(size) != len(stride):
            raise self.fail(f'tensor size {size} and stride {stride} differ in length')
        if not _is_int(offset) or offset < 0:
            raise self.fail(f'invalid storage offset {offset!r:.100}')
        kind = storage.type
        numel = int(np.prod(size, dtype=object))
        if numel == 0:
            return np.zeros(size, kind.result_dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise self.fail(f'tensor of size {size}, stride {stride} and offset {offset} needs {last + 1} '
                            f'elements of storage {storage.key!r}, which holds {storage.numel}')
        out_bytes = numel * kind.result_dtype.itemsize
        if out_bytes > self.budget + MAX_OUTPUT_SLACK:
            raise self.fail(f'tensors total more bytes than the file can hold ({out_bytes} more requested)')
        self.budget -= out_bytes
        base = np.frombuffer(self._bytes(storage), dtype=kind.file_dtype, count=storage.numel)
        whole = offset == 0 and numel == storage.numel and \
            all(s == e for n, s, e in zip(size, stride, _c_strides(size)) if n != 1)
        if whole and not storage._handed_out:
            array = base.reshape(size)  # the whole storage, in order: no copy
            object.__setattr__(storage, '_handed_out', True)
        else:
            view = np.lib.stride_tricks.as_strided(base[offset:], shape=size,
                                                   strides=tuple(s * kind.itemsize for s in stride),
                                                   writeable=False)
            array = np.array(view, order='C', copy=True)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder('='))
        if kind.torch_dtype == 'bfloat16':
            array = (array.astype(np.uint32) << 16).view(np.float32)
        elif kind.torch_dtype == 'bool':
            array = array.view(np.bool_) if array.max() <= 1 else array != 0
        return array

    def parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        """``torch._utils._rebuild_parameter`` (and ``_with_state``): the tensor itself."""
        if not isinstance(data, np.ndarray):
            raise self.fail(f'parameter built from {type(data).__name__}, not a tensor')
        return data
