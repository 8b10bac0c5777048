"""tools/gpu_check.py on the CPU: arguments, the dry-run listing, judging step outputs, running steps
with timeouts, the time budget and the report files. The CUDA steps themselves need a GPU."""
import json
import os
import subprocess
import sys

import pytest
from tool_helpers import ROOT, load_tool

gpu_check = load_tool('gpu_check')
STEP_NAMES = ['jittor_cuda', 'op_tests', 'benchmark_ops', 'demo_train', 'benchmark_infer', 'benchmark_train',
              'mpirun_nccl']


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / 'report'
    assert gpu_check.main(['--out', str(out), '--dry-run']) == 0
    text = capsys.readouterr().out
    assert text.startswith('7 steps, time budget 600 s')
    for i, name in enumerate(STEP_NAMES, 1):
        assert f'{i}. {name} (timeout ' in text
    for command in ('-m pytest tests/ops -q -rs -k use_cuda', 'use_cuda=1 ', 'tools/benchmark_ops.py --json',
                    'max_iters=20 eval_interval=20', '--shape 512 512 --batch 1 --json',
                    '--shape 512 512 --train --batch 8 --json', 'mpirun -np 1', 'tools/gpu_check.py --probe nccl'):
        assert command in text, command
    assert str(out / 'benchmark_infer.json') in text and not out.exists()


def test_only_selects_steps(capsys):
    assert gpu_check.main(['--out', 'x', '--dry-run', '--only', 'mpirun_nccl', 'op_tests']) == 0
    text = capsys.readouterr().out
    assert text.startswith('2 steps') and '1. op_tests' in text and '2. mpirun_nccl' in text


@pytest.mark.parametrize('argv, message', [
    (['--dry-run'], 'error: --out DIR is required'),
    (['--out', 'x', '--only', 'op_tests', 'gpu'], 'error: --only: unknown step(s) gpu; steps: jittor_cuda,'),
    (['--out', 'x', '--budget', '-5'], 'error: --budget must be 0 or more, got -5'),
    (['--out', 'x', '--probe', 'cpu'], "error: argument --probe: invalid choice: 'cpu'"),
])
def test_argument_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count('\n') == 1


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / 'file').write_text('')
    with pytest.raises(SystemExit):
        gpu_check.main(['--out', str(tmp_path / 'file')])
    assert 'exists and is not a folder' in capsys.readouterr().err


def test_no_cuda_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gpu_check.USER_ENV, 'JSEG_NO_CUDA', '1')
    assert gpu_check.main(['--out', str(tmp_path / 'r')]) == 1
    err = capsys.readouterr().err
    assert err == ('error: JSEG_NO_CUDA is set; tools/gpu_check.py runs only on a CUDA machine '
                   '(--dry-run lists the steps)\n')
    assert not (tmp_path / 'r').exists()


@pytest.mark.skipif(gpu_check._jseg_module('jittor_env.py').cuda_usable(), reason='CUDA works here')
def test_no_usable_cuda_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(gpu_check.USER_ENV, 'JSEG_NO_CUDA', raising=False)
    assert gpu_check.main(['--out', str(tmp_path / 'r')]) == 1
    assert capsys.readouterr().err.startswith('error: no usable CUDA here')


def _step(expect='rc0', argv=None, timeout_s=30):
    return gpu_check.Step('s', 'a step', argv or ['true'], timeout_s, expect=expect)


@pytest.mark.parametrize('expect, rc, output, passed, summary', [
    ('pytest', 0, '....\n4 passed, 12 deselected in 3.1s\n', True, '4 passed, 12 deselected in 3.1s'),
    ('pytest', 0, 's.\n1 passed, 1 skipped, 12 deselected\n', False, '1 CUDA test(s) skipped'),
    ('pytest', 5, '16 deselected in 0.5s\n', False, 'rc 5: 16 deselected'),
    ('pytest', 1, '1 failed, 3 passed\n', False, 'rc 1: 1 failed, 3 passed'),
    ('miou', 0, 'iter 20 loss 0.3\nval: aAcc: 91.20  mIoU: 45.67  mAcc: 50.10\nsaved best_mIoU_iter_20.npz\n', True,
     'mIoU 45.67'),
    ('miou', 0, 'trained\n', False, 'no mIoU in the output: trained'),
    ('probe', 0, 'x\nGPU_CHECK_PROBE {"ok": true, "summary": "fine"}\n', True, 'fine'),
    ('probe', 1, 'GPU_CHECK_PROBE {"ok": false, "summary": "no NCCL"}\n', False, 'no NCCL'),
    ('probe', 1, 'GPU_CHECK_PROBE {"ok": true, "summary": "fine"}\n', False, 'fine'),  # rc wins
    ('probe', 139, 'Segmentation fault\n', False, 'rc 139, no probe result: Segmentation fault'),
    ('rc0', 0, 'inference median: 0.1 s\n', True, 'inference median: 0.1 s'),
    ('rc0', 2, '', False, 'rc 2: (no output)'),
])
def test_judge(expect, rc, output, passed, summary):
    ok, text = gpu_check.judge(_step(expect), rc, output)
    assert ok is passed and text.startswith(summary)


