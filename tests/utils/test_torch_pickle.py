"""jseg.utils.torch_pickle: reading torch.save files safely, on files made by torch_format_writer."""
import os
import pickle
import struct
import sys
import time
from collections import OrderedDict

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_format_writer as w  # noqa: E402

from jseg.utils import torch_pickle as tp  # noqa: E402
from jseg.utils.torch_pickle import TorchPickleError, find_refused, is_refused, load_torch_file  # noqa: E402

FORMATS = ['zip', 'legacy']


def save(tmp_path, obj, fmt, name='ckpt'):
    path = tmp_path / f'{name}_{fmt}.pth'
    (w.save_zip if fmt == 'zip' else w.save_legacy)(obj, str(path))
    return str(path)


def assert_array(actual, expected):
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.flags.c_contiguous
    np.testing.assert_array_equal(actual, expected)


def random_values(dtype, shape, rng):
    if dtype == 'bool':
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith('complex'):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.startswith('float'):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize('fmt', FORMATS)
def test_every_dtype_round_trips(tmp_path, fmt):
    rng = np.random.default_rng(0)
    tree, expected = OrderedDict(), {}
    for dtype in ('float32', 'float64', 'float16', 'complex64', 'complex128', 'int8', 'int16', 'int32', 'int64',
                  'uint8', 'uint16', 'uint32', 'uint64', 'bool'):
        tree[dtype] = expected[dtype] = random_values(dtype, (3, 4), rng)
    tree['float16_special'] = expected['float16_special'] = np.array([np.inf, -np.inf, 65504, 6e-8, -0.0],
                                                                     np.float16)
    bf16 = np.array([[1.0, -2.5, 3.14159, 1e30], [-1e-30, 0.0, 65504.0, -7.0]], np.float32)
    bits = w.bfloat16_bits(bf16)
    tree['bfloat16'] = w.tensor(bits, 'bfloat16')
    expected['bfloat16'] = (bits.astype(np.uint32) << 16).view(np.float32)  # bfloat16 -> float32 is exact
    loaded = load_torch_file(save(tmp_path, tree, fmt))
    assert type(loaded) is OrderedDict and list(loaded) == list(tree)
    for key, value in expected.items():
        assert_array(loaded[key], value)
    np.testing.assert_allclose(loaded['bfloat16'], bf16, rtol=2 ** -8)


@pytest.mark.parametrize('fmt', FORMATS)
def test_containers_and_scalars_round_trip(tmp_path, fmt):
    tree = OrderedDict([
        ('ints', [0, 1, -1, 255, 65536, -2 ** 31, 2 ** 40, -2 ** 70]),
        ('floats', (0.5, -1e-300, float('inf'))),
        ('text', 'héllo wörld'), ('none', None), ('bools', [True, False]),
        ('bytes', b'\x00\xff\x80abc'), ('empty_bytes', b''), ('bytearray', bytearray(b'xy')),
        ('set', {1, 2, 3}), ('frozenset', frozenset({'a'})), ('complex', 1.5 - 2j),
        ('od', OrderedDict([('z', 1), ('a', [])])), ('nested', {'a': {'b': [np.ones(2, np.float32), ({}, ())]}}),
        ('tuple1', (1,)), ('tuple4', (1, 2, 3, 4)), ('int_keys', {0: 'x', 1: 'y'}),
    ])
    loaded = load_torch_file(save(tmp_path, tree, fmt))
    assert type(loaded) is OrderedDict
    for key in tree:
        if key == 'nested':
            continue
        assert loaded[key] == tree[key] and type(loaded[key]) is type(tree[key]), key
    assert type(loaded['od']) is OrderedDict and list(loaded['od']) == ['z', 'a']
    inner = loaded['nested']['a']['b']
    assert_array(inner[0], np.ones(2, np.float32))
    assert inner[1] == ({}, ()) and type(inner[1]) is tuple


