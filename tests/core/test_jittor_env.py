"""``import jseg`` configures Jittor before it loads: CPU without a usable CUDA, offline oneDNN,
one kernel-compiler thread; what the user set is kept. Each case runs in a fresh interpreter."""
import json
import os
import subprocess
import sys

import pytest

from jseg.jittor_env import cuda_usable

PROBE = '''
import json, os
import jseg
import jittor as jt
from jittor import compile_extern
print(json.dumps(dict(use_cuda=int(jt.flags.use_cuda), use_mkl=int(compile_extern.mkl_ops is not None),
                      compiler_threads=int(jt.flags.use_parallel_op_compiler),
                      nvcc_path=os.environ.get('nvcc_path'))))
'''
USER_KEYS = ('nvcc_path', 'use_mkl', 'use_parallel_op_compiler', 'JSEG_NO_CUDA', 'use_cuda')


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in USER_KEYS}
    done = subprocess.run([sys.executable, '-c', PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_defaults_cpu_without_cuda_and_one_compiler_thread():
    flags = probe()
    assert flags['compiler_threads'] == 1
    if not cuda_usable():
        assert flags['use_cuda'] == 0 and flags['nvcc_path'] == ''


def test_no_cuda_switch_forces_the_cpu():
    flags = probe(JSEG_NO_CUDA='1')
    assert flags['use_cuda'] == 0 and flags['nvcc_path'] == ''


@pytest.mark.skipif(not any(os.path.exists(os.path.join(d, 'libdnnl.so')) for d in
                            ('/usr/lib/x86_64-linux-gnu', '/usr/lib', '/usr/local/lib')),
                    reason='no system oneDNN (apt-get install libdnnl-dev)')
def test_system_onednn_is_used():
    assert probe()['use_mkl'] == 1


def test_user_settings_are_kept():
    flags = probe(use_parallel_op_compiler='4', use_mkl='0')
    assert flags['compiler_threads'] == 4 and flags['use_mkl'] == 0


def test_env_flag_values(monkeypatch):
    from jseg.jittor_env import env_flag
    for text, expected in (('1', True), (' On', True), ('yes', True), ('0', False), ('FALSE', False), ('no', False)):
        monkeypatch.setenv('JSEG_TEST_FLAG', text)
        assert env_flag('JSEG_TEST_FLAG', not expected) is expected
    monkeypatch.setenv('JSEG_TEST_FLAG', '')
    assert env_flag('JSEG_TEST_FLAG', True) is True
    monkeypatch.delenv('JSEG_TEST_FLAG')
    assert env_flag('JSEG_TEST_FLAG', False) is False
    monkeypatch.setenv('JSEG_TEST_FLAG', 'maybe')
    with pytest.raises(ValueError, match="JSEG_TEST_FLAG='maybe'"):
        env_flag('JSEG_TEST_FLAG', False)
