"""Write the ``.pth`` fixtures of ``tests/utils/test_torch_format.py`` with a real PyTorch.

Run with a Python that has torch (never the one jseg/Jittor runs in: Jittor
imports torch when present)::

    python tools/dev/make_torch_format_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/torch_format``. For each readable fixture
``<name>.pth`` (written by ``torch.save``) it writes what torch itself reads
back, for the test to compare without torch:

* ``<name>.expected.npz``: every tensor, keyed by its path in the object tree
  (``state_dict/0.weight``, ``views/3``), as ``tensor.numpy()`` (bfloat16 as
  float32, which is exact);
* ``<name>.expected.json``: every other leaf and container (type and value),
  by the same paths.

The ``unsupported_*.pth`` files are real torch output in formats the reader
refuses (pre-1.6 format, complex, quantised, uint16, TorchScript); the test
expects one clear error for each. ``README.md`` records the versions used.
"""
import json
import os
import platform
import sys
from collections import OrderedDict

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, 'tests', 'fixtures', 'torch_format')


def small_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model.train()
    model(torch.randn(2, 3, 3, 3))  # running statistics and num_batches_tracked move off their defaults
    return model


def dtypes():
    torch.manual_seed(1)
    values = torch.randn(2, 3) * 100
    tree = OrderedDict()
    for dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        tree[str(dtype)[6:]] = values.to(dtype)
    tree['float16_special'] = torch.tensor([float('inf'), -float('inf'), 65504, 6e-8, -0.0], dtype=torch.float16)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        info = torch.iinfo(dtype)
        tree[str(dtype)[6:]] = torch.tensor([[info.min, -1 if info.min else 0, 0], [1, 7, info.max]], dtype=dtype)
    tree['bool'] = torch.tensor([[True, False, True], [False, False, True]])
    tree['scalar'] = torch.tensor(2.5)
    tree['empty'] = torch.zeros(2, 0, 3, dtype=torch.int32)
    tree['parameter'] = torch.nn.Parameter(torch.arange(4.0).reshape(2, 2))
    tree['frozen_parameter'] = torch.nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)
    return tree


def views():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    half = torch.arange(8, dtype=torch.float16)
    return {
        'base': base, 'same_tensor_again': base, 'flat': base.view(-1), 'row': base[2], 'column': base[:, 1],
        'transpose': base.t(), 'slice': base[1:3, ::2], 'narrow_tail': base.view(-1)[20:],
        'expanded': base[0, :1].expand(3, 4), 'scalar_view': base[3, 5], 'permuted': base.reshape(2, 2, 6).permute(2, 0, 1),
        'half_pair': [half[:4], half[4:].flip(0) * 1, half.view(2, 4)[:, 1:3]],
    }


def mmseg_checkpoint():
    model = small_model()
    return {
        'meta': {'iter': 160000, 'mmseg_version': '1.2.2', 'seed': 42, 'lr': 6e-05, 'resumed': False, 'note': None,
                 'dataset_meta': {'classes': ('road', 'car', 'sky'), 'palette': [[128, 64, 128], [0, 0, 142],
                                                                                 [70, 130, 180]]},
                 'img_norm': ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)), 'cfg': 'model = dict(type="X")'},
        'state_dict': OrderedDict((f'backbone.{k}', v) for k, v in model.state_dict().items()),
        'optimizer': {'state': {0: {'step': torch.tensor(3.0), 'exp_avg': torch.zeros(4, 3, 3, 3)}},
                      'param_groups': [{'lr': 6e-05, 'betas': (0.9, 0.999), 'params': [0, 1, 2]}]},
        'nested': {'a': [{'b': (1, [2, (3, torch.tensor([4, 5]))])}], 'empty': ([], (), {}, OrderedDict())},
    }


READABLE = {'state_dict': lambda: small_model().state_dict(), 'dtypes': dtypes, 'views': views,
            'mmseg_checkpoint': mmseg_checkpoint}


def flatten(obj, path, arrays, leaves):
    if isinstance(obj, torch.Tensor):
        data = obj.detach()
        arrays[path] = (data.float() if data.dtype == torch.bfloat16 else data).numpy()
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


def unsupported(out):
    torch.save({'w': torch.ones(2)}, os.path.join(out, 'unsupported_legacy_format.pth'),
               _use_new_zipfile_serialization=False)
    torch.save({'w': torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)},
               os.path.join(out, 'unsupported_complex.pth'))
    torch.save({'w': torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.1, 0, torch.qint8)},
               os.path.join(out, 'unsupported_quantized.pth'))
    torch.save({'w': torch.tensor([1, 2, 3], dtype=torch.int32).to(torch.uint16)}, os.path.join(out, 'unsupported_uint16.pth'))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), os.path.join(out, 'unsupported_torchscript.pth'))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, make in READABLE.items():
        obj = make()
        path = os.path.join(OUT, f'{name}.pth')
        torch.save(obj, path)
        again = torch.load(path, weights_only=True)  # what torch reads back is the expectation
        arrays, leaves = {}, {}
        flatten(again, '', arrays, leaves)
        np.savez(os.path.join(OUT, f'{name}.expected.npz'), **arrays)
        with open(os.path.join(OUT, f'{name}.expected.json'), 'w') as f:
            json.dump(leaves, f, indent=1, sort_keys=True)
            f.write('\n')
    unsupported(OUT)
    with open(os.path.join(OUT, 'README.md'), 'w') as f:
        f.write('# `.pth` fixtures written by PyTorch\n\n'
                'Written by `tools/dev/make_torch_format_fixtures.py` (see its docstring) with\n'
                f'torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}.\n'
                'Read by `tests/utils/test_torch_format.py` without torch. Re-run the script to\n'
                'regenerate them; the tests compare with the `.expected.*` files it writes.\n')


if __name__ == '__main__':
    main()
