"""jseg.utils.torch_format: real torch.save bytes, removed formats, malicious and corrupt files.

The fixtures under tests/fixtures/torch_format were written by PyTorch itself
(tools/dev/make_torch_format_fixtures.py, versions in their README); what torch
reads back from them is stored beside them. Hostile files that exhaust memory
are in test_hostile_checkpoints.py; files tampered with in finer ways are made
here with torch_format_writer (which writes what torch writes).
"""
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), 'fixtures', 'torch_format')
sys.path.insert(0, HERE)
import torch_format_writer as w  # noqa: E402

from jseg.utils.torch_format import TorchFormatError, find_refused, is_refused, load_torch_file  # noqa: E402

READABLE = ['state_dict', 'dtypes', 'views', 'mmseg_checkpoint']


def flatten(obj, path, arrays, leaves):
    """The same flattening as the fixture script, for the reader's tree."""
    if isinstance(obj, np.ndarray):
        arrays[path] = obj
    elif isinstance(obj, dict):
        leaves[path] = [type(obj).__name__, list(map(str, obj))]
        for key, value in obj.items():
            flatten(value, f'{path}/{key}' if path else str(key), arrays, leaves)
    elif isinstance(obj, (list, tuple)):
        leaves[path] = [type(obj).__name__, len(obj)]
        for i, value in enumerate(obj):
            flatten(value, f'{path}/{i}' if path else str(i), arrays, leaves)
    else:
        leaves[path] = [type(obj).__name__, obj]


@pytest.mark.parametrize('name', READABLE)
def test_files_written_by_torch_read_as_torch_reads_them(name):
    tree, refused = load_torch_file(os.path.join(FIXTURES, f'{name}.pth'), return_refused=True)
    assert refused == []
    arrays, leaves = {}, {}
    flatten(tree, '', arrays, leaves)
    with open(os.path.join(FIXTURES, f'{name}.expected.json')) as f:
        assert leaves == json.load(f)  # containers (types, keys, lengths) and plain values
    with np.load(os.path.join(FIXTURES, f'{name}.expected.npz')) as expected:
        assert sorted(arrays) == sorted(expected.files) and arrays
        for key, array in arrays.items():
            want = expected[key]
            assert array.dtype == want.dtype and array.shape == want.shape, key
            assert array.flags.c_contiguous
            np.testing.assert_array_equal(array, want, err_msg=key)
    for i, a in enumerate(list(arrays.values())):  # views of shared storages are copies
        for b in list(arrays.values())[i + 1:]:
            assert a is b or not np.shares_memory(a, b)


def test_torch_fixtures_cover_the_supported_dtypes_and_views():
    with np.load(os.path.join(FIXTURES, 'dtypes.expected.npz')) as f:
        dtypes = {f[k].dtype.name for k in f.files}
    assert dtypes == {'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8', 'bool'}
    tree = load_torch_file(os.path.join(FIXTURES, 'views.pth'))
    base = np.arange(24, dtype=np.float32).reshape(4, 6)  # independent expectation for a few views
    np.testing.assert_array_equal(tree['transpose'], base.T)
    np.testing.assert_array_equal(tree['slice'], base[1:3, ::2])
    np.testing.assert_array_equal(tree['expanded'], np.zeros((3, 4), np.float32))
    assert tree['same_tensor_again'] is tree['base']  # torch memoizes one tensor saved twice
    bf = load_torch_file(os.path.join(FIXTURES, 'dtypes.pth'))['bfloat16']
    assert bf.dtype == np.float32 and np.all((bf.view(np.uint32) & 0xFFFF) == 0)  # exact bfloat16 values


@pytest.mark.parametrize('name, message', [
    ('legacy_format', 'format of torch < 1.6'),
    ('complex', 'unsupported storage type torch.ComplexFloatStorage'),
    ('quantized', 'unsupported storage type torch.QInt8Storage'),
    ('uint16', 'unsupported storage type torch.storage.UntypedStorage'),
    ('torchscript', 'TorchScript archive'),
])
def test_formats_outside_real_checkpoints_are_refused_by_name(name, message):
    path = os.path.join(FIXTURES, f'unsupported_{name}.pth')
    with pytest.raises(TorchFormatError, match=message) as info:
        load_torch_file(path)
    assert str(info.value).startswith(f'{path}: ')


def test_load_a_torch_state_dict_into_a_jittor_model():
    from jittor import nn

    from jseg.runner.checkpoint import load_checkpoint
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    path = os.path.join(FIXTURES, 'state_dict.pth')
    report, meta = load_checkpoint(model, path, strict=True)
    assert report.ok and meta['format'] == 'pytorch'
    with np.load(os.path.join(FIXTURES, 'state_dict.expected.npz')) as expected:
        for name, var in model.state_dict().items():
            np.testing.assert_array_equal(var.numpy(), expected[name])


