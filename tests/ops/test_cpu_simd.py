"""jseg's JIT CPU kernels built for each instruction set of ``jseg/ops/csrc/cpu_simd.h``.

Jittor compiles the kernels with ``-march=native``, so the operator tests only
ever run the path of the machine they run on. Here ``tests/ops/cpu_kernel_driver.cc``
(the CARAFE, fused and gemm coupled-attention CPU kernels and the packed GEMM
behind a small command line) is compiled with g++ three ways: plain ``-O2`` without ``-march``
(the 16-byte fallback), ``-mavx2 -mfma`` (32 bytes) and ``-mavx512f -mavx512bw
-mfma`` (64 bytes); each build states its width, and where this CPU can run it,
its results are compared with the pure-Jittor references of the operator tests.
Compiling fails the test (not a skip) wherever g++ exists; running a build the
CPU lacks the instructions for is a visible skip.
"""
import functools
import os
import shutil
import subprocess
import tempfile

import jittor as jt
import numpy as np
import pytest

from jseg.ops.csrc_source import CSRC_DIR
from jseg.ops.offset_attention import offset_attention_reference
from ops_test_helpers import carafe_case_data, rel_err

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cpu_kernel_driver.cc')

# name: (g++ flags, the vector width cpu_simd.h must choose, the /proc/cpuinfo flags needed to run it)
BUILDS = {
    'plain': ([], 16, ()),
    'avx2': (['-mavx2', '-mfma'], 32, ('avx2', 'fma')),
    'avx512': (['-mavx512f', '-mavx512bw', '-mfma'], 64, ('avx512f', 'avx512bw', 'fma')),
}

# (B, C, h, w, G, k, s): output rows of 40, 37 and 16 pixels (full register tiles and shorter
# ends of rows at every width), groups > 1, tap rows in the padding.
CARAFE_CASES = [(2, 6, 5, 20, 2, 3, 2), (1, 4, 6, 37, 1, 5, 1), (1, 3, 3, 8, 1, 5, 2)]
# (B, HW, C, K, B of cls_repr, channels_first): partial position blocks, K and C not multiples of
# the padding, above the threshold for several threads (per-thread softmax states merged).
OA_CASES = [(2, 77, 19, 13, 2, False), (1, 200, 40, 11, 1, True), (2, 1100, 50, 45, 2, False),
            (2, 1500, 48, 41, 1, True)]
# (K, HW) of the gemm strategy's softmax operators: a partial strip of columns, and several threads.
GEMM_CASES = [(37, 130), (41, 1700)]


def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def _build(name):
    """Compile the driver for build ``name`` once per session; returns the executable's path."""
    if shutil.which('g++') is None:
        pytest.skip('g++ not found: the kernels are not compiled by this test')
    flags = BUILDS[name][0]
    exe = os.path.join(tempfile.mkdtemp(prefix=f'jseg_simd_{name}_'), 'driver')
    cmd = ['g++', '-std=c++14', '-O2', '-fopenmp', *flags, '-I', CSRC_DIR, DRIVER, '-o', exe]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, ' '.join(cmd) + '\n' + (proc.stdout + proc.stderr)[-3000:]
    return exe


def _runnable(name):
    missing = [f for f in BUILDS[name][2] if f not in _cpu_flags()]
    if missing:
        pytest.skip(f'this CPU lacks {" ".join(missing)}: the {name} build is compiled, not run')
    return _build(name)


