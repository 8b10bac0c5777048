"""Hand-made hostile checkpoint files, one per attack class of issue 11 (items 2 and 3).

Each builder writes a small file into a folder and returns ``(path, pattern)``:
the error message expected when jseg reads it. The files stay small on disk
(bombs inflate to :data:`BOMB_BYTES`), and no builder holds more than a chunk
of the inflated data in memory.
"""
import json
import os
import struct
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_format_writer as w  # noqa: E402

BOMB_BYTES = 128 << 20
_CHUNK = 1 << 22


def _npy_header(shape, dtype='<f4'):
    """A version 1.0 ``.npy`` header for an array of ``shape``."""
    text = repr({'descr': dtype, 'fortran_order': False, 'shape': tuple(shape)}).encode('latin1')
    text += b' ' * (-(10 + len(text) + 1) % 64) + b'\n'
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(text)) + text


def _jseg_meta():
    return np.frombuffer(json.dumps({'format': 'jseg-checkpoint', 'format_version': 1}).encode(), np.uint8)


def _write_zeros(zf, name, header, nbytes, compress):
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zf.open(info, 'w', force_zip64=True) as out:
        out.write(header)
        zeros = bytes(_CHUNK)
        for start in range(0, nbytes, _CHUNK):
            out.write(zeros[:min(_CHUNK, nbytes - start)])


def _storage_pickle(numel):
    """``{'w': tensor}`` over storage '0' declared with ``numel`` float32 elements (no data written)."""
    storage = w.Storage(np.zeros(1, np.float32))
    storage.numel = numel
    return dict(w.zip_records({'w': w.Tensor(storage, 0, (numel,), (1,))}))['archive/data.pkl']


def _set_central_sizes(data, name, size):
    """Patch the central-directory sizes of member ``name`` (not its data)."""
    data = bytearray(data)
    pos = 0
    while True:
        pos = data.index(b'PK\x01\x02', pos)
        length = struct.unpack_from('<H', data, pos + 28)[0]
        if data[pos + 46:pos + 46 + length] == name.encode():
            struct.pack_into('<II', data, pos + 20, size, size)
            return bytes(data)
        pos += 4


def huge_declared_pth_member(folder):
    """A tiny .pth whose zip directory declares a 300 MB storage member."""
    nbytes = 300_000_000
    records = [(n, _storage_pickle(nbytes // 4) if n.endswith('data.pkl') else d)
               for n, d in w.zip_records({'w': np.zeros(1, np.float32)})]
    path = os.path.join(folder, 'huge_declared_member.pth')
    with open(path, 'wb') as f:
        f.write(_set_central_sizes(w.zip_archive(records), 'archive/data/0', nbytes))
    return path, 'declares 300000000 bytes but the file holds only'


def deflated_pth_bomb(folder):
    """A .pth whose storage member is deflated: a few hundred KB inflating to BOMB_BYTES."""
    path = os.path.join(folder, 'deflated_bomb.pth')
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/data.pkl', _storage_pickle(BOMB_BYTES // 4))
        _write_zeros(zf, 'archive/data/0', b'', BOMB_BYTES, compress=True)
        zf.writestr('archive/version', b'3\n')
    return path, r'archive/data/0 is compressed'


def npz_compressed_bomb(folder, where='model/w'):
    """A jseg .npz (np.savez_compressed layout) whose member ``where`` inflates to BOMB_BYTES."""
    path = os.path.join(folder, f'npz_bomb_{where.replace("/", "_")}.npz')
    with zipfile.ZipFile(path, 'w') as zf:
        meta = _jseg_meta()
        zf.writestr('__meta__.npy', _npy_header(meta.shape, '|u1') + meta.tobytes())
        zf.writestr('model/ok.npy', _npy_header((2,)) + np.ones(2, np.float32).tobytes())
        _write_zeros(zf, f'{where}.npy', _npy_header((BOMB_BYTES // 4,)), BOMB_BYTES, compress=True)
    return path, f'{where}.npy is compressed'


def npz_huge_declared_array(folder):
    """A jseg .npz whose .npy header declares a 300 MB array in a 16-byte member."""
    path = os.path.join(folder, 'npz_huge_declared_array.npz')
    with zipfile.ZipFile(path, 'w') as zf:
        meta = _jseg_meta()
        zf.writestr('__meta__.npy', _npy_header(meta.shape, '|u1') + meta.tobytes())
        zf.writestr('model/w.npy', _npy_header((75_000_000,)) + bytes(16))
    return path, r'model/w.npy declares shape \(75000000,\)'


def npz_huge_declared_member(folder):
    """A jseg .npz whose zip directory declares a 300 MB member."""
    path = os.path.join(folder, 'npz_huge_declared_member.npz')
    meta = _jseg_meta()
    records = [('__meta__.npy', _npy_header(meta.shape, '|u1') + meta.tobytes()),
               ('model/w.npy', _npy_header((75_000_000,)) + bytes(16))]
    with open(path, 'wb') as f:
        f.write(_set_central_sizes(w.zip_archive(records), 'model/w.npy', 300_000_128))
    return path, 'declares 300000128 bytes but the file holds only'


def deep_tuple_key(folder, depth=3_000_000):
    """A .pth whose pickle has a dict key that is a tuple nested ``depth`` deep (C recursion in hash: SIGSEGV at 3 million levels)."""
    pkl = b'\x80\x02}' + b')' + b'\x85' * depth + b'K\x01s.'  # {((...(),),): 1}
    path = os.path.join(folder, 'deep_tuple_key.pth')
    with open(path, 'wb') as f:
        f.write(w.zip_archive([('archive/data.pkl', pkl), ('archive/version', b'3\n')]))
    return path, 'nested more than'


def many_objects(folder, count=1 << 21):
    """A 2 MB pickle of two million empty dicts in a list (about 150 MB of Python objects)."""
    path = os.path.join(folder, 'many_objects.pth')
    with open(path, 'wb') as f:
        f.write(torch_format_writer_archive(b'\x80\x02(' + b'}' * count + b'l.'))
    return path, 'more than 524288 opcodes'


def torch_format_writer_archive(pickle_bytes):
    return w.zip_archive([('archive/data.pkl', pickle_bytes), ('archive/version', b'3\n')])


def huge_memo_index(folder):
    """A pickle writing memo slot 2**31 - 16 (the C unpickler would allocate the memo that large)."""
    path = os.path.join(folder, 'huge_memo_index.pth')
    with open(path, 'wb') as f:
        f.write(w.zip_archive([('archive/data.pkl', b'\x80\x02K\x01r\xf0\xff\xff\x7f.'), ('archive/version', b'3\n')]))
    return path, 'memo index'


def expanded_tensor_bomb(folder):
    """A 4-byte storage viewed with stride 0 as a 10**5 x 10**4 tensor (4 GB)."""
    storage = w.Storage(np.zeros(1, np.float32))
    path = os.path.join(folder, 'expanded_bomb.pth')
    w.save_zip({'w': w.Tensor(storage, 0, (10 ** 5, 10 ** 4), (0, 0))}, path)
    return path, 'more bytes than the file can hold'


BUILDERS = [huge_declared_pth_member, deflated_pth_bomb, npz_compressed_bomb, npz_huge_declared_array,
            npz_huge_declared_member, deep_tuple_key, many_objects, huge_memo_index, expanded_tensor_bomb]