@pytest.mark.parametrize('fmt', FORMATS)
def test_views_of_one_storage(tmp_path, fmt):
    flat = np.arange(24, dtype=np.float32)
    base = w.tensor(flat.reshape(4, 6))
    views = {  # name: (offset, size, stride)
        'slice': (6, (2, 3), (6, 2)), 'row': (12, (6,), (1,)), 'transpose': (0, (6, 4), (1, 6)),
        'scalar': (23, (), ()), 'expanded': (5, (3, 4), (0, 0)), 'tail': (20, (4,), (1,)),
        'empty_past_end': (24, (0,), (1,)), 'overlapping': (0, (5, 4), (4, 1)),
    }
    tree = {'base': base, 'twin': base.view(0, (24,), (1,))}
    tree.update({name: base.view(*spec) for name, spec in views.items()})
    loaded = load_torch_file(save(tmp_path, tree, fmt))
    assert_array(loaded['base'], flat.reshape(4, 6))
    assert_array(loaded['twin'], flat)
    for name, (offset, size, stride) in views.items():
        expected = np.lib.stride_tricks.as_strided(flat[offset:], size, [4 * s for s in stride]) if size != (0,) \
            else np.zeros(0, np.float32)
        assert_array(loaded[name], expected)
    arrays = list(loaded.values())
    for i, a in enumerate(arrays):  # every array owns its memory
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)
    loaded['base'][0, 0] = 100
    assert loaded['twin'][0] == 0 and loaded['transpose'][0, 0] == 0


@pytest.mark.parametrize('fmt', FORMATS)
def test_zero_d_empty_parameters_and_tensor_variants(tmp_path, fmt):
    storage = w.Storage(np.array([1.0, 2.0, 3.0], np.float32))
    tree = {
        'scalar': np.array(2.5, np.float32), 'scalar_half': np.array(-1.5, np.float16),
        'scalar_long': np.array(7, np.int64), 'empty': np.zeros(0, np.float32),
        'empty_3d': np.zeros((2, 0, 3), np.int32),
        'param': w.Parameter(np.ones((2, 2), np.float32)), 'frozen': w.Parameter(np.zeros(3), False),
        'conj': w.Tensor(w.Storage(np.array([1 + 2j, 3 - 4j], np.complex64)), metadata={'conj': True}),
        'neg': w.Tensor(w.Storage(np.array([1.0, -2.0], np.float32)), metadata={'neg': True}),
        'with_attrs': w.Reduce('torch._tensor', '_rebuild_from_type_v2', (
            w.Global('torch._utils', '_rebuild_tensor_v2'), w.Global('torch', 'Tensor'),
            (storage, 0, (3,), (1,), False, OrderedDict()), {'note': 1})),
        'param_with_state': w.Reduce('torch._utils', '_rebuild_parameter_with_state', (
            w.Tensor(storage, 1, (2,), (1,)), True, OrderedDict(), {'tag': 'x'})),
        'old_rebuild': w.Reduce('torch._utils', '_rebuild_tensor', (storage, 2, (1,), (1,))),
        'size': w.Reduce('torch', 'Size', ([2, 3],)), 'device': w.Reduce('torch', 'device', ('cuda', 1)),
        'dtype': w.Global('torch', 'bfloat16'),
        'gpu_saved': w.tensor(np.arange(3, dtype=np.int16)),
    }
    tree['gpu_saved'].storage.location = 'cuda:0'
    loaded = load_torch_file(save(tmp_path, tree, fmt))
    assert_array(loaded['scalar'], np.array(2.5, np.float32))
    assert_array(loaded['scalar_half'], np.array(-1.5, np.float16))
    assert_array(loaded['scalar_long'], np.array(7, np.int64))
    assert_array(loaded['empty'], np.zeros(0, np.float32))
    assert_array(loaded['empty_3d'], np.zeros((2, 0, 3), np.int32))
    assert_array(loaded['param'], np.ones((2, 2), np.float32))
    assert_array(loaded['frozen'], np.zeros(3))
    assert_array(loaded['conj'], np.array([1 - 2j, 3 + 4j], np.complex64))
    assert_array(loaded['neg'], np.array([-1.0, 2.0], np.float32))
    assert_array(loaded['with_attrs'], np.array([1.0, 2.0, 3.0], np.float32))
    assert_array(loaded['param_with_state'], np.array([2.0, 3.0], np.float32))
    assert_array(loaded['old_rebuild'], np.array([3.0], np.float32))
    assert loaded['size'] == (2, 3) and loaded['device'] == 'cuda:1'
    assert isinstance(loaded['dtype'], tp.TorchDtype) and repr(loaded['dtype']) == 'torch.bfloat16'
    assert_array(loaded['gpu_saved'], np.arange(3, dtype=np.int16))


