"""The C++/CUDA sources under jseg/ops/csrc: each compiles alone, and the bundles jt.code gets."""
import glob
import os
import shutil
import subprocess

import pytest

from jseg.ops.csrc_bundle import bundle_source
from jseg.ops.csrc_source import CSRC_DIR, read_source
from ops_test_helpers import find_nvcc, nvcc_command

CUDA_SOURCES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CSRC_DIR, '*.cu')))
HOST_SOURCES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CSRC_DIR, '*.h'))
                      + glob.glob(os.path.join(CSRC_DIR, '*.cc')))


def test_every_source_is_found():
    assert {'carafe_cuda.cu', 'offset_attention_gemm_cuda.cu'} <= set(CUDA_SOURCES)
    assert {'host_device.h', 'cpu_simd.h', 'carafe.h', 'carafe_cpu.cc', 'offset_attention_gemm.h',
            'offset_attention_fused_cpu.cc'} <= set(HOST_SOURCES)


@pytest.mark.parametrize('name', CUDA_SOURCES)
def test_cuda_source_compiles_alone_for_sm80_and_sm90(name, tmp_path):
    """Each .cu file as a compiler sees it (its csrc includes found with -I); skipped only without nvcc."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip('nvcc not found: the CUDA sources are not compiled by this test')
    cmd = nvcc_command(nvcc, os.path.join(CSRC_DIR, name), tmp_path / 'out.o', [CSRC_DIR])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, ' '.join(cmd) + '\n' + (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.skipif(shutil.which('g++') is None, reason='no g++')
@pytest.mark.parametrize('name', [n for n in HOST_SOURCES])
def test_host_source_compiles_with_gxx(name, tmp_path):
    """Headers and CPU sources compile with g++ (JSEG_HD is plain ``inline`` there), OpenMP on as in Jittor."""
    cmd = ['g++', '-std=c++14', '-fopenmp', '-fsyntax-only', '-Wall', '-Werror', '-x', 'c++', '-I', CSRC_DIR,
           os.path.join(CSRC_DIR, name)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, ' '.join(cmd) + '\n' + (proc.stdout + proc.stderr)[-3000:]


def test_bundle_inlines_csrc_includes_once():
    text = bundle_source('carafe_cuda.cu')
    assert '#include "' not in text                               # nothing left for Jittor to look up
    assert text.count('#define JSEG_HOST_DEVICE_H') == 1          # host_device.h inlined once
    assert text.count('JSEG_HD T fwd_at(') == 1                   # carafe.h inlined once
    assert read_source('carafe.h').split('#include "host_device.h"')[1].strip() in text
    cpu = bundle_source('offset_attention_gemm_cpu.cc')
    assert '#include <algorithm>' in cpu                          # system includes stay
    assert cpu.count('#define JSEG_OFFSET_ATTENTION_GEMM_H') == 1


def test_bundled_cpu_sources_compile_with_gxx(tmp_path):
    """The text jt.code gets compiles on its own, without the csrc folder on the include path."""
    for name in ('carafe_cpu.cc', 'offset_attention_fused_cpu.cc', 'offset_attention_gemm_cpu.cc'):
        path = tmp_path / name
        path.write_text(bundle_source(name))
        cmd = ['g++', '-std=c++14', '-fopenmp', '-fsyntax-only', '-x', 'c++', str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_missing_source_is_named():
    with pytest.raises(FileNotFoundError, match='no_such_kernel.cu'):
        bundle_source('no_such_kernel.cu')
