"""The GPU acceptance check: run jseg's CUDA paths on a CUDA machine and write one report.

    python tools/gpu_check.py --out work_dirs/gpu_check            # on a CUDA machine
    python tools/gpu_check.py --out work_dirs/gpu_check --dry-run  # list the steps, run nothing

Steps, each in its own process with its own timeout, its output captured in
``<out>/logs/<step>.log``; a step that fails (or times out) is recorded and the
others still run:

1. ``jittor_cuda``: ``import jseg, jittor`` with CUDA (a cold kernel cache
   compiles Jittor's core here), reporting which back-ends Jittor loaded.
2. ``op_tests``: the operator tests' CUDA cases (``tests/ops -k use_cuda``:
   forward and backward against the pure-Jittor references); none may be skipped.
3. ``benchmark_ops``: ``tools/benchmark_ops.py`` on CUDA.
4. ``demo_train``: 20 iterations of the demo training, then validation, on CUDA.
5. ``benchmark_infer`` / ``benchmark_train``: ``tools/benchmark.py`` for OffSeg-T
   at 512x512, inference batch 1 and training batch 8.
6. ``mpirun_nccl``: one process under ``mpirun`` that all-reduces a CUDA tensor
   through NCCL.

The steps share one time budget (``--budget``, 10 minutes by default, sized for
a 16-core GPU machine with a cold Jittor cache): a step gets at most what is
left, and a step that would start with under 10 s left is recorded as skipped.
The report is ``<out>/gpu_check.json`` and ``<out>/gpu_check.txt`` (written
atomically after every step). Exit status: 0 when every step passed, 1 when one
did not or when there is no usable CUDA (one ``error:`` line).
"""
import argparse
import datetime
import importlib.util
import json
import os
import os.path as osp
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from tool_common import ROOT, ArgumentParser

USER_ENV = dict(os.environ)  # before anything of jseg sets Jittor's variables: what the steps inherit
DEMO_CONFIG = 'project/offseg/demo/offset_learning_tiny_demo_shapes.py'
OFFSEG_T_CONFIG = 'project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py'
MIN_STEP_S = 10


def _jseg_module(*parts):
    """A module of jseg that imports nothing of jseg, loaded by path: ``import jseg`` would import Jittor
    in this process (compiling, taking the GPU); only the steps do that."""
    spec = importlib.util.spec_from_file_location('_gpu_check_' + parts[-1][:-3], osp.join(ROOT, 'jseg', *parts))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Step:
    """One command of the check.

    Attributes:
        name (str): identifier (log file name, ``--only``).
        what (str): one line for the report.
        argv (list[str]): the command, run in the checkout's root.
        timeout_s (int): its own limit (the shared budget may cut it shorter).
        env (dict[str, str]): variables added to the user's environment.
        expect (str): how the output is judged, see :func:`judge`.
    """
    name: str
    what: str
    argv: list
    timeout_s: int
    env: dict = field(default_factory=dict)
    expect: str = 'rc0'


@dataclass
class StepResult:
    name: str
    what: str
    command: str
    status: str  # passed | failed | timeout | skipped
    seconds: float
    rc: int = None
    summary: str = ''
    log: str = None
    data: dict = None


def mpirun_prefix(np=1):
    """``mpirun -np N`` (with ``--allow-run-as-root`` when running as root)."""
    prefix = ['mpirun', '-np', str(np)]
    if hasattr(os, 'geteuid') and os.geteuid() == 0:
        prefix.append('--allow-run-as-root')
    return prefix