# ---------------------------------------------------------------------------------------------
# crafted files (made with torch_format_writer)


def save(tmp_path, obj, name='ckpt'):
    path = str(tmp_path / f'{name}.pth')
    w.save_zip(obj, path)
    return path


def expect_error(path, message):
    with pytest.raises(TorchFormatError, match=message) as info:
        load_torch_file(str(path))
    assert str(info.value).startswith(f'{path}: ')


class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_payloads_are_refused_and_never_run(tmp_path):
    sentinel = tmp_path / 'PWNED'
    touch = f'touch {sentinel}'
    payloads = {
        'os.system': _SystemPayload(touch),
        'eval': w.Reduce('builtins', 'eval', (f'open({str(sentinel)!r}, "w")',)),
        'subprocess': w.Reduce('subprocess', 'check_call', (['touch', str(sentinel)],)),
        'getattr_import': w.Reduce('builtins', 'getattr', (w.Reduce('builtins', '__import__', ('os',)), 'system')),
        'instance': w.Instance('os', '_wrap_close', {'_stream': touch}),
        'torch_load': w.Reduce('torch', 'load', ('x',)),
        'numpy': w.Pickled(np.arange(3)),
    }
    path = save(tmp_path, {'state_dict': dict(payloads, w=np.ones(2, np.float32)), 'meta': payloads})
    tree, refused = load_torch_file(path, return_refused=True)
    assert not sentinel.exists()
    assert all(is_refused(tree['state_dict'][k]) and is_refused(tree['meta'][k]) for k in payloads)
    assert {'posix.system', 'builtins.eval', 'subprocess.check_call', 'builtins.getattr', 'builtins.__import__',
            'os._wrap_close', 'torch.load', 'numpy.core.multiarray._reconstruct'} <= set(refused)
    assert dict(find_refused(tree['state_dict']))['os.system'] == 'posix.system'
    np.testing.assert_array_equal(tree['state_dict']['w'], np.ones(2, np.float32))
    from jseg.runner.checkpoint import CheckpointError, checkpoint_state_dict
    with pytest.raises(CheckpointError, match='not tensors'):
        checkpoint_state_dict(path)
    assert not sentinel.exists()


def test_build_applies_only_to_ordered_dicts_and_refused_objects(tmp_path):
    storage = w.Storage(np.ones(2, np.float32))
    for name, attempt in {'tensor': w.Build(w.Tensor(storage), (None, {'shape': (10 ** 9,)})),
                          'array_state': w.Build(w.tensor(np.ones(2, np.float32)), ((1,), None, False, b'')),
                          'storage_type': w.Build(w.Global('torch', 'FloatStorage'), (None, {'name': 'x'})),
                          'rebuild_function': w.Build(w.Global('torch._utils', '_rebuild_tensor_v2'), {'a': 1})
                          }.items():
        expect_error(save(tmp_path, {'x': attempt}, name=name), 'BUILD on')
    tree = load_torch_file(save(tmp_path, {'x': w.Build(w.Reduce('os', 'getcwd', ()), {'a': 1}),
                                           'od': w.Build(w.Reduce('collections', 'OrderedDict', ()), {'_m': 1})}))
    assert is_refused(tree['x']) and tree['od'] == OrderedDict()


BAD_TENSORS = {
    'offset past end': (5, (1,), (1,), 'needs 6 elements'),
    'stride past end': (0, (3,), (3,), 'needs 7 elements'),
    'oversized shape': (0, (2 ** 40, 2 ** 40), (1, 1), 'needs'),
    'negative size': (0, (-1,), (1,), 'invalid tensor size'),
    'negative stride': (4, (2,), (-1,), 'invalid tensor stride'),
    'negative offset': (-1, (1,), (1,), 'invalid storage offset'),
    'rank mismatch': (0, (2, 2), (1,), 'differ in length'),
    'float size': (0, (1.5,), (1,), 'invalid tensor size'),
    'too many dims': (0, (1,) * 17, (1,) * 17, 'invalid tensor size'),
}


@pytest.mark.parametrize('case', sorted(BAD_TENSORS))
def test_inconsistent_tensors_raise(tmp_path, case):
    offset, size, stride, message = BAD_TENSORS[case]
    storage = w.Storage(np.arange(5, dtype=np.float32))
    expect_error(save(tmp_path, {'good': np.ones(1, np.float32), 'bad': w.Tensor(storage, offset, size, stride)}),
                 message)


