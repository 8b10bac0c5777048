"""Check torch_format_writer.py against a real PyTorch.

Not a pytest module (CI has no torch). Run it with a Python that has torch (never
the one jseg/Jittor run in: Jittor imports torch when present)::

    python tests/utils/check_against_torch.py OUT_DIR

The writer makes the crafted ``.pth`` files of the tests. For a range of object
trees this checks that

1. the writer's zip and legacy files are byte-identical to ``torch.save``'s (given
   torch's serialization id and legacy storage keys, which torch draws at random);
2. ``torch.load(writer file, weights_only=True)`` gives the same tensors (dtype,
   shape, strides, offsets, values, shared storages, Parameter flags) as torch's tree.

The reader (``jseg/utils/torch_format``) is checked against bytes written by
torch itself in ``tests/utils/test_torch_format.py``, with the fixtures of
``tools/dev/make_torch_format_fixtures.py``.
"""
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
sys.path.insert(0, HERE)
import torch_format_writer as w  # noqa: E402


class _Refused:
    """Stands for any global while legacy storage keys are read: takes and keeps nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

# a fake mmengine HistoryBuffer class that torch.save can pickle by name
for name in ('mmengine', 'mmengine.logging', 'mmengine.logging.history_buffer'):
    sys.modules[name] = types.ModuleType(name)


class HistoryBuffer:
    def __init__(self, values):
        self._log_history = values
        self._max_length = 1000000


HistoryBuffer.__module__ = 'mmengine.logging.history_buffer'
sys.modules['mmengine.logging.history_buffer'].HistoryBuffer = HistoryBuffer

TORCH_DTYPE = {'float32': torch.float32, 'float64': torch.float64, 'float16': torch.float16,
               'bfloat16': torch.bfloat16, 'complex64': torch.complex64, 'complex128': torch.complex128,
               'int64': torch.int64, 'int32': torch.int32, 'int16': torch.int16, 'int8': torch.int8,
               'uint8': torch.uint8, 'bool': torch.bool, 'uint16': torch.uint16, 'uint32': torch.uint32,
               'uint64': torch.uint64}
rng = np.random.default_rng(0)


def values(dtype, shape):
    if dtype == 'bool':
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith('complex'):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.startswith('float') or dtype == 'bfloat16':
        return rng.standard_normal(shape).astype('float32' if dtype == 'bfloat16' else dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def case_dtypes():
    t, wr = OrderedDict(), OrderedDict()
    for name, dt in TORCH_DTYPE.items():
        v = values(name, (2, 3))
        if name == 'bfloat16':
            tt = torch.from_numpy(v).to(torch.bfloat16)
            wt = w.tensor(w.bfloat16_bits(v), 'bfloat16')
        elif name.startswith('uint') and name != 'uint8':
            tt = torch.from_numpy(v.view(np.dtype(name.replace('u', '')))).view(dt)
            wt = w.tensor(v)
        else:
            tt = torch.from_numpy(v.copy())
            wt = w.tensor(v)
        t[name], wr[name] = tt, wt
    return t, wr


def case_views():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tb = torch.from_numpy(base.copy())
    wb = w.tensor(base)
    t = {'base': tb, 'slice': tb[1:3, ::2], 'row': tb[2], 'T': tb.t(), 'scalar_view': tb[3, 5],
         'expand': tb[0, :1].expand(3, 4), 'after': torch.arange(5, dtype=torch.int64)}
    wr = {'base': wb, 'slice': wb.view(6, (2, 3), (6, 2)), 'row': wb.view(12, (6,), (1,)),
          'T': wb.view(0, (6, 4), (1, 6)), 'scalar_view': wb.view(23, (), ()),
          'expand': wb.view(0, (3, 4), (0, 0)), 'after': np.arange(5, dtype=np.int64)}
    return t, wr


def case_shapes():
    t = {'zero_d': torch.tensor(3.5), 'zero_d_half': torch.tensor(1.25, dtype=torch.float16),
         'empty': torch.zeros(0), 'empty3': torch.zeros(2, 0, 3, dtype=torch.int32),
         'param': torch.nn.Parameter(torch.ones(2, 2)), 'frozen': torch.nn.Parameter(torch.zeros(3), False)}
    wr = {'zero_d': np.array(3.5, dtype=np.float32), 'zero_d_half': np.array(1.25, dtype=np.float16),
          'empty': np.zeros(0, np.float32), 'empty3': np.zeros((2, 0, 3), np.int32),
          'param': w.Parameter(np.ones((2, 2), np.float32)), 'frozen': w.Parameter(np.zeros(3, np.float32), False)}
    return t, wr


def case_containers():
    def tree(mk):
        return OrderedDict([
            ('ints', [1, -2, 300, 70000, 2 ** 40, -2 ** 70]), ('floats', (0.5, float('inf'), -1e-300)),
            ('str', 'héllo'), ('none', None), ('bools', [True, False]), ('bytes', b'\x00\xffab'),
('set', {1, 2, 3}), ('nested', {'a': {'b': [mk(1), (mk(2), {})]}}),
            ('tuple1', (1,)), ('empty', ((), [], {})), ('od', OrderedDict(z=1, a=2)), ('cplx', 1 + 2j)])
    return (tree(lambda i: torch.full((2,), float(i))),
            tree(lambda i: np.full((2,), float(i), dtype=np.float32)))


def case_metadata():
    c = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    t = {'conj': c.conj(), 'neg': torch._neg_view(torch.tensor([1.0, -2.0]))}
    wr = {'conj': w.Tensor(w.Storage(np.array([1 + 2j, 3 - 4j], np.complex64)), metadata={'conj': True}),
          'neg': w.Tensor(w.Storage(np.array([1.0, -2.0], np.float32)), metadata={'neg': True})}
    return t, wr


def case_mmengine():
    arr = np.arange(4.0)
    parr = w.Pickled(arr)
    state = {'conv.weight': torch.ones(2, 1, 3, 3), 'bn.num_batches_tracked': torch.tensor(5)}
    t = {'meta': {'epoch': 3, 'iter': 1000, 'cfg': 'model = dict()', 'best': np.float64(0.5), 'arr': arr,
                  'empty_bytes': b''},
         'state_dict': OrderedDict(state),
         'message_hub': {'log_scalars': OrderedDict(loss=HistoryBuffer(arr))},
         'optimizer': {'state': {0: {'step': torch.tensor(10.0), 'exp_avg': torch.zeros(2, 1, 3, 3)}},
                       'param_groups': [{'lr': 0.01, 'params': [0]}]}}
    wstate = OrderedDict([('conv.weight', np.ones((2, 1, 3, 3), np.float32)),
                          ('bn.num_batches_tracked', np.array(5, np.int64))])
    wr = {'meta': {'epoch': 3, 'iter': 1000, 'cfg': 'model = dict()', 'best': w.Pickled(np.float64(0.5)),
                   'arr': parr, 'empty_bytes': b''},
          'state_dict': wstate,
          'message_hub': {'log_scalars': OrderedDict(loss=w.Instance(
              'mmengine.logging.history_buffer', 'HistoryBuffer',
              {'_log_history': parr, '_max_length': 1000000}))},
          'optimizer': {'state': {0: {'step': np.array(10.0, np.float32), 'exp_avg': np.zeros((2, 1, 3, 3),
                                                                                              np.float32)}},
                        'param_groups': [{'lr': 0.01, 'params': [0]}]}}
    return t, wr


CASES = {'dtypes': case_dtypes, 'views': case_views, 'shapes': case_shapes, 'containers': case_containers,
         'metadata': case_metadata, 'mmengine': case_mmengine}


def torch_legacy_keys(path):
    """Storage keys of a torch legacy file in order of first use."""
    keys = []

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            return _Refused

        def persistent_load(self, pid):
            if pid[2] not in keys:
                keys.append(pid[2])

    with open(path, 'rb') as f:
        for _ in range(3):
            pickle.load(f)
        U(f).load()
    return keys


def writer_storages_in_order(wtree):
    order = []
    orig = w._storage_type

    def spy(storage):
        if not any(s is storage for s in order):
            order.append(storage)
        return orig(storage)
    w._storage_type = spy
    try:
        w.legacy_bytes(wtree)
    finally:
        w._storage_type = orig
    return order


def explicit(tree):
    if isinstance(tree, np.ndarray):
        return w.tensor(tree)
    if isinstance(tree, dict):
        return type(tree)((k, explicit(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(explicit(v) for v in tree)
    return tree


report = []
for name, make in CASES.items():
    ttree, wtree = make()
    wtree = explicit(wtree)
    tz, tl = os.path.join(OUT, f'torch_{name}.pt'), os.path.join(OUT, f'torch_{name}_legacy.pt')
    torch.save(ttree, tz)
    torch.save(ttree, tl, _use_new_zipfile_serialization=False)
    # 1) writer output byte-identical to torch (same archive name and serialization id / legacy keys)
    with zipfile.ZipFile(tz) as zf:
        sid = zf.read(f'torch_{name}/.data/serialization_id').decode()
    wz = w.zip_bytes(wtree, archive_name=f'torch_{name}', serialization_id=sid)
    zip_identical = wz == open(tz, 'rb').read()
    for storage, key in zip(writer_storages_in_order(wtree), torch_legacy_keys(tl)):
        storage.key = key
    wl = w.legacy_bytes(wtree)
    legacy_identical = wl == open(tl, 'rb').read()
    wzp, wlp = os.path.join(OUT, f'writer_{name}.pt'), os.path.join(OUT, f'writer_{name}_legacy.pt')
    open(wzp, 'wb').write(wz)
    open(wlp, 'wb').write(wl)
    # 2) writer files load in torch (weights_only=True where torch allows the content) and equal torch's tree
    torch_notes = ''
    for path in (wzp, wlp):
        weights_only = name != 'mmengine'
        if path == wlp:
            try:
                torch.load(tl, weights_only=weights_only)
            except AttributeError as err:  # torch cannot read its own legacy file either
                torch_notes = f' (torch cannot load its own legacy file: {err})'
                continue
        loaded = torch.load(path, weights_only=weights_only)

        def cmp(x, y, p=''):
            if isinstance(x, torch.Tensor):
                assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape, p
                assert x.stride() == y.stride() and x.storage_offset() == y.storage_offset(), p
                assert torch.equal(x.resolve_conj().resolve_neg(), y.resolve_conj().resolve_neg()), p
                assert type(x) is type(y), (p, type(x), type(y))
                if isinstance(x, torch.nn.Parameter):
                    assert x.requires_grad == y.requires_grad, p
            elif isinstance(x, dict):
                assert type(x) is type(y) and list(x) == list(y), p
                [cmp(x[k], y[k], f'{p}.{k}') for k in x]
            elif isinstance(x, (list, tuple)):
                assert type(x) is type(y) and len(x) == len(y), p
                [cmp(a, b, f'{p}[{i}]') for i, (a, b) in enumerate(zip(x, y))]
            elif isinstance(x, np.ndarray):
                assert np.array_equal(x, y), p
            elif isinstance(x, HistoryBuffer):
                assert np.array_equal(x._log_history, y._log_history), p
            else:
                assert type(x) is type(y) and (x == y or x != x), (p, x, y)
        cmp(ttree, loaded)
        if name == 'views':  # views share one storage after torch.load
            ptrs = {k: v.untyped_storage().data_ptr() for k, v in loaded.items() if k != 'after'}
            assert len(set(ptrs.values())) == 1, ptrs
    report.append(f'{name:10s} zip identical={zip_identical} legacy identical={legacy_identical} '
                  f'torch.load(writer) ok{torch_notes}')

print('\n'.join(report))
print('torch', torch.__version__)