def test_run_step_captures_output_and_status(tmp_path):
    log = tmp_path / 'logs' / 'ok.log'
    step = _step(argv=[sys.executable, '-c', 'import sys; print("hello"); print("warn", file=sys.stderr)'])
    result = gpu_check.run_step(step, 30, str(log), dict(os.environ))
    assert (result.status, result.rc) == ('passed', 0) and result.summary in ('hello', 'warn')
    text = log.read_text()
    assert 'hello' in text and 'warn' in text and text.startswith('$ ')

    failing = gpu_check.run_step(_step(argv=[sys.executable, '-c', 'raise SystemExit(3)']), 30,
                                 str(tmp_path / 'fail.log'), dict(os.environ))
    assert (failing.status, failing.rc) == ('failed', 3)

    missing = gpu_check.run_step(_step(argv=['/nonexistent/command']), 30, str(tmp_path / 'm.log'), {})
    assert missing.status == 'failed' and missing.summary.startswith('cannot start')


def test_run_step_kills_a_step_past_its_timeout(tmp_path):
    # In its own interpreter: Jittor (imported by this test process) ends its process when a child is killed
    # by a signal, and gpu_check itself never imports Jittor. The step starts a grandchild: the group goes.
    code = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import gpu_check
sleeper = ('import subprocess, sys, time; '
           'subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]); time.sleep(60)')
step = gpu_check.Step('slow', 'sleeps', [sys.executable, '-c', sleeper], 60)
result = gpu_check.run_step(step, 1, sys.argv[2], dict(os.environ))
print(json.dumps([result.status, result.seconds, result.summary, 'jittor' in sys.modules]))
"""
    done = subprocess.run([sys.executable, '-c', code, os.path.join(ROOT, 'tools'), str(tmp_path / 't.log')],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    status, seconds, summary, imported_jittor = json.loads(done.stdout.splitlines()[-1])
    assert (status, summary, imported_jittor) == ('timeout', 'killed after 1 s', False) and seconds < 20


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_run_check_budget_and_report(tmp_path):
    clock = FakeClock()
    steps = [gpu_check.Step(name, f'does {name}', ['cmd', name], timeout, expect='rc0')
             for name, timeout in (('first', 100), ('second', 400), ('third', 300), ('fourth', 50))]
    given = {}

    def runner(step, timeout_s, log_path, env):
        given[step.name] = timeout_s
        spent = {'first': 80, 'second': 400, 'third': 300}[step.name]
        clock.now += spent
        status = {'first': 'passed', 'second': 'timeout', 'third': 'failed'}[step.name]
        return gpu_check.StepResult(step.name, step.what, ' '.join(step.argv), status, float(spent), rc=0,
                                    summary=f'{step.name} summary', log=log_path)

    out = tmp_path / 'report'
    report = gpu_check.run_check(steps, str(out), 500, {}, clock=clock, runner=runner)
    # the budget cuts each step's timeout to what is left; nothing is left for the fourth
    assert given == {'first': 100, 'second': 400, 'third': 20}
    statuses = [s['status'] for s in report['steps']]
    assert statuses == ['passed', 'timeout', 'failed', 'skipped'] and report['passed'] is False
    assert report['steps'][3]['summary'] == 'time budget of 500 s spent'

    saved = json.loads((out / 'gpu_check.json').read_text())
    assert saved == json.loads(json.dumps(report)) and saved['seconds'] == 780.0
    text = (out / 'gpu_check.txt').read_text().splitlines()
    assert text[0] == 'jseg GPU check: FAILED (1/4 steps, 780 s, budget 500 s)'
    assert text[3].split() == ['first', 'passed', '80.0', 's', 'first', 'summary']
    assert text[6].split()[:2] == ['fourth', 'skipped']
    assert sorted(os.listdir(out)) == ['gpu_check.json', 'gpu_check.txt']  # no temporary files left


def test_run_check_all_passed(tmp_path):
    def runner(step, timeout_s, log_path, env):
        return gpu_check.StepResult(step.name, step.what, 'c', 'passed', 1.0, rc=0, summary='ok', log=log_path)

    steps = [gpu_check.Step('a', 'a', ['a'], 10), gpu_check.Step('b', 'b', ['b'], 10)]
    report = gpu_check.run_check(steps, str(tmp_path), 0, {}, runner=runner)
    assert report['passed'] is True
    assert (tmp_path / 'gpu_check.txt').read_text().startswith('jseg GPU check: PASSED (2/2 steps')


def test_probe_on_a_cpu_machine_reports_no_cuda():
    env = {k: v for k, v in os.environ.items() if k != 'nvcc_path'}
    env['JSEG_NO_CUDA'] = '1'
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'), '--probe', 'jittor'],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-2000:]
    line = [x for x in done.stdout.splitlines() if x.startswith('GPU_CHECK_PROBE ')][-1]
    probe = json.loads(line[len('GPU_CHECK_PROBE '):])
    assert probe['ok'] is False and probe['has_cuda'] is False and probe['summary'].startswith('jittor 1.')
    assert 'CUDA NO' in probe['summary'] and probe['env']['nvcc_path'] == ''
