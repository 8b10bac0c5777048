"""``import jseg`` configures Jittor before it loads, so that it never downloads anything.

The decision (:func:`plan_jittor_env`) is tested on simulated machines (CUDA, MPI, offline pack, system
NCCL, cuDNN, the user's variables) against the variables Jittor 1.3.11's ``compile_extern.py`` reads; the
searches for NCCL and cuDNN on fake install trees; the real import in fresh interpreters."""
import json
import os
import subprocess
import sys

import pytest

from jseg.jittor_env import (Machine, _make_links, apply_plan, cuda_usable, cudnn_problem, describe_machine,
                              find_system_nccl, plan_jittor_env)

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


def test_onednn_is_loaded_from_the_pack_or_the_cache():
    found = describe_machine(probe_cuda=False)
    if 'onednn' not in found.cached and 'onednn' not in found.pack_archives:
        pytest.skip('neither jittor-offline nor a oneDNN in the Jittor cache (pip install jittor-offline)')
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


# ---- the decision, on simulated machines --------------------------------------------------------------
HOME = '/home/u'
PACK = '/site/jittor_offline'
ALL_ARCHIVES = frozenset({'onednn', 'cutt', 'nccl'})
SYSTEM_NCCL = ('/opt/nccl/include', '/opt/nccl/lib/libnccl.so')
BASE = {'log_silent': '1', 'use_parallel_op_compiler': '1'}  # set on every machine the user left them unset


def machine(cuda=False, mpi=False, pack=False, nccl=None, cudnn_problem=None, cached=(), user=None):
    return Machine(cuda=cuda, mpi=mpi, jittor_home=HOME, offline_pack=PACK if pack else None,
                   pack_archives=ALL_ARCHIVES if pack else frozenset(), cached=frozenset(cached), nccl=nccl,
                   cudnn_problem=cudnn_problem, user=dict(user or {}))


@pytest.mark.parametrize('mpi', [False, True])
def test_cpu_machine_with_the_pack_only_hides_nvcc(mpi):
    # NCCL/cutt/cutlass are set up by Jittor only when it has CUDA: nothing to say about them on a CPU
    plan = plan_jittor_env(machine(cuda=False, mpi=mpi, pack=True))
    assert plan.env == {**BASE, 'nvcc_path': ''} and plan.links == {} and plan.warnings == []


def test_cpu_machine_without_pack_or_cache_turns_onednn_off_with_one_warning():
    plan = plan_jittor_env(machine(cuda=False))
    assert plan.env == {**BASE, 'nvcc_path': '', 'use_mkl': '0'}
    assert len(plan.warnings) == 1
    assert 'oneDNN off' in plan.warnings[0] and 'slower' in plan.warnings[0]
    assert 'pip install jittor-offline' in plan.warnings[0]


def test_onednn_already_in_the_cache_needs_no_pack():
    plan = plan_jittor_env(machine(cuda=False, cached={'onednn'}))
    assert plan.env == {**BASE, 'nvcc_path': ''} and plan.warnings == []


def test_cuda_with_pack_and_mpi_takes_cutt_and_nccl_from_the_pack():
    plan = plan_jittor_env(machine(cuda=True, mpi=True, pack=True))
    # Jittor copies cutt-1.2.zip and nccl.tgz from the pack: only cutlass (download only) is switched off
    assert plan.env == {**BASE, 'use_cutlass': '0'} and plan.links == {} and plan.warnings == []


def test_cuda_with_a_system_nccl_prefers_it_to_the_pack():
    plan = plan_jittor_env(machine(cuda=True, mpi=True, pack=True, nccl=SYSTEM_NCCL))
    assert plan.env == {**BASE, 'use_cutlass': '0', 'nccl_include_path': '/opt/nccl/include',
                        'nccl_lib_path': '/opt/nccl/lib'}
    assert plan.links == {} and plan.warnings == []


def test_pip_nccl_gets_the_unversioned_name_jittor_opens():
    pip_nccl = ('/site/nvidia/nccl/include', '/site/nvidia/nccl/lib/libnccl.so.2')
    plan = plan_jittor_env(machine(cuda=True, mpi=True, pack=True, nccl=pip_nccl))
    link_dir = f'{HOME}/.cache/jittor/jseg_nccl_lib'
    assert plan.env == {**BASE, 'use_cutlass': '0', 'nccl_include_path': '/site/nvidia/nccl/include',
                        'nccl_lib_path': link_dir}
    assert plan.links == {f'{link_dir}/libnccl.so': '/site/nvidia/nccl/lib/libnccl.so.2'}