def test_any_archive_name_and_big_endian_records(tmp_path):
    values = np.array([1.5, -2.0, 3.25], np.float64)
    bf = w.bfloat16_bits([1.0, -3.0])
    tree = {'f': values, 'i': np.array([1, -2], np.int32), 'bf': w.tensor(bf, 'bfloat16'), 'b': np.array([True])}
    path = tmp_path / 'x.pth'
    path.write_bytes(w.zip_bytes(tree, archive_name='some_other-name', byteorder='big'))
    loaded = load_torch_file(str(path))
    assert_array(loaded['f'], values)
    assert_array(loaded['i'], np.array([1, -2], np.int32))
    assert_array(loaded['bf'], np.array([1.0, -3.0], np.float32))
    assert_array(loaded['b'], np.array([True]))


# ---------------------------------------------------------------------------------------------
# mmengine-style checkpoints: weights load, other objects are refused by name


def mmengine_checkpoint():
    history = w.Pickled(np.arange(4.0))
    return {
        'meta': {'epoch': 3, 'iter': 160000, 'mmseg_version': '1.2.2', 'cfg': 'model = dict(type="X")',
                 'dataset_meta': {'classes': ('road', 'car'), 'palette': [[1, 2, 3], [4, 5, 6]]},
                 'seed': w.Pickled(np.int64(42)), 'hook_msgs': {'best_score': w.Pickled(np.float64(0.5))}},
        'state_dict': OrderedDict([('backbone.conv.weight', np.full((2, 1, 3, 3), 0.5, np.float32)),
                                   ('decode_head.bias', w.Parameter(np.array([1.0, 2.0], np.float32))),
                                   ('bn.num_batches_tracked', np.array(10, np.int64))]),
        'message_hub': {'log_scalars': OrderedDict(loss=w.Instance(
            'mmengine.logging.history_buffer', 'HistoryBuffer',
            {'_log_history': history, '_count_history': history, '_max_length': 1000000})),
            'runtime_info': {'iter': 160000}},
        'optimizer': {'state': {0: {'step': np.array(3.0, np.float32), 'exp_avg': np.zeros(2, np.float32)}},
                      'param_groups': [{'lr': 0.01, 'params': [0]}]},
        'param_schedulers': [{'last_step': 10}],
    }


@pytest.mark.parametrize('fmt', FORMATS)
def test_mmengine_checkpoint(tmp_path, fmt):
    tree, refused = load_torch_file(save(tmp_path, mmengine_checkpoint(), fmt), return_refused=True)
    state = tree['state_dict']
    assert_array(state['backbone.conv.weight'], np.full((2, 1, 3, 3), 0.5, np.float32))
    assert_array(state['decode_head.bias'], np.array([1.0, 2.0], np.float32))
    assert_array(state['bn.num_batches_tracked'], np.array(10, np.int64))
    assert find_refused(state) == []
    assert refused == ['mmengine.logging.history_buffer.HistoryBuffer', 'numpy.core.multiarray._reconstruct',
                       'numpy.core.multiarray.scalar', 'numpy.dtype', 'numpy.ndarray']
    assert tree['meta']['epoch'] == 3 and tree['meta']['dataset_meta']['classes'] == ('road', 'car')
    buffer = tree['message_hub']['log_scalars']['loss']
    assert is_refused(buffer) and 'HistoryBuffer' in repr(buffer)
    paths = dict(find_refused(tree))
    assert paths['message_hub.log_scalars.loss'] == 'mmengine.logging.history_buffer.HistoryBuffer'
    assert paths['meta.seed'] == 'numpy.core.multiarray.scalar'
    assert_array(tree['optimizer']['state'][0]['exp_avg'], np.zeros(2, np.float32))