def plan_steps(out_dir, python=sys.executable):
    """The steps of the check, writing their outputs under ``out_dir``."""
    me = osp.join('tools', 'gpu_check.py')
    bench = [python, osp.join('tools', 'benchmark.py'), OFFSEG_T_CONFIG, '--shape', '512', '512']
    return [
        Step('jittor_cuda', 'import jseg and Jittor with CUDA; the back-ends Jittor loaded',
             [python, me, '--probe', 'jittor'], 420, expect='probe'),
        Step('op_tests', "operator tests' CUDA cases, forward and backward against the references",
             [python, '-m', 'pytest', osp.join('tests', 'ops'), '-q', '-rs', '-k', 'use_cuda', '-p',
              'no:cacheprovider'], 300, expect='pytest'),
        Step('benchmark_ops', 'tools/benchmark_ops.py on CUDA',
             [python, osp.join('tools', 'benchmark_ops.py'), '--json', osp.join(out_dir, 'benchmark_ops.json')],
             240, env={'use_cuda': '1'}),
        Step('demo_train', '20 demo training iterations with validation, on CUDA',
             [python, osp.join('tools', 'run_net.py'), f'--config-file={DEMO_CONFIG}', '--task=train',
              '--work-dir', osp.join(out_dir, 'demo_train'), '--cfg-options', 'max_iters=20', 'eval_interval=20',
              'checkpoint_interval=20', 'log_interval=5'], 300, expect='miou'),
        Step('benchmark_infer', 'tools/benchmark.py OffSeg-T 512x512, inference batch 1',
             bench + ['--batch', '1', '--json', osp.join(out_dir, 'benchmark_infer.json')], 180),
        Step('benchmark_train', 'tools/benchmark.py OffSeg-T 512x512, training batch 8',
             bench + ['--train', '--batch', '8', '--json', osp.join(out_dir, 'benchmark_train.json')], 240),
        Step('mpirun_nccl', 'one process under mpirun all-reduces a CUDA tensor through NCCL',
             mpirun_prefix(1) + [python, me, '--probe', 'nccl'], 420, expect='probe'),
    ]


