"""Helpers shared by the operator tests: error measure, devices, finite differences, nvcc."""
import contextlib
import functools
import os
import shutil
import subprocess

import jittor as jt
import numpy as np
import pytest

NO_CUDA_REASON = 'jt.has_cuda is False: no usable GPU here, the CUDA sources are not run by this test'

# The 'cpu' case always runs; the 'cuda' case runs the same test with jt.flags.use_cuda=1.
DEVICES = [
    pytest.param('cpu', id='cpu'),
    pytest.param('cuda', id='use_cuda', marks=pytest.mark.skipif(not jt.has_cuda, reason=NO_CUDA_REASON)),
]


@contextlib.contextmanager
def on_device(device):
    """Run the block with ``jt.flags.use_cuda`` set for ``device`` ('cpu' or 'cuda')."""
    with jt.flag_scope(use_cuda=1 if device == 'cuda' else 0):
        yield


def rel_err(actual, expected):
    """max |actual - expected| / max |expected| (norm-wise relative error)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-30) if expected.size else 1.0
    return float(np.abs(actual - expected).max()) / scale if expected.size else 0.0


def var64(array):
    """A float64 jt.Var (``jt.array`` alone would convert float64 to float32)."""
    return jt.array(np.asarray(array, dtype=np.float64), dtype='float64')


def check_finite_differences(loss, arrays, grads, rng, eps=1e-6, entries=10, directions=2, tol=1e-6):
    """Compare analytic gradients with central differences of a float64 scalar loss.

    Args:
        loss (callable): numpy arrays (float64) -> float.
        arrays (list[np.ndarray]): the point.
        grads (list[np.ndarray]): the analytic gradients at that point.
        entries (int): random entries checked one by one, per array.
        directions (int): random directions checked (all arrays perturbed at once).
    """
    def at(deltas):
        return loss([a + d for a, d in zip(arrays, deltas)])

    zeros = [np.zeros_like(a) for a in arrays]
    for idx, (array, grad) in enumerate(zip(arrays, grads)):
        assert grad.shape == array.shape
        flat = rng.choice(array.size, size=min(entries, array.size), replace=False)
        for f in flat:
            d = [z.copy() for z in zeros]
            d[idx].flat[f] = eps
            numeric = (at(d) - at([-x for x in d])) / (2 * eps)
            analytic = grad.flat[f]
            assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), \
                f'input {idx}, entry {np.unravel_index(f, array.shape)}: finite difference {numeric}, grad {analytic}'
    for _ in range(directions):
        d = [rng.standard_normal(a.shape) for a in arrays]
        numeric = (at([eps * x for x in d]) - at([-eps * x for x in d])) / (2 * eps)
        analytic = sum(float((g * x).sum()) for g, x in zip(grads, d))
        assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), \
            f'random direction: finite difference {numeric}, grad {analytic}'


def find_nvcc():
    """Path of an ``nvcc`` that can compile, or None."""
    candidates = [os.environ.get('nvcc_path'), shutil.which('nvcc'), '/usr/local/cuda/bin/nvcc']
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def cuda_stub(name, header, src, in_dims, out_dims, ctype):
    """A host function around a ``jt.code`` CUDA source, with the names Jittor defines for it
    (``inI_p``, ``inI_shapeJ``, ``inI_type``, ``outI_...``), so nvcc can compile the source alone."""
    args = []
    for i, d in enumerate(in_dims):
        args += [f'{ctype}* in{i}_p'] + [f'long long in{i}_shape{j}' for j in range(d)]
    for i, d in enumerate(out_dims):
        args += [f'{ctype}* out{i}_p'] + [f'long long out{i}_shape{j}' for j in range(d)]
    types = [f'typedef {ctype} in{i}_type;' for i in range(len(in_dims))]
    types += [f'typedef {ctype} out{i}_type;' for i in range(len(out_dims))]
    return '\n'.join([header, f'void {name}({", ".join(args)}) {{', *types, src, '}'])


# The GPU generations the CUDA sources must compile for: Ampere (A100, sm_80) and Hopper (H100/H200, sm_90).
NVCC_ARCHS = ('80', '90')


def nvcc_command(nvcc, source, output, include_dirs=()):
    """nvcc command line that compiles (not links) ``source`` for every architecture of ``NVCC_ARCHS``."""
    cmd = [nvcc, '-std=c++14', '-c', str(source), '-o', str(output)]
    for arch in NVCC_ARCHS:
        cmd += ['-gencode', f'arch=compute_{arch},code=sm_{arch}']
    for folder in include_dirs:
        cmd += ['-I', str(folder)]
    return cmd


def assert_compiles_with_nvcc(sources, tmp_path, name='ops_check', include_dirs=()):
    """Compile ``sources`` (a list of strings) as one CUDA file with nvcc for sm_80 and sm_90 and assert
    it succeeds. Skips only when there is no nvcc: where nvcc exists, any failure fails the test."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip('nvcc not found: the CUDA sources are not compiled by this test')
    path = tmp_path / f'{name}.cu'
    path.write_text('#include <cuda_runtime.h>\n' + '\n'.join(sources))
    cmd = nvcc_command(nvcc, path, tmp_path / f'{name}.o', include_dirs)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, ' '.join(cmd) + '\n' + (proc.stdout + proc.stderr)[-3000:]


def count_calls(monkeypatch, cls, method='execute'):
    """Patch ``cls.method`` to record its arguments (it still runs); returns the list of calls."""
    calls, original = [], getattr(cls, method)

    def recording(self, *args):
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(cls, method, recording)
    return calls


@functools.lru_cache(maxsize=None)
def carafe_case_data(case):
    """CARAFE inputs, an output gradient and the composition's output and gradients (float32), once per
    case ``(B, C, h, w, G, k, s)``: dict with f, m, dout, out, d_f, d_m (NumPy arrays)."""
    from jseg.ops.carafe import carafe_reference
    b, c, h, w, g, k, s = case
    rng = np.random.default_rng(sum(case))
    f = rng.standard_normal((b, c, h, w)).astype(np.float32)
    m = rng.random((b, g * k * k, h * s, w * s)).astype(np.float32)
    dout = rng.standard_normal((b, c, h * s, w * s)).astype(np.float32)
    fv, mv = jt.array(f), jt.array(m)
    out = carafe_reference(fv, mv, k, g, s)
    d_f, d_m = jt.grad((out * jt.array(dout)).sum(), [fv, mv])
    return dict(f=f, m=m, dout=dout, out=out.numpy(), d_f=d_f.numpy(), d_m=d_m.numpy())