def _run(exe, op, folder, dims, inputs, out_shapes):
    for i, array in enumerate(inputs):
        np.ascontiguousarray(array, dtype=np.float32).tofile(os.path.join(folder, f'in{i}.f32'))
    env = dict(os.environ, OMP_NUM_THREADS='2')
    proc = subprocess.run([exe, op, str(folder), *map(str, dims)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [np.fromfile(os.path.join(folder, f'out{i}.f32'), dtype=np.float32).reshape(shape)
            for i, shape in enumerate(out_shapes)]


@pytest.mark.parametrize('name', list(BUILDS))
def test_build_compiles_and_chooses_its_width(name):
    """Every build compiles (-O2, OpenMP); where it can run, it reports the width cpu_simd.h chose."""
    _build(name)                 # compiling is checked on every machine with g++ ...
    exe = _runnable(name)        # ... running only where the CPU has the instructions
    out = subprocess.run([exe, 'width'], capture_output=True, text=True, timeout=60).stdout
    assert f'JSEG_SIMD_BYTES={BUILDS[name][1]} ' in out, out


def test_width_can_be_forced_narrower(tmp_path):
    """Defining JSEG_SIMD_BYTES before the include overrides the choice: an AVX2 build forced to 16 bytes
    runs the fallback's constants and still matches the reference."""
    if shutil.which('g++') is None:
        pytest.skip('g++ not found')
    exe = str(tmp_path / 'driver')
    cmd = ['g++', '-std=c++14', '-O1', '-fopenmp', '-mavx2', '-mfma', '-DJSEG_SIMD_BYTES=16', '-I', CSRC_DIR,
           DRIVER, '-o', exe]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    if not {'avx2', 'fma'} <= _cpu_flags():
        pytest.skip('this CPU lacks avx2/fma: compiled, not run')
    out = subprocess.run([exe, 'width'], capture_output=True, text=True, timeout=60).stdout
    assert 'JSEG_SIMD_BYTES=16 ' in out and 'GEMM_MR=4 ' in out, out
    _check_oa_fused(exe, tmp_path, OA_CASES[3])


@pytest.mark.parametrize('name', list(BUILDS))
@pytest.mark.parametrize('case', CARAFE_CASES, ids=lambda c: 'B{}C{}h{}w{}G{}k{}s{}'.format(*c))
def test_carafe_matches_reference(name, case, tmp_path):
    exe = _runnable(name)
    b, c, h, w, g, k, s = case
    d = carafe_case_data(case)
    inputs, expected = (d['f'], d['m'], d['dout']), (d['out'], d['d_f'], d['d_m'])
    outs = _run(exe, 'carafe', tmp_path, (k, s, b, c, h, w, g), inputs, [e.shape for e in expected])
    for got, ref in zip(outs, expected):
        assert rel_err(got, ref) < 1e-5


@functools.lru_cache(maxsize=None)
def _oa_reference(case):
    b, n, c, k, bw, cf = case
    rng = np.random.default_rng(sum(case))
    e = rng.standard_normal((b, c, n) if cf else (b, n, c)).astype(np.float32)
    w = (0.3 * rng.standard_normal((bw, k, c))).astype(np.float32)
    g_cls = rng.standard_normal((b, k, c)).astype(np.float32)
    g_pos = rng.standard_normal(e.shape).astype(np.float32)
    ev, wv = jt.array(e), jt.array(w)
    f_cls, f_pos = offset_attention_reference(ev, wv, cf)
    d_e, d_w = jt.grad((f_cls * jt.array(g_cls)).sum() + (f_pos * jt.array(g_pos)).sum(), [ev, wv])
    return (e, w, g_cls, g_pos), (f_cls.numpy(), f_pos.numpy(), d_e.numpy(), d_w.numpy())


def _check_oa_fused(exe, folder, case):
    b, n, c, k, bw, cf = case
    inputs, expected = _oa_reference(case)
    outs = _run(exe, 'oa_fused', folder, (int(cf), b, n, c, bw, k), inputs, [e.shape for e in expected])
    for got, ref in zip(outs, expected):
        assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize('name', list(BUILDS))
@pytest.mark.parametrize('case', OA_CASES, ids=lambda c: 'B{}N{}C{}K{}Bw{}{}'.format(*c[:5], 'cf' if c[5] else 'tm'))
def test_fused_offset_attention_matches_reference(name, case, tmp_path):
    _check_oa_fused(_runnable(name), tmp_path, case)


@pytest.mark.parametrize('name', list(BUILDS))
@pytest.mark.parametrize('k, n', GEMM_CASES, ids=lambda v: str(v))
def test_gemm_softmax_operators_match_numpy(name, k, n, tmp_path):
    """stats_cpu and grad_cpu (the 'gemm' strategy's CPU operators) against their formulas in float64."""
    exe = _runnable(name)
    rng = np.random.default_rng(k * n)
    at, dpc, dpp = (rng.standard_normal((k, n)).astype(np.float32) for _ in range(3))
    dcls = rng.standard_normal(k).astype(np.float32)
    pc, pp, lse_cls, lse_pos, pd, pp2 = _run(exe, 'oa_gemm', tmp_path, (k, n), [at, dpc, dpp, dcls],
                                             [(k, n), (k, n), (k,), (n,), (2 * k, n), (k, n)])
    a = at.astype(np.float64)
    ref_lse_cls = np.log(np.exp(a).sum(1))
    ref_lse_pos = np.log(np.exp(a).sum(0))
    ref_pc, ref_pp = np.exp(a - ref_lse_cls[:, None]), np.exp(a - ref_lse_pos[None, :])
    dpos = (ref_pp * dpp).sum(0)
    ref_da = ref_pc * (dpc - dcls[:, None]) + ref_pp * (dpp - dpos[None, :])
    assert np.abs(lse_cls - ref_lse_cls).max() < 1e-5 * np.abs(ref_lse_cls).max()
    assert np.abs(lse_pos - ref_lse_pos).max() < 1e-5 * np.abs(ref_lse_pos).max()
    assert rel_err(pc, ref_pc) < 1e-5 and rel_err(pp, ref_pp) < 1e-5 and rel_err(pp2, ref_pp) < 1e-5
    assert rel_err(pd, np.concatenate([ref_pc, ref_da])) < 1e-5


# (batch, M, K, N, a batched, b batched, sum over the batch) of the packed GEMM (gemm_cpu.h): edge
# tiles at every width, in-place A (N <= 4 tiles) and B (M <= 48), K over two 256-deep blocks, M
# over two A blocks, shared operands, the summed gradient, and one call above the OpenMP threshold.
MATMUL_CASES = [(1, 7, 13, 5, False, False, False), (3, 150, 300, 40, True, False, False),
                (3, 9, 20, 130, False, True, True), (2, 50, 33, 70, True, True, True),
                (2, 520, 512, 300, True, True, False)]


@pytest.mark.parametrize('name', list(BUILDS))
@pytest.mark.parametrize('case', MATMUL_CASES, ids=str)
@pytest.mark.parametrize('ta, tb', [(False, False), (True, True)], ids=['NN', 'TT'])
def test_packed_gemm_matches_numpy(name, case, ta, tb, tmp_path):
    """jseg_gemm::matmul against NumPy float64 products, transposes through the flags."""
    exe = _runnable(name)
    batch, m, k, n, a_batched, b_batched, summed = case
    rng = np.random.default_rng(m * k + n)
    a = rng.standard_normal(((batch,) if a_batched else ()) + ((k, m) if ta else (m, k))).astype(np.float32)
    b = rng.standard_normal(((batch,) if b_batched else ()) + ((n, k) if tb else (k, n))).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = np.matmul(np.swapaxes(a64, -1, -2) if ta else a64, np.swapaxes(b64, -1, -2) if tb else b64)
    if expected.ndim == 2 and (a_batched or b_batched):
        expected = np.broadcast_to(expected, (batch, m, n))
    if summed:
        expected = expected.sum(0)
    dims = [batch if a_batched else 0, *a.shape[-2:], int(ta), batch if b_batched else 0, *b.shape[-2:], int(tb),
            int(summed)]
    (c,) = _run(exe, 'matmul', tmp_path, dims, [a, b], [expected.shape])
    assert rel_err(c, expected) < 1e-5
