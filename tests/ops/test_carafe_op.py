"""The JIT-compiled CARAFE operator against the pure-Jittor composition and finite differences."""
import os
import subprocess
import sys

import jittor as jt
import numpy as np
import pytest

import jseg.ops as ops
from jseg.ops import carafe_kernel
from jseg.ops.carafe import carafe_reference
from jseg.ops.carafe_kernel import CarafeFunction, carafe_fused
from jseg.ops.csrc_bundle import bundle_source
from ops_test_helpers import (DEVICES, assert_compiles_with_nvcc, carafe_case_data, check_finite_differences,
                              count_calls, cuda_stub, on_device, rel_err, var64)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (B, C, h, w, G, k, s): odd sizes, batch > 1, groups > 1, k in {3, 5}, s in {1, 2}
CASES = [
    (2, 6, 5, 7, 2, 3, 2),
    (1, 4, 6, 5, 1, 5, 1),
    (2, 3, 4, 4, 3, 5, 2),
    (1, 8, 7, 3, 4, 3, 1),
    (3, 2, 1, 2, 1, 5, 2),     # a single source row: every tap row but one is padding
    (2, 32, 96, 64, 4, 5, 2),  # above the kernels' threshold for running on several threads
]
IMPLS = ['blocked', 'elementwise']


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', CASES, ids=lambda c: 'B{}C{}h{}w{}G{}k{}s{}'.format(*c))
def test_forward_and_gradients_match_composition(case, impl, device):
    b, c, h, w, g, k, s = case
    d = carafe_case_data(case)
    with on_device(device):
        fv, mv = jt.array(d['f']), jt.array(d['m'])
        out = carafe_fused(fv, mv, k, g, s, impl=impl)
        assert out.shape == (b, c, h * s, w * s) and out.dtype == jt.float32
        assert rel_err(out.numpy(), d['out']) < 1e-5
        d_f, d_m = jt.grad((out * jt.array(d['dout'])).sum(), [fv, mv])
        assert rel_err(d_f.numpy(), d['d_f']) < 1e-5
        assert rel_err(d_m.numpy(), d['d_m']) < 1e-5


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', [(1, 2, 3, 4, 1, 3, 2), (2, 4, 3, 3, 2, 5, 1)], ids=['k3s2', 'k5s1G2'])
def test_gradients_match_finite_differences_float64(case, impl, device):
    """The backward kernels (called directly) against central differences of the forward kernel."""
    b, c, h, w, g, k, s = case
    rng = np.random.default_rng(7)
    f = rng.standard_normal((b, c, h, w))
    m = rng.random((b, g * k * k, h * s, w * s))
    dout = rng.standard_normal((b, c, h * s, w * s))

    with on_device(device):
        def loss(arrays):
            out = CarafeFunction().execute(var64(arrays[0]), var64(arrays[1]), k, g, s, impl)
            return float((out.numpy() * dout).sum())

        fn = CarafeFunction()
        out = fn.execute(var64(f), var64(m), k, g, s, impl)
        assert out.dtype == jt.float64
        d_f, d_m = fn.grad(var64(dout))
        assert d_f.dtype == jt.float64 and d_m.dtype == jt.float64
        check_finite_differences(loss, [f, m], [d_f.numpy(), d_m.numpy()], rng, tol=1e-7)


@pytest.mark.parametrize('impl', IMPLS)
def test_float64_forward_matches_composition(impl):
    rng = np.random.default_rng(3)
    f, m = rng.standard_normal((2, 4, 5, 3)), rng.random((2, 2 * 9, 10, 6))
    out = carafe_fused(var64(f), var64(m), 3, 2, 2, impl=impl)
    ref = carafe_reference(var64(f), var64(m), 3, 2, 2)
    assert out.dtype == jt.float64
    assert rel_err(out.numpy(), ref.numpy()) < 1e-12


def test_repeated_calls_do_not_accumulate():
    """Jittor reuses output buffers without zeroing them: every kernel must initialise its output."""
    d = carafe_case_data(CASES[0])
    b, c, h, w, g, k, s = CASES[0]
    fv, mv = jt.array(d['f']), jt.array(d['m'])
    for _ in range(3):
        out = carafe_fused(fv, mv, k, g, s)
        d_f, d_m = jt.grad((out * jt.array(d['dout'])).sum(), [fv, mv])
        assert rel_err(out.numpy(), d['out']) < 1e-5
        assert rel_err(d_f.numpy(), d['d_f']) < 1e-5 and rel_err(d_m.numpy(), d['d_m']) < 1e-5


def test_gradient_of_masks_only():
    d = carafe_case_data(CASES[1])
    b, c, h, w, g, k, s = CASES[1]
    fv, mv = jt.array(d['f']).stop_grad(), jt.array(d['m'])
    out = carafe_fused(fv, mv, k, g, s)
    (d_m,) = jt.grad((out * jt.array(d['dout'])).sum(), [mv])
    assert rel_err(d_m.numpy(), d['d_m']) < 1e-5


def test_rejects_bad_arguments():
    f, m = jt.zeros((1, 4, 3, 3)), jt.zeros((1, 9, 6, 6))
    with pytest.raises(ValueError, match='masks must have shape'):
        carafe_fused(f, m, 3, 1, 1)
    with pytest.raises(ValueError, match='odd'):
        carafe_fused(f, jt.zeros((1, 4, 6, 6)), 2, 1, 2)
    with pytest.raises(ValueError, match='groups'):
        carafe_fused(f, jt.zeros((1, 27, 6, 6)), 3, 3, 2)
    with pytest.raises(ValueError, match='impl'):
        carafe_fused(f, m, 3, 1, 2, impl='nope')


def test_public_carafe_dispatches_to_the_kernel(monkeypatch):
    calls = count_calls(monkeypatch, CarafeFunction)
    d = carafe_case_data(CASES[0])
    b, c, h, w, g, k, s = CASES[0]
    with ops.fused_ops(True):
        out = ops.carafe(jt.array(d['f']), jt.array(d['m']), k, g, s)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-5
    with ops.fused_ops(False):
        out = ops.carafe(jt.array(d['f']), jt.array(d['m']), k, g, s)
        assert len(calls) == 1 and rel_err(out.numpy(), d['out']) < 1e-6


def test_switch_from_config_and_environment():
    previous = ops.fused_ops_enabled()
    try:
        assert ops.configure_fused_ops(dict(use_fused_ops=False)) is False
        assert ops.configure_fused_ops(dict(model=None)) is False          # no key: unchanged
        assert ops.configure_fused_ops(dict(use_fused_ops=True)) is True
    finally:
        ops.use_fused_ops(previous)
    code = 'import jseg.ops as o; print(o.fused_ops_enabled())'
    env = dict(os.environ, JSEG_FUSED_OPS='0')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.stdout.strip().splitlines()[-1] == 'False', proc.stderr[-2000:]


def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Compile (no GPU needed) the CUDA source Jittor gets (csrc/carafe_cuda.cu with its headers inlined)
    and the three cuda_src calls into it, float and double, for sm_80 and sm_90."""
    sources = [bundle_source('carafe_cuda.cu')]
    for ctype in ('float', 'double'):
        for k, s in [(3, 1), (5, 2)]:
            for op, ins in [('forward', [4, 4]), ('grad_features', [4, 4, 4]), ('grad_masks', [4, 4, 4])]:
                sources.append(cuda_stub(f'carafe_{op}_{ctype}_{k}_{s}', '', carafe_kernel.cuda_source(op, k, s),
                                         ins, [4], ctype))
    assert_compiles_with_nvcc(sources, tmp_path)
