"""Check torch_format_writer.py and jseg/utils/torch_pickle.py against a real PyTorch.

Not a pytest module (CI has no torch). Run it with a Python that has torch (never
the one jseg/Jittor run in: Jittor imports torch when present)::

    python tests/utils/check_against_torch.py OUT_DIR

For a range of object trees it checks that

1. the writer's zip and legacy files are byte-identical to ``torch.save``'s (given
   torch's serialization id and legacy storage keys, which torch draws at random);
2. ``torch.load(writer file, weights_only=True)`` gives the same tensors (dtype,
   shape, strides, offsets, values, shared storages, Parameter flags) as torch's tree;
3. the reader loads torch's files and the writer's files to the same arrays;
4. malicious files written by torch itself (os.system / eval / subprocess in
   ``__reduce__``, both formats) are refused by name and have no side effect;
5. more torch features (whole modules, tensors with attributes, torch.Size/device/
   dtype values, bare storages, sparse, quantized and float8 tensors, pickle
   protocols 2/4/5) are read, refused or rejected as documented.

The reader module is loaded from its file: the jseg package needs Jittor.
"""
import importlib.util
import os
import pickle
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
sys.path.insert(0, HERE)
import torch_format_writer as w  # noqa: E402

spec = importlib.util.spec_from_file_location('torch_pickle', os.path.join(REPO, 'jseg', 'utils', 'torch_pickle.py'))
tp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tp)

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


def expected_array(t):
    t = t.detach().resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        t = t.float()
    if t.dtype in (torch.uint16, torch.uint32, torch.uint64):
        signed = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}[t.dtype]
        return t.contiguous().view(signed).numpy().view(str(t.dtype).replace('torch.', ''))
    return t.contiguous().numpy()


def same(a, b, path='', arrays_only=False):
    """torch tree `a` (tensors) vs reader tree `b` (arrays); reports differences."""
    if isinstance(a, torch.Tensor):
        e = expected_array(a)
        assert isinstance(b, np.ndarray), (path, type(b))
        assert b.dtype == e.dtype and b.shape == e.shape and b.flags.c_contiguous, (path, b.dtype, e.dtype, b.shape)
        assert np.array_equal(b, e, equal_nan=True), path
        return
    if isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), (path, type(a), type(b))
        for k in a:
            same(a[k], b[k], f'{path}.{k}')
        return
    if isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f'{path}[{i}]')
        return
    if isinstance(a, (np.ndarray, np.generic, HistoryBuffer)):
        assert tp.is_refused(b), (path, b)
        return
    assert type(a) is type(b) and a == b, (path, a, b)


def torch_legacy_keys(path):
    """Storage keys of a torch legacy file in order of first use."""
    keys = []

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            return tp.RefusedObject

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
    # 3) torch files (and writer files) read by the reader equal torch's tensors
    refused_seen = set()
    for path in (tz, tl, wzp, wlp):
        tree, refused = tp.load_torch_file(path, return_refused=True)
        same(ttree, tree)
        refused_seen.add(tuple(refused))
    report.append(f'{name:10s} zip identical={zip_identical} legacy identical={legacy_identical} '
                  f'torch.load(writer) ok{torch_notes}, reader(torch & writer files) ok, '
                  f'refused={sorted(refused_seen)}')

# 4) malicious files written by torch itself: the payload must not run
sentinel = os.path.join(OUT, 'PWNED')


class Evil:
    def __reduce__(self):
        return os.system, (f'touch {sentinel}',)


class EvilEval:
    def __reduce__(self):
        return eval, (f"open({sentinel!r}, 'w').write('x')",)


class EvilSub:
    def __reduce__(self):
        return subprocess.call, (['touch', sentinel],)


for cls in (Evil, EvilEval, EvilSub):
    for legacy in (False, True):
        path = os.path.join(OUT, f'evil_{cls.__name__}_{"legacy" if legacy else "zip"}.pt')
        torch.save({'state_dict': {'w': torch.ones(2)}, 'x': cls()}, path, _use_new_zipfile_serialization=not legacy)
        tree, refused = tp.load_torch_file(path, return_refused=True)
        assert not os.path.exists(sentinel)
        assert tp.is_refused(tree['x']) and np.array_equal(tree['state_dict']['w'], np.ones(2, np.float32))
        try:
            torch.load(path, weights_only=True)
            raise AssertionError('torch accepted it')
        except pickle.UnpicklingError:
            pass
        report.append(f'evil {cls.__name__:9s} {"legacy" if legacy else "zip   "}: refused {refused}, '
                      f'no side effect; torch weights_only also refuses')
# 5) more torch features, in every pickle protocol torch.save accepts
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                            torch.nn.Linear(4, 2))
param = torch.nn.Parameter(torch.ones(2))
param.tag = 'x'
plain = torch.arange(3.0)
plain.note = 1
EXTRA = {
    'state_dict': model.state_dict(),
    'whole_module': model,
    'attrs': {'param_with_state': param, 'tensor_with_attr': plain, 'size': torch.Size([2, 3]),
              'dev': torch.device('cpu'), 'dtype': torch.float32, 'untyped': torch.ones(3).untyped_storage()},
    'sparse': {'s': torch.eye(3).to_sparse(), 'w': torch.ones(2)},
    'float8': {'f8': torch.zeros(2, dtype=torch.float8_e4m3fn)},
    'quantized': {'q': torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8)},
}


def check_extra(name, tree, refused):
    if name == 'state_dict':
        same(EXTRA[name], tree)
        return f'{len(tree)} tensors equal'
    if name == 'whole_module':
        assert tp.is_refused(tree) and 'torch.nn.modules.container.Sequential' in refused
    elif name == 'attrs':
        assert np.array_equal(tree['param_with_state'], np.ones(2, np.float32))
        assert np.array_equal(tree['tensor_with_attr'], np.arange(3.0, dtype=np.float32))
        assert tree['size'] == (2, 3) and tree['dev'] == 'cpu' and repr(tree['dtype']) == 'torch.float32'
        assert isinstance(tree['untyped'], tp.TorchStorage) and tree['untyped'].nbytes == 12
    elif name == 'sparse':
        assert tp.is_refused(tree['s']) and np.array_equal(tree['w'], np.ones(2, np.float32))
    elif name == 'quantized':
        assert tp.is_refused(tree['q']) and 'torch._utils._rebuild_qtensor' in refused
    else:
        raise AssertionError(f'{name} should not load')
    return repr(tree)[:100]


for name, obj in EXTRA.items():
    for proto, legacy in ((2, False), (2, True), (4, False), (5, False)):
        path = os.path.join(OUT, f'extra_{name}_p{proto}{"_legacy" if legacy else ""}.pt')
        torch.save(obj, path, pickle_protocol=proto, _use_new_zipfile_serialization=not legacy)
        try:
            tree, refused = tp.load_torch_file(path, return_refused=True)
            outcome = f'OK {check_extra(name, tree, refused)} refused={refused}'
        except tp.TorchPickleError as err:
            assert name == 'float8', err
            outcome = f'TorchPickleError: {str(err)[len(path) + 2:]}'
        report.append(f'{name} protocol {proto}{" legacy" if legacy else ""}: {outcome}')

print('\n'.join(report))
print('torch', torch.__version__)