def test_checkpoint_module_reports_ignored_objects(tmp_path):
    import logging

    from jseg.runner.checkpoint import CheckpointError, checkpoint_state_dict
    from jseg.utils.logging import get_logger

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    path = save(tmp_path, mmengine_checkpoint(), 'zip')
    logger, handler = get_logger(), Collect()
    logger.addHandler(handler)
    try:
        state, meta = checkpoint_state_dict(path)
    finally:
        logger.removeHandler(handler)
    assert any('ignored non-weight objects: mmengine.logging.history_buffer.HistoryBuffer, numpy' in m
               for m in handler.messages), handler.messages
    assert sorted(state) == ['backbone.conv.weight', 'bn.num_batches_tracked', 'decode_head.bias']
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in meta['refused_globals']
    ckpt = mmengine_checkpoint()
    ckpt['state_dict']['decode_head.weight'] = w.Reduce('numpy.core.multiarray', '_reconstruct', ())
    bad = save(tmp_path, ckpt, 'legacy', name='bad')
    with pytest.raises(CheckpointError, match=r'decode_head\.weight.*numpy\.core\.multiarray\._reconstruct'):
        checkpoint_state_dict(bad)


# ---------------------------------------------------------------------------------------------
# malicious files


class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_objects(sentinel):
    touch = f'touch {sentinel}'
    return {
        'os.system': _SystemPayload(touch),
        'eval': w.Reduce('builtins', 'eval', (f'open({str(sentinel)!r}, "w")',)),
        'exec': w.Reduce('builtins', 'exec', (f'open({str(sentinel)!r}, "w")',)),
        'subprocess': w.Reduce('subprocess', 'check_call', (['touch', str(sentinel)],)),
        'popen': w.Reduce('subprocess', 'Popen', (touch,), state={'shell': True}),
        'getattr_import': w.Reduce('builtins', 'getattr', (w.Reduce('builtins', '__import__', ('os',)), 'system')),
        'called_getattr': w.Reduce('builtins', 'apply', (w.Reduce('builtins', 'getattr', (
            w.Reduce('builtins', '__import__', ('os',)), 'system')), (touch,))),
        'posix': w.Reduce('posix', 'system', (touch,)),
        'instance': w.Instance('os', '_wrap_close', {'_stream': touch}),
        'py2_name': w.Reduce('__builtin__', 'eval', ('1',)),
        'torch_other': w.Reduce('torch', 'load', ('x',)),
        'torch_hub': w.Reduce('torch.hub', 'load', ('x',)),
    }


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('where', ['top', 'state_dict'])
def test_malicious_payloads_are_refused(tmp_path, fmt, where):
    sentinel = tmp_path / 'PWNED'
    payloads = malicious_objects(sentinel)
    if where == 'top':
        tree = dict(payloads, state_dict={'w': np.ones(2, np.float32)})
    else:
        tree = {'state_dict': dict(payloads, w=np.ones(2, np.float32))}
    loaded, refused = load_torch_file(save(tmp_path, tree, fmt), return_refused=True)
    assert not sentinel.exists()
    holder = loaded if where == 'top' else loaded['state_dict']
    for key in payloads:
        assert is_refused(holder[key]), key
    assert_array(loaded['state_dict']['w'], np.ones(2, np.float32))
    assert {'posix.system', 'builtins.eval', 'builtins.exec', 'subprocess.check_call', 'subprocess.Popen',
            'builtins.getattr', 'builtins.__import__', 'os._wrap_close', 'torch.load',
            'torch.hub.load'} <= set(refused)
    assert 'posix.system' in repr(holder['os.system'])
    if where == 'state_dict':
        from jseg.runner.checkpoint import CheckpointError, checkpoint_state_dict
        with pytest.raises(CheckpointError, match='not tensors'):
            checkpoint_state_dict(save(tmp_path, tree, fmt, name='again'))
        assert not sentinel.exists()


@pytest.mark.parametrize('fmt', FORMATS)
def test_bare_refused_global_and_module_pickles(tmp_path, fmt):
    tree = {'cls': w.Global('os', 'system'), 'call_result': w.Reduce('os', 'getcwd', ())}
    loaded, refused = load_torch_file(save(tmp_path, tree, fmt), return_refused=True)
    assert is_refused(loaded['cls']) and repr(loaded['cls']) == '<refused global os.system>'
    assert is_refused(loaded['call_result']) and repr(loaded['call_result']) == '<refused object os.getcwd>'
    assert refused == ['os.getcwd', 'os.system']
    import copy
    copied = copy.deepcopy(loaded)  # markers survive copying (and pickling) of a loaded tree
    assert is_refused(copied['call_result']) and copied['call_result'].refused_name == 'os.getcwd'
    assert is_refused(pickle.loads(pickle.dumps(loaded['call_result'])))