def test_cuda_without_mpi_leaves_nccl_alone():
    # Jittor's setup_nccl returns at once without MPI: no variable, no warning
    plan = plan_jittor_env(machine(cuda=True, mpi=False, cached={'onednn'}))
    assert plan.env == {**BASE, 'use_cutlass': '0', 'use_cutt': '0'}
    assert len(plan.warnings) == 1 and 'cutt off' in plan.warnings[0] and 'NCCL' not in plan.warnings[0]


def test_cuda_and_mpi_with_nothing_turns_everything_off_in_one_line():
    plan = plan_jittor_env(machine(cuda=True, mpi=True))
    assert plan.env == {**BASE, 'use_mkl': '0', 'use_cutlass': '0', 'use_cutt': '0', 'use_nccl': '0'}
    assert len(plan.warnings) == 1
    line = plan.warnings[0]
    assert '\n' not in line
    for text in ('oneDNN off', 'cutt off', 'NCCL off', 'all-reduced by MPI', 'NCCL_HOME'):
        assert text in line


def test_cuda_with_everything_cached_sets_only_the_defaults():
    plan = plan_jittor_env(machine(cuda=True, mpi=True, cached={'onednn', 'cutt', 'nccl', 'cutlass'}))
    assert plan.env == BASE and plan.warnings == []


def test_force_cpu_ignores_cuda_pieces():
    plan = plan_jittor_env(machine(cuda=True, mpi=True), force_cpu=True)
    assert plan.env == {**BASE, 'nvcc_path': '', 'use_mkl': '0'}


def test_unloadable_cudnn_is_skipped_with_its_own_warning():
    plan = plan_jittor_env(machine(cuda=True, pack=True, cudnn_problem='found cuDNN 9 or later'))
    assert plan.env == {**BASE, 'use_cutlass': '0', 'conv_opt': '1'}
    assert len(plan.warnings) == 1 and 'cuDNN off (found cuDNN 9 or later)' in plan.warnings[0]


@pytest.mark.parametrize('user, left_alone', [
    ({'use_nccl': '1'}, {'use_nccl'}),
    ({'nccl_include_path': '/mine/include'}, {'use_nccl'}),
    ({'use_cutt': '1'}, {'use_cutt'}),
    ({'CUTT_PATH': '/mine/cutt'}, {'use_cutt'}),
    ({'use_cutlass': '1'}, {'use_cutlass'}),
    ({'cutlass_include_path': '/mine/cutlass'}, {'use_cutlass'}),
    ({'use_mkl': '1'}, {'use_mkl'}),
    ({'mkl_include_path': '/i', 'mkl_lib_path': '/l'}, {'use_mkl'}),
    ({'conv_opt': '0'}, {'conv_opt'}),
    ({'log_silent': '0', 'use_parallel_op_compiler': '16'}, {'log_silent', 'use_parallel_op_compiler'}),
])
def test_user_settings_win(user, left_alone):
    # a CUDA + MPI machine with nothing, where jseg sets every piece: the user's piece is left alone
    plan = plan_jittor_env(machine(cuda=True, mpi=True, cudnn_problem='no cuDNN', user=user))
    every = {**BASE, 'use_mkl': '0', 'use_cutlass': '0', 'use_cutt': '0', 'use_nccl': '0', 'conv_opt': '1'}
    assert plan.env == {k: v for k, v in every.items() if k not in left_alone}


# ---- searches on fake install trees -------------------------------------------------------------------
def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('')
    return path