def test_bad_rebuild_arguments_and_removed_features_raise(tmp_path):
    storage = w.Storage(np.arange(4, dtype=np.float32))
    cases = {
        'not_a_storage': (w.Reduce('torch._utils', '_rebuild_tensor_v2', ('abc', 0, (1,), (1,), False,
                                                                           OrderedDict())), 'not a storage'),
        'metadata': (w.Tensor(storage, metadata={'neg': True}), 'tensor metadata'),
        'parameter_of_junk': (w.Reduce('torch._utils', '_rebuild_parameter', ('x', True, OrderedDict())),
                              'not a tensor'),
        'too_few_args': (w.Reduce('torch._utils', '_rebuild_tensor_v2', (storage,)), 'invalid pickle data'),
        'untyped_v3': (w.tensor(np.arange(3, dtype=np.uint16)), 'UntypedStorage'),
    }
    for name, (obj, message) in cases.items():
        expect_error(save(tmp_path, {'x': obj}, name=name), message)


def test_corrupt_and_foreign_archives(tmp_path):
    sample = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.ones(3, np.int64)}
    records = w.zip_records(sample)

    def write(name, recs):
        path = tmp_path / f'{name}.pth'
        path.write_bytes(w.zip_archive(recs))
        return path

    expect_error(write('short_storage', [(n, d[:-4] if n == 'archive/data/0' else d) for n, d in records]),
                 "storage '0' holds 20 bytes but 24 are declared")
    expect_error(write('missing_storage', [(n, d) for n, d in records if n != 'archive/data/1']),
                 "storage '1' is missing from the archive")
    expect_error(write('no_pickle', [(n, d) for n, d in records if not n.endswith('data.pkl')]), 'found 0')
    expect_error(write('two_pickles', records + [('other/data.pkl', b'')]), 'found 2')
    expect_error(write('duplicate', records + records[-1:]), 'two members named')
    expect_error(write('big_endian', [(n, b'big' if n.endswith('byteorder') else d) for n, d in records]),
                 'only little-endian')
    expect_error(write('control_name', records + [('archive/x\ny', b'')]), 'control characters')  # found by fuzzing
    data = bytearray(w.zip_archive(records))
    central = data.index(b'PK\x01\x02')
    data[central + 42:central + 46] = (0xFFFFFFF0).to_bytes(4, 'little')  # local header offset (found by fuzzing)
    (tmp_path / 'offset.pth').write_bytes(bytes(data))
    expect_error(tmp_path / 'offset.pth', 'outside the file')
    data = bytearray(w.zip_archive(records))
    data[data.index(sample['a'].tobytes()) + 5] ^= 0xFF
    (tmp_path / 'crc.pth').write_bytes(bytes(data))
    expect_error(tmp_path / 'crc.pth', 'CRC mismatch')
    full = w.zip_archive(records)
    for cut in (len(full) // 2, len(full) - 10, 100):
        (tmp_path / f'cut{cut}.pth').write_bytes(full[:cut])
        expect_error(tmp_path / f'cut{cut}.pth', 'zip')
    for name, content, message in [('empty', b'', 'not a PyTorch file'), ('text', b'hello', 'not a PyTorch file'),
                                   ('pickle', b'\x80\x02}q\x00.', 'format of torch < 1.6')]:
        (tmp_path / f'{name}.pth').write_bytes(content)
        expect_error(tmp_path / f'{name}.pth', message)
    expect_error(tmp_path / 'missing.pth', 'cannot read file')
    without_byteorder = load_torch_file(str(write('no_byteorder', [r for r in records if 'byteorder' not in r[0]])))
    np.testing.assert_array_equal(without_byteorder['a'], sample['a'])  # little-endian, as torch assumes


@pytest.mark.parametrize('pickle_bytes, message', [
    (b'\x80\x02K\x01r\xf0\xff\xff\x7f.', 'memo index'),  # LONG_BINPUT 2**31-16
    (b'\x80\x02h\x05.', 'never written'),  # BINGET of an empty slot
    (b'\x80\x02\x82\x01.', 'EXT1'),
    (b'\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.', 'FRAME'),
    (b'\x80\x02X\xff\xff\xff\x7fabc', 'corrupt or truncated'),  # BINUNICODE claiming 2 GB
    (b'\x80\x02K\x01', 'corrupt or truncated'),  # no STOP
    (b'\x80\x02\xff.', 'corrupt or truncated'),
    (b'\x80\x02e.', 'without MARK'),
    (b'\x80\x02' + b']' * 101 + b'a' * 100 + b'.', 'nested more than 100'),  # lists 101 deep
    (b'\x80\x02)' + b'\x85' * 101 + b'.', 'nested more than 100'),  # tuples 101 deep
    (b'\x80\x02cos\nsystem\nq\x00}q\x01b.', 'BUILD on global os.system'),
    (b'\x80\x02K\x01}b.', 'BUILD on a built-in value'),
])
def test_crafted_pickles_are_refused_before_unpickling(tmp_path, pickle_bytes, message):
    path = tmp_path / 'crafted.pth'
    path.write_bytes(w.zip_archive([('archive/data.pkl', pickle_bytes), ('archive/version', b'3\n')]))
    expect_error(path, message)