@pytest.mark.parametrize('fmt', FORMATS)
def test_build_cannot_alter_reader_objects(tmp_path, fmt):
    """BUILD on objects the reader hands out (dtypes, storages, functions) fails instead of mutating them."""
    storage = w.Storage(np.ones(2, np.float32))
    attempts = {
        'mutate_dtype': w.Build(w.Global('torch', 'float32'), {'itemsize': 1}),
        'mutate_dtype_slots': w.Build(w.Global('torch', 'float32'), (None, {'itemsize': 1})),
        'mutate_storage_type': w.Build(w.Global('torch', 'FloatStorage'), (None, {'name': 'x'})),
        'mutate_storage': w.Build(storage, (None, {'nbytes': 10 ** 6})),
        'mutate_rebuild': w.Build(w.Global('torch._utils', '_rebuild_tensor_v2'), (None, {'__defaults__': (1,)})),
        'mutate_ordered_dict': w.Build(w.Global('collections', 'OrderedDict'), (None, {'x': 1})),
        'mutate_placeholder_class': w.Build(w.Global('os', 'system'), (None, {'refused_name': 'x'})),
    }
    for name, attempt in attempts.items():
        path = save(tmp_path, {'s': w.Tensor(storage), 'x': attempt, 't': w.Tensor(storage)}, fmt, name=name)
        with pytest.raises(TorchPickleError, match=name):
            load_torch_file(path)
    assert repr(tp._DTYPES['float32']) == 'torch.float32' and tp._DTYPES['float32'].itemsize == 4
    assert_array(load_torch_file(save(tmp_path, {'s': w.Tensor(storage)}, fmt))['s'], np.ones(2, np.float32))
    # BUILD on a refused object is accepted and discarded
    loaded = load_torch_file(save(tmp_path, {'x': w.Build(w.Reduce('os', 'getcwd', ()), {'a': 1})}, fmt, 'ok'))
    assert is_refused(loaded['x'])


def test_crafted_pickle_opcodes_are_refused_quickly(tmp_path):
    def zip_with_pickle(data, name):
        path = tmp_path / f'{name}.pth'
        path.write_bytes(w.zip_archive([('archive/data.pkl', data), ('archive/version', b'3\n')]))
        return str(path)

    cases = {
        'memo index': b'\x80\x02K\x01r\xf0\xff\xff\x7f.',  # LONG_BINPUT 2**31-16: a huge memo allocation
        'EXT1': b'\x80\x02\x82\x01.',
        'truncated': b'\x80\x02X\xff\xff\xff\x7fabc',  # BINUNICODE claiming 2 GB
        'no STOP': b'\x80\x02K\x01',
        'string persistent id': b'\x80\x02P0\n.',
        'bad opcode': b'\x80\x02\xff.',
    }
    for name, data in cases.items():
        start = time.perf_counter()
        with pytest.raises(TorchPickleError, match=f'{name.replace(" ", "_")}.pth'):
            load_torch_file(zip_with_pickle(data, name.replace(' ', '_')))
        assert time.perf_counter() - start < 1.0, name


# ---------------------------------------------------------------------------------------------
# inconsistent tensors (torch globals fed bad arguments)


BAD_TENSORS = {
    'offset past end': (5, (1,), (1,), 'needs 6 elements'),
    'stride past end': (0, (3,), (3,), 'needs 7 elements'),
    'oversized shape': (0, (2 ** 40, 2 ** 40), (1, 1), 'needs'),
    'negative size': (0, (-1,), (1,), 'invalid tensor size'),
    'negative stride': (4, (2,), (-1,), 'invalid tensor stride'),
    'negative offset': (-1, (1,), (1,), 'invalid storage offset'),
    'rank mismatch': (0, (2, 2), (1,), 'differ in length'),
    'float size': (0, (1.5,), (1,), 'invalid tensor size'),
    'too many dims': (0, (1,) * 65, (1,) * 65, 'invalid tensor size'),
    'expansion bomb': (0, (10 ** 6, 10 ** 6), (0, 0), 'more bytes than allowed'),
}


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('case', sorted(BAD_TENSORS))
def test_inconsistent_tensors_raise(tmp_path, fmt, case):
    offset, size, stride, message = BAD_TENSORS[case]
    storage = w.Storage(np.arange(5, dtype=np.float32))
    path = save(tmp_path, {'good': np.ones(1, np.float32), 'bad': w.Tensor(storage, offset, size, stride)}, fmt)
    with pytest.raises(TorchPickleError, match=message) as info:
        load_torch_file(path)
    assert path in str(info.value)