def test_find_system_nccl_order_and_layouts(tmp_path):
    site = tmp_path / 'site-packages'
    _touch(site / 'nvidia/nccl/include/nccl.h')
    lib = _touch(site / 'nvidia/nccl/lib/libnccl.so.2')
    system = find_system_nccl({})  # an NCCL in /usr on the test machine comes before pip's
    assert find_system_nccl({}, site_packages=[str(site)]) == (system or (str(site / 'nvidia/nccl/include'), str(lib)))
    home = tmp_path / 'nccl'
    _touch(home / 'include/nccl.h')
    _touch(home / 'lib/libnccl.so.2.18.1')
    exact = _touch(home / 'lib/libnccl.so')
    assert find_system_nccl({'NCCL_HOME': str(home)}, site_packages=[str(site)]) == (str(home / 'include'), str(exact))
    cuda = tmp_path / 'cuda'
    _touch(cuda / 'include/nccl.h')
    cuda_lib = _touch(cuda / 'lib64/libnccl.so.2')
    assert find_system_nccl({'CUDA_HOME': str(cuda), 'NCCL_HOME': str(tmp_path / 'none')}) == (
        str(cuda / 'include'), str(cuda_lib))
    ld = tmp_path / 'ld'
    _touch(ld / 'include/nccl.h')
    ld_lib = _touch(ld / 'lib/libnccl.so.2')
    assert find_system_nccl({'LD_LIBRARY_PATH': f'/nonexistent:{ld / "lib"}'}) == (str(ld / 'include'), str(ld_lib))


def test_find_system_nccl_needs_header_and_library(tmp_path):
    home = tmp_path / 'nccl'
    _touch(home / 'lib/libnccl.so')  # no nccl.h
    assert find_system_nccl({'NCCL_HOME': str(home)}) == find_system_nccl({})


def _fake_toolkit(tmp_path, libs, header=True):
    root = tmp_path / 'cuda'
    nvcc = _touch(root / 'bin/nvcc')
    if header:
        _touch(root / 'include/cudnn.h')
    for name in libs:
        _touch(root / 'lib64' / name)
    return str(nvcc)


CUDNN8 = ['libcudnn.so', 'libcudnn_ops_infer.so', 'libcudnn_ops_train.so', 'libcudnn_cnn_infer.so',
          'libcudnn_cnn_train.so']
CUDNN9 = ['libcudnn.so', 'libcudnn_ops.so', 'libcudnn_cnn.so', 'libcudnn_graph.so']
SYSTEM_CUDNN8 = os.path.isfile('/usr/include/cudnn.h') and all(
    os.path.isfile(os.path.join('/usr/lib/x86_64-linux-gnu', n)) for n in CUDNN8)


@pytest.mark.skipif(SYSTEM_CUDNN8, reason='a system cuDNN 8 in /usr satisfies every fake toolkit')
def test_cudnn_problem_in_a_toolkit(tmp_path):
    assert cudnn_problem(_fake_toolkit(tmp_path / 'a', CUDNN8)) is None
    assert 'cuDNN 8 only' in cudnn_problem(_fake_toolkit(tmp_path / 'b', CUDNN9))
    site = tmp_path / 'site-packages'
    _touch(site / 'nvidia/cudnn/lib/libcudnn.so.9')
    problem = cudnn_problem(_fake_toolkit(tmp_path / 'c', [], header=False), site_packages=[str(site)])
    assert 'only in' in problem and str(site / 'nvidia' / 'cudnn') in problem
    assert 'not in' in cudnn_problem(_fake_toolkit(tmp_path / 'd', [], header=False))


def test_make_links_is_idempotent_and_replaces_stale_links(tmp_path):
    target_a, target_b = _touch(tmp_path / 'a.so.2'), _touch(tmp_path / 'b.so.2')
    link = tmp_path / 'links' / 'libnccl.so'
    _make_links({str(link): str(target_a)})
    _make_links({str(link): str(target_a)})
    assert os.readlink(link) == str(target_a)
    _make_links({str(link): str(target_b)})
    assert os.readlink(link) == str(target_b) and sorted(os.listdir(link.parent)) == ['libnccl.so']


def test_apply_plan_sets_links_variables_and_one_line_per_warning(tmp_path):
    import io
    target = _touch(tmp_path / 'nvidia/nccl/lib/libnccl.so.2')
    plan = plan_jittor_env(Machine(cuda=True, mpi=True, jittor_home=str(tmp_path / 'home'),
                                   nccl=(str(tmp_path / 'nvidia/nccl/include'), str(target))))
    environ, stream = {'PATH': '/bin'}, io.StringIO()
    apply_plan(plan, environ, stream)
    link_dir = tmp_path / 'home/.cache/jittor/jseg_nccl_lib'
    assert environ == {'PATH': '/bin', **plan.env} and environ['nccl_lib_path'] == str(link_dir)
    assert os.path.realpath(link_dir / 'libnccl.so') == str(target)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith('jseg: warning: oneDNN off') and 'cutt off' in lines[0]