def judge(step, rc, output):
    """(passed, one-line summary) of a finished step from its exit status and output."""
    tail = [line for line in output.strip().splitlines() if line.strip()]
    last = tail[-1][:200] if tail else '(no output)'
    if step.expect == 'probe':
        found = re.findall(r'^GPU_CHECK_PROBE (\{.*\})$', output, flags=re.M)
        if not found:
            return False, f'rc {rc}, no probe result: {last}'
        probe = json.loads(found[-1])
        return rc == 0 and probe.get('ok', False), probe.get('summary', '')
    if rc != 0:
        return False, f'rc {rc}: {last}'
    if step.expect == 'pytest':
        counts = dict((word, int(n)) for n, word in re.findall(r'(\d+) (passed|failed|skipped|error)', output))
        if not counts.get('passed'):
            return False, f'no CUDA test passed: {last}'
        if counts.get('skipped'):
            return False, f'{counts["skipped"]} CUDA test(s) skipped: {last}'
        return True, last
    if step.expect == 'miou':
        found = re.findall(r'\bmIoU: ([0-9.]+)', output)
        return (True, f'mIoU {found[-1]}') if found else (False, f'no mIoU in the output: {last}')
    return True, last


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_step(step, timeout_s, log_path, env):
    """Run ``step`` with ``timeout_s``; its stdout and stderr go to ``log_path``. Returns a StepResult."""
    start = time.monotonic()
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') as log:
        log.write(f'$ {" ".join(step.argv)}\n')
        log.flush()
        try:
            proc = subprocess.Popen(step.argv, cwd=ROOT, env={**env, **step.env}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            return StepResult(step.name, step.what, ' '.join(step.argv), 'failed', 0.0, summary=f'cannot start: {err}',
                              log=log_path)
        try:
            rc = proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, timed_out = proc.wait(), True
        _kill_group(proc)  # leftovers of the group (e.g. mpirun's children)
    seconds = round(time.monotonic() - start, 1)
    with open(log_path, errors='replace') as f:
        output = f.read()
    if timed_out:
        status, summary = 'timeout', f'killed after {timeout_s} s'
    else:
        passed, summary = judge(step, rc, output)
        status = 'passed' if passed else 'failed'
    return StepResult(step.name, step.what, ' '.join(step.argv), status, seconds, rc=rc, summary=summary,
                      log=log_path, data=_step_data(step))


def _step_data(step):
    """The JSON a step wrote with ``--json FILE``, if any."""
    if '--json' not in step.argv:
        return None
    path = step.argv[step.argv.index('--json') + 1]
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def render_text(report):
    """The text report: one line per step, then the environment."""
    lines = [f'jseg GPU check: {"PASSED" if report["passed"] else "FAILED"} '
             f'({sum(s["status"] == "passed" for s in report["steps"])}/{len(report["steps"])} steps, '
             f'{report["seconds"]:.0f} s, budget {report["budget_s"]} s)',
             f'started {report["started_utc"]} on {report["host"]}, python {report["python"]}', '']
    width = max([len(s['name']) for s in report['steps']] + [4])
    for s in report['steps']:
        lines.append(f'{s["name"]:{width}s}  {s["status"]:7s} {s["seconds"]:7.1f} s  {s["summary"]}')
    lines += ['', 'logs: ' + osp.join(report['out'], 'logs'), '']
    return '\n'.join(lines)


def write_report(out_dir, report):
    """Write ``gpu_check.json`` and ``gpu_check.txt`` in ``out_dir`` atomically."""
    fileio = _jseg_module('utils', 'fileio.py')
    fileio.atomic_write_text(osp.join(out_dir, 'gpu_check.json'), json.dumps(report, indent=2) + '\n')
    fileio.atomic_write_text(osp.join(out_dir, 'gpu_check.txt'), render_text(report))


def new_report(out_dir, budget_s):
    return dict(tool='gpu_check', passed=False, seconds=0.0, budget_s=budget_s, out=osp.abspath(out_dir),
                started_utc=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'),
                host=platform.node(), python=platform.python_version(), steps=[])


def run_check(steps, out_dir, budget_s, env, clock=time.monotonic, runner=run_step):
    """Run ``steps`` within ``budget_s`` seconds (0: no budget), writing the report after each step."""
    report = new_report(out_dir, budget_s)
    start = clock()
    for step in steps:
        left = budget_s - (clock() - start) if budget_s else step.timeout_s
        if left < MIN_STEP_S:
            result = StepResult(step.name, step.what, ' '.join(step.argv), 'skipped', 0.0,
                                summary=f'time budget of {budget_s} s spent')
        else:
            result = runner(step, int(min(step.timeout_s, left)), osp.join(out_dir, 'logs', f'{step.name}.log'), env)
        report['steps'].append(asdict(result))
        report['seconds'] = round(clock() - start, 1)
        report['passed'] = all(s['status'] == 'passed' for s in report['steps']) and len(report['steps']) == len(steps)
        write_report(out_dir, report)
    return report


def dry_run_listing(steps, budget_s):
    lines = [f'{len(steps)} steps, time budget {budget_s} s (each step: at most its timeout and what is left):']
    for i, step in enumerate(steps, 1):
        env = ''.join(f'{k}={v} ' for k, v in step.env.items())
        lines.append(f'{i}. {step.name} (timeout {step.timeout_s} s): {step.what}\n   {env}{" ".join(step.argv)}')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------
# Probes: run as steps (``--probe NAME``), they print one ``GPU_CHECK_PROBE {json}`` line.


def _probe_jittor():
    import jseg  # noqa: F401  (configures Jittor)
    import jittor as jt
    from jittor import compile_extern as ce
    jt.flags.use_cuda = 1 if jt.has_cuda else 0
    loaded = {name: getattr(ce, attr, None) is not None for name, attr in
              (('oneDNN', 'mkl_ops'), ('cuDNN', 'cudnn'), ('cuBLAS', 'cublas'), ('cutt', 'cutt_ops'),
               ('MPI', 'mpi'))}
    x = jt.array([[1.0, 2.0], [3.0, 4.0]])
    value = float((x @ x).sum().item()) if jt.has_cuda else None
    keys = ('nvcc_path', 'use_mkl', 'use_cutt', 'use_nccl', 'use_cutlass', 'conv_opt', 'nccl_include_path',
            'nccl_lib_path')
    ok = bool(jt.has_cuda) and value == 54.0  # [[7,10],[15,22]] sums to 54
    summary = (f'jittor {jt.__version__}, CUDA {"yes" if jt.has_cuda else "NO"}; loaded: '
               + ', '.join(f'{k} {"yes" if v else "no"}' for k, v in loaded.items()))
    return dict(ok=ok, summary=summary, has_cuda=bool(jt.has_cuda), loaded=loaded, matmul_sum=value,
                env={k: os.environ[k] for k in keys if k in os.environ})


def _probe_nccl():
    import numpy as np
    import jseg  # noqa: F401
    import jittor as jt
    from jittor import compile_extern as ce
    info = dict(in_mpi=bool(jt.in_mpi), world_size=int(jt.world_size), has_cuda=bool(jt.has_cuda),
                nccl=ce.nccl_ops is not None, nccl_lib_path=os.environ.get('nccl_lib_path'),
                use_nccl=os.environ.get('use_nccl'))
    if not (jt.in_mpi and jt.has_cuda and ce.nccl_ops is not None):
        missing = [n for n, ok in (('mpirun', jt.in_mpi), ('CUDA', jt.has_cuda), ('NCCL', ce.nccl_ops is not None))
                   if not ok]
        return dict(ok=False, summary=f'not available: {", ".join(missing)}', **info)
    jt.flags.use_cuda = 1
    x = jt.array(np.arange(6, dtype='float32').reshape(2, 3))
    summed = ce.nccl_ops.nccl_all_reduce(x).numpy()
    via_mpi = x.mpi_all_reduce('add').numpy()
    expected = np.arange(6, dtype='float32').reshape(2, 3) * jt.world_size
    ok = np.array_equal(summed, expected) and np.array_equal(via_mpi, expected)
    return dict(ok=bool(ok), summary=f'NCCL all-reduce over {jt.world_size} process(es): '
                + ('equal to the sum' if ok else f'WRONG {summed.tolist()}'), **info)


def run_probe(name):
    probe = {'jittor': _probe_jittor, 'nccl': _probe_nccl}[name]
    try:
        result = probe()
    except Exception as err:  # a probe reports, it never hides a failure
        result = dict(ok=False, summary=f'{type(err).__name__}: {str(err).strip().splitlines()[-1:] or [""]}'[:300])
    print('GPU_CHECK_PROBE ' + json.dumps(result), flush=True)
    return 0 if result['ok'] else 1


def parse_args(argv=None):
    parser = ArgumentParser(description='Run jseg on CUDA (op tests, op benchmark, demo training, OffSeg-T '
                                        'benchmark, NCCL under mpirun) and write a JSON and a text report.')
    parser.add_argument('--out', help='report folder (created; gpu_check.json, gpu_check.txt, logs/)')
    parser.add_argument('--dry-run', action='store_true', help='list the steps and exit')
    parser.add_argument('--budget', type=int, default=600,
                        help='seconds for all steps together; 0: no limit (default: %(default)s)')
    parser.add_argument('--only', nargs='+', metavar='STEP', help='run only these steps (names as in --dry-run)')
    parser.add_argument('--probe', choices=['jittor', 'nccl'], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return args
    if not args.out:
        parser.error('--out DIR is required')
    if args.budget < 0:
        parser.error(f'--budget must be 0 or more, got {args.budget}')
    if osp.exists(args.out) and not osp.isdir(args.out):
        parser.error(f'--out {args.out} exists and is not a folder')
    names = [s.name for s in plan_steps(args.out)]
    unknown = [n for n in args.only or [] if n not in names]
    if unknown:
        parser.error(f'--only: unknown step(s) {", ".join(unknown)}; steps: {", ".join(names)}')
    return args


def no_cuda_reason():
    """Why CUDA cannot run here (checked without importing Jittor), or None."""
    if USER_ENV.get('JSEG_NO_CUDA', '').strip().lower() in ('1', 'true', 'yes', 'on'):
        return 'JSEG_NO_CUDA is set'
    if not _jseg_module('jittor_env.py').cuda_usable():
        return 'no usable CUDA here (an nvcc, the CUDA runtime and a GPU are all needed)'
    return None


def main(argv=None):
    args = parse_args(argv)
    if args.probe:
        return run_probe(args.probe)
    args.out = osp.abspath(args.out)  # the steps run in the checkout's root
    steps = plan_steps(args.out)
    if args.only:
        steps = [s for s in steps if s.name in args.only]
    if args.dry_run:
        print(dry_run_listing(steps, args.budget))
        return 0
    reason = no_cuda_reason()
    if reason:
        sys.stderr.write(f'error: {reason}; tools/gpu_check.py runs only on a CUDA machine (--dry-run lists '
                         f'the steps)\n')
        return 1
    env = {k: v for k, v in USER_ENV.items() if k != 'JSEG_NO_CUDA'}
    report = run_check(steps, args.out, args.budget, env)
    print(render_text(report))
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