@pytest.mark.parametrize('fmt', FORMATS)
def test_bad_rebuild_arguments_raise(tmp_path, fmt):
    storage = w.Storage(np.arange(4, dtype=np.float32))
    cases = {
        'not a storage': (w.Reduce('torch._utils', '_rebuild_tensor_v2', ('abc', 0, (1,), (1,), False,
                                                                           OrderedDict())), 'not a storage'),
        'refused dtype': (w.Reduce('torch._utils', '_rebuild_tensor_v3', (
            w.Storage(np.zeros(4, np.uint8)), 0, (1,), (1,), False, OrderedDict(), w.Global('numpy', 'float32'))),
            'invalid tensor dtype'),
        'float8': (w.Reduce('torch._utils', '_rebuild_tensor_v3', (
            w.Storage(np.zeros(4, np.uint16), 'uint16'), 0, (2,), (1,), False, OrderedDict(),
            w.Global('torch', 'float8_e4m3fn'))), 'float8_e4m3fn is not supported'),
        'metadata': (w.Tensor(storage, metadata={'evil': True}), 'unsupported tensor metadata'),
        'parameter of junk': (w.Reduce('torch._utils', '_rebuild_parameter', ('x', True, OrderedDict())),
                              'not a tensor'),
        'too few args': (w.Reduce('torch._utils', '_rebuild_tensor_v2', (storage,)), 'invalid pickle data'),
        'from_type junk': (w.Reduce('torch._tensor', '_rebuild_from_type_v2', (
            w.Global('torch', 'Size'), w.Global('torch', 'Tensor'), (), {})), '_rebuild_from_type_v2'),
        'bytearray size': (w.Reduce('builtins', 'bytearray', (10 ** 12,)), 'unsupported arguments'),
        'set of junk': (w.Reduce('builtins', 'set', ('abc',)), 'builtins.set'),
        'device junk': (w.Reduce('torch', 'device', (1, 2)), 'torch.device'),
    }
    for name, (obj, message) in cases.items():
        path = save(tmp_path, {'x': obj}, fmt, name=name.replace(' ', '_'))
        with pytest.raises(TorchPickleError, match=message) as info:
            load_torch_file(path)
        assert path in str(info.value), name


def test_repeated_views_are_bounded(tmp_path, monkeypatch):
    storage = w.Storage(np.zeros(1000, np.float32))
    tree = [w.Tensor(storage) for _ in range(50)]
    path = save(tmp_path, tree, 'zip')
    assert len(load_torch_file(path)) == 50
    monkeypatch.setattr(tp, 'MAX_OUTPUT_SLACK', 0)
    with pytest.raises(TorchPickleError, match='more bytes than allowed'):
        load_torch_file(path)


def test_storage_dtype_conflicts_and_unknown_storage_types(tmp_path):
    records = w.zip_records({'a': np.ones(2, np.float32)})
    pkl = dict(records)['archive/data.pkl']
    for i, (old, new, message) in enumerate([(b'FloatStorage', b'EvilStorage', 'unknown storage type'),
                                             (b'FloatStorage', b'QInt32Storage', 'torch.qint32 is not supported'),
                                             (b'torch\nFloat', b'numpy\nFloat', 'unknown storage type')]):
        path = tmp_path / f'case{i}.pth'
        path.write_bytes(w.zip_archive([(n, pkl.replace(old, new) if n.endswith('.pkl') else d)
                                        for n, d in records]))
        with pytest.raises(TorchPickleError, match=message):
            load_torch_file(str(path))


# ---------------------------------------------------------------------------------------------
# corrupt files


@pytest.fixture
def sample():
    return {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.ones(3, np.int64)}


def expect_error(path, message):
    with pytest.raises(TorchPickleError, match=message) as info:
        load_torch_file(str(path))
    assert str(path) in str(info.value)
    return info.value


def test_truncated_and_foreign_files(tmp_path, sample):
    data = w.zip_bytes(sample)
    for cut in (len(data) // 2, len(data) - 10, 100):
        path = tmp_path / f'cut{cut}.pth'
        path.write_bytes(data[:cut])
        expect_error(path, 'zip')
    legacy = w.legacy_bytes(sample)
    for cut in (len(legacy) - 4, len(legacy) // 2, 40, 3):
        path = tmp_path / f'legacy_cut{cut}.pth'
        path.write_bytes(legacy[:cut])
        expect_error(path, 'truncated|corrupt')
    for name, content, message in [('empty', b'', 'not a PyTorch file'), ('text', b'hello world', 'not a PyTorch'),
                                   ('pickle', pickle.dumps({'a': 1}, protocol=2), 'invalid magic number'),
                                   ('tar', b'\0' * 257 + b'ustar' + b'\0' * 250, 'tar-based format')]:
        path = tmp_path / f'{name}.pth'
        path.write_bytes(content)
        expect_error(path, message)
    expect_error(tmp_path / 'missing.pth', 'cannot read file')


def test_corrupt_zip_archives(tmp_path, sample):
    records = w.zip_records(sample)

    def write(name, recs):
        path = tmp_path / f'{name}.pth'
        path.write_bytes(w.zip_archive(recs))
        return path

    short = [(n, d[:-4] if n == 'archive/data/0' else d) for n, d in records]
    expect_error(write('short_storage', short), "storage '0' holds 20 bytes but 24 are declared")
    missing = [(n, d) for n, d in records if n != 'archive/data/1']
    expect_error(write('missing_storage', missing), r"storage '1' is missing from the archive")
    no_pickle = [(n, d) for n, d in records if not n.endswith('data.pkl')]
    expect_error(write('no_pickle', no_pickle), 'no <name>/data.pkl')
    expect_error(write('torchscript', records + [('archive/constants.pkl', b'')]), 'TorchScript')
    expect_error(write('two_pickles', records + [('other/data.pkl', b'')]), 'several data.pkl')
    expect_error(write('duplicate', records + records[-1:]), 'duplicate')
    byteorder = [(n, b'middle' if n.endswith('byteorder') else d) for n, d in records]
    expect_error(write('byteorder', byteorder), 'unknown byte order')
    # flip one byte of a storage: the zip CRC catches it
    data = bytearray(w.zip_archive(records))
    start = data.index(np.arange(6, dtype=np.float32).tobytes())
    data[start + 5] ^= 0xFF
    path = tmp_path / 'crc.pth'
    path.write_bytes(bytes(data))
    expect_error(path, 'CRC|corrupt')
    # without byteorder record: little-endian, like torch
    assert_array(load_torch_file(str(write('no_byteorder', [r for r in records if 'byteorder' not in r[0]])))['a'],
                 sample['a'])


def test_corrupt_legacy_files(tmp_path, sample):
    def write(name, **changes):
        parts = dict(w.legacy_parts(sample), **changes)
        path = tmp_path / f'{name}.pth'
        path.write_bytes(b''.join(parts['headers'] + [parts['pickle'], parts['keys']] + parts['storages']))
        return path

    parts = w.legacy_parts(sample)
    headers = parts['headers']
    expect_error(write('magic', headers=[pickle.dumps(12345, protocol=2)] + headers[1:]), 'invalid magic number')
    expect_error(write('protocol', headers=headers[:1] + [pickle.dumps(1000, protocol=2)] + headers[2:]),
                 'unsupported legacy protocol version 1000')
    expect_error(write('sysinfo_global', headers=headers[:2] + [pickle.dumps(OrderedDict(), protocol=2)]),
                 'unexpected global collections.OrderedDict')
    counts = [struct.pack('<q', 5) + s[8:] if i == 0 else s for i, s in enumerate(parts['storages'])]
    expect_error(write('count', storages=counts), 'has 5 elements in the file, 6 declared')
    keys = pickle.loads(parts['keys'])
    expect_error(write('unknown_key', keys=pickle.dumps(keys + ['999'], protocol=2)), "'999' is listed")
    expect_error(write('missing_key', keys=pickle.dumps(keys[:1], protocol=2), storages=parts['storages'][:1]),
                 'have no data in the file')
    expect_error(write('short_data', storages=[parts['storages'][0], parts['storages'][1][:-1]]),
                 'truncated')
    assert_array(load_torch_file(str(write('ok')))['a'], sample['a'])


def test_legacy_storage_views(tmp_path):
    """Pre-1.0 legacy files could declare a view of a storage in the persistent id."""
    root = w.Storage(np.arange(10, dtype=np.float32), key='100')
    view = w.Storage(np.zeros(0, np.float32))

    def storage_pid(storage):
        metadata = ('200', 3, 4) if storage is view else None  # elements 3..6 of storage '100'
        return ('storage', w.Global('torch', 'FloatStorage'), '100', 'cpu', 10, metadata)

    pkl = w._pickle_tree({'whole': w.Tensor(root), 'view': w.Tensor(view, 1, (2,), (1,))}, storage_pid)
    parts = w.legacy_parts({})
    path = tmp_path / 'views.pth'
    path.write_bytes(b''.join(parts['headers'] + [pkl, pickle.dumps(['100'], protocol=2), struct.pack('<q', 10),
                                                 root.raw()]))
    loaded = load_torch_file(str(path))
    assert_array(loaded['whole'], np.arange(10, dtype=np.float32))
    assert_array(loaded['view'], np.array([4.0, 5.0], np.float32))


@pytest.mark.parametrize('fmt', FORMATS)
def test_random_damage_raises_only_torch_pickle_error(tmp_path, fmt):
    """Mutated files either load or raise TorchPickleError (zip: the pickle is damaged, the CRCs kept valid)."""
    import random
    base = w.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    tree = OrderedDict(a=base, b=base.view(1, (2, 2), (4, 1)), c=w.Parameter(np.ones(3, np.float16)),
                       d={'x': [1, 2.5, 'abc', None, (b'xy', {1})], 'n': w.Pickled(np.arange(2))},
                       e=w.tensor(np.arange(3, dtype=np.uint16)), f=np.array(3, np.int64))
    rng = random.Random(0)
    records, legacy = w.zip_records(tree), w.legacy_bytes(tree)

    def damage(data):
        data = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos, kind = rng.randrange(len(data)), rng.random()
            if kind < 0.6:
                data[pos] = rng.randrange(256)
            elif kind < 0.8:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        return bytes(data)

    path = tmp_path / 'damaged.pth'
    outcomes = set()
    for _ in range(100):
        if fmt == 'zip':
            path.write_bytes(w.zip_archive([(n, damage(d) if n.endswith('.pkl') else d) for n, d in records]))
        else:
            path.write_bytes(damage(legacy))
        try:
            load_torch_file(str(path))
            outcomes.add('loaded')
        except TorchPickleError as err:
            assert str(path) in str(err)
            outcomes.add('error')
    assert outcomes == {'loaded', 'error'}


# ---------------------------------------------------------------------------------------------
# integration: jseg.runner.checkpoint.load_checkpoint into a Jittor model


@pytest.mark.parametrize('fmt', FORMATS)
def test_load_checkpoint_into_jittor_model(tmp_path, fmt):
    import jittor as jt
    from jittor import nn

    from jseg.runner.checkpoint import load_checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=True)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 2)

        def execute(self, x):
            return self.head(self.bn(self.conv(x)).mean(3).mean(2))

    model = Net()
    rng = np.random.default_rng(1)
    weights = {k: rng.standard_normal(tuple(v.shape)).astype(np.float32) for k, v in model.state_dict().items()}
    state = OrderedDict((f'backbone.{k}', w.Parameter(v) if k.endswith('weight') else v) for k, v in weights.items())
    state['backbone.bn.num_batches_tracked'] = np.array(7, np.int64)
    ckpt = mmengine_checkpoint()
    ckpt['state_dict'] = state
    path = save(tmp_path, ckpt, fmt)
    report, meta = load_checkpoint(model, path, strict=True, prefix='backbone')
    assert report.ok and sorted(report.loaded) == sorted(weights)
    assert meta['format'] == 'pytorch'
    for name, var in model.state_dict().items():
        np.testing.assert_array_equal(var.numpy(), weights[name])
    assert model(jt.ones((1, 3, 5, 5))).shape == (1, 2)
