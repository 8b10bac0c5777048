"""Time jseg's OffSeg-T and the official PyTorch OffSeg-T in one run, per stage, and print both side by side.

Runs with jseg's Python (no torch here); the official side runs in another interpreter that has PyTorch,
mmengine and mmcv-lite, with a checkout of HVision-NKU/OffSeg (see ``benchmark_official_offseg.py``)::

    JSEG_OFFICIAL_PYTHON=/path/to/venv/bin/python OFFSEG_ROOT=/path/to/OffSeg \\
        python tools/dev/compare_speed.py --threads 2 --rounds 2 --json speed.json

Each round runs, in alternating order so that load changes on a shared machine hit both sides:
jseg's ``tools/benchmark.py CONFIG --shape H W --batch 1 --breakdown`` (inference), the same with
``--train --batch 2 --crop H W`` (its training part), and
``benchmark_official_offseg.py --threads N`` (inference and training). jseg gets ``OMP_NUM_THREADS=N``.
Rounds are merged by the median; the markdown table has one row per stage (speed spec of issue 14:
``speed_common.STAGES``; indented rows are counted inside the row above) plus ``other`` =
total - top-level stages, and the ratio jseg / official. ``--jseg-json`` / ``--official-json`` take
results already written by the two benchmarks instead of running them.

If the official side cannot run, it says what is missing and exits with status 2.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_common  # noqa: E402  (tools/dev)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JSEG_CONFIG = 'project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py'
OFFICIAL_CONFIG = 'local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py'
OFFICIAL_SCRIPT = os.path.join(ROOT, 'tools', 'dev', 'benchmark_official_offseg.py')
OFFICIAL_MODULES = ('torch', 'mmengine', 'mmcv', 'numpy')
SECTIONS = ('inference', 'train')
EXIT_UNAVAILABLE = 2


class SideFailed(RuntimeError):
    """A benchmark subprocess failed or wrote no usable JSON."""


# ---------------------------------------------------------------------------------------------- official side

def probe_modules(python, modules=OFFICIAL_MODULES, timeout=120):
    """Names in ``modules`` that ``python`` cannot find (``importlib.util.find_spec``), or raises OSError."""
    code = ('import importlib.util, sys\n'
            'print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))')
    proc = subprocess.run([python, '-c', code, *modules], capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise OSError(f'{python} -c ... exited with status {proc.returncode}: '
                      f'{(proc.stderr.strip().splitlines() or [""])[-1]}')
    return proc.stdout.split()


def official_problems(python, offseg_root, config=OFFICIAL_CONFIG, probe=probe_modules):
    """What keeps the official side from running: a list of messages (empty when it can run)."""
    problems = []
    if not python:
        problems.append('no official Python: pass --official-python or set JSEG_OFFICIAL_PYTHON to an interpreter '
                        f'with {", ".join(OFFICIAL_MODULES)} (PyTorch CPU, mmengine 0.10.x, mmcv-lite 2.1.0)')
    elif not (os.path.isfile(python) and os.access(python, os.X_OK)):
        problems.append(f'official Python {python}: no such executable file')
    else:
        try:
            missing = probe(python)
        except (OSError, subprocess.SubprocessError) as err:
            problems.append(f'official Python {python} does not run: {err}')
        else:
            if missing:
                problems.append(f'official Python {python} lacks the module(s) {", ".join(missing)}')
    if not offseg_root:
        problems.append('no OffSeg checkout: pass --offseg-root or set OFFSEG_ROOT to a checkout of HVision-NKU/OffSeg')
    elif not os.path.isfile(os.path.join(offseg_root, config)):
        problems.append(f'OffSeg checkout {offseg_root}: {config} not found in it')
    return problems


# ---------------------------------------------------------------------------------------------- running

def jseg_commands(args, json_inference, json_train):
    """The ``tools/benchmark.py`` command lines of one round (inference; training when asked)."""
    base = [sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), args.config,
            '--shape', *map(str, args.shape), '--runs', str(args.runs), '--warmup', str(args.warmup), '--breakdown']
    commands = [base + ['--batch', '1', '--json', json_inference]]
    if not args.no_train:
        commands.append(base + ['--batch', str(args.train_batch), '--train', '--crop', *map(str, args.crop),
                                '--json', json_train])
    return commands


def official_command(args, json_path):
    cmd = [args.official_python, OFFICIAL_SCRIPT, '--offseg-root', args.offseg_root, '--threads', str(args.threads),
           '--runs', str(args.runs), '--warmup', str(args.warmup), '--shape', *map(str, args.shape),
           '--crop', *map(str, args.crop), '--train-batch', str(args.train_batch), '--json', json_path]
    return cmd + (['--no-train'] if args.no_train else [])


def run_command(cmd, env, timeout, log):
    """Run ``cmd``; its output goes to ``log``; raises SideFailed on a non-zero status."""
    log.write(f'\n$ {" ".join(cmd)}\n')
    log.flush()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    log.write(proc.stdout)
    log.flush()
    if proc.returncode:
        tail = '\n'.join(proc.stdout.strip().splitlines()[-15:])
        raise SideFailed(f'{cmd[1]} exited with status {proc.returncode}:\n{tail}')


def read_result(path, side):
    """A benchmark's JSON (speed spec layout), or SideFailed naming the file."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as err:
        raise SideFailed(f'{side} results {path}: cannot read ({err})') from None
    if not isinstance(result, dict) or not any(isinstance(result.get(s), dict) for s in SECTIONS):
        raise SideFailed(f'{side} results {path}: no "inference" or "train" section (not the speed-spec layout; '
                         f'does tools/benchmark.py support --breakdown?)')
    for section in SECTIONS:
        if section in result and not isinstance(result[section].get('total', {}).get('median'), (int, float)):
            raise SideFailed(f'{side} results {path}: "{section}" has no total.median')
    return result


def jseg_round(args, tmp, index, log):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    paths = [os.path.join(tmp, f'jseg_inference_{index}.json'), os.path.join(tmp, f'jseg_train_{index}.json')]
    for cmd in jseg_commands(args, *paths):
        run_command(cmd, env, args.timeout, log)
    result = read_result(paths[0], 'jseg')
    result.pop('train', None)
    if not args.no_train:
        result['train'] = read_result(paths[1], 'jseg')['train']
    return result


def official_round(args, tmp, index, log):
    path = os.path.join(tmp, f'official_{index}.json')
    run_command(official_command(args, path), dict(os.environ), args.timeout, log)
    return read_result(path, 'official')


# ---------------------------------------------------------------------------------------------- merging

def merge_rounds(results):
    """One result from several rounds of one side: medians of the per-round medians (min of mins, max of maxes)."""
    merged = {k: v for k, v in results[0].items() if k not in SECTIONS}
    for section in SECTIONS:
        parts = [r[section] for r in results if isinstance(r.get(section), dict)]
        if not parts:
            continue
        totals = [p['total'] for p in parts]
        total = dict(median=statistics.median(t['median'] for t in totals),
                     min=min(t.get('min', t['median']) for t in totals),
                     max=max(t.get('max', t['median']) for t in totals))
        cpu = [t['cpu_median'] for t in totals if 'cpu_median' in t]
        if cpu:
            total['cpu_median'] = statistics.median(cpu)
        keys = [k for k in _ordered({k for p in parts for k in p.get('stages', {})})]
        stages = {k: statistics.median(p['stages'][k] for p in parts if k in p.get('stages', {})) for k in keys}
        out = {k: v for k, v in parts[0].items() if k not in ('total', 'stages', 'runs')}
        out.update(total=total, stages=stages, runs=sum(p.get('runs', 0) for p in parts), rounds=len(parts))
        merged[section] = out
    return merged


def _ordered(keys):
    known = [k for k in speed_common.STAGES if k in keys]
    return known + sorted(set(keys) - set(known))


def other_time(section):
    """total - sum of the top-level stages (the work between stages), or None without stages."""
    stages = section.get('stages') or {}
    if not stages:
        return None
    return section['total']['median'] - sum(v for k, v in stages.items() if not speed_common.is_nested(k))


def ratio(jseg, official):
    """jseg / official, or None when either is missing or official is not positive."""
    if jseg is None or official is None or official <= 0:
        return None
    return jseg / official


# ---------------------------------------------------------------------------------------------- report

def _seconds(value):
    return '—' if value is None else f'{value:.4f}'


def _ratio_text(value):
    return '—' if value is None else f'{value:.2f}'


def table_rows(jseg, official, section):
    """[(key, jseg s, official s, ratio)] of one section: ``total``, the stages in spec order, ``other``."""
    js, of = jseg.get(section) or {}, official.get(section) or {}
    rows = [('total', (js.get('total') or {}).get('median'), (of.get('total') or {}).get('median'))]
    for key in _ordered(set(js.get('stages', {})) | set(of.get('stages', {}))):
        rows.append((key, js.get('stages', {}).get(key), of.get('stages', {}).get(key)))
    rows.append(('other', other_time(js) if js else None, other_time(of) if of else None))
    return [(key, a, b, ratio(a, b)) for key, a, b in rows]


def _label(key):
    if key == 'total':
        return '**total**'
    if key == 'other':
        return 'other (total − top-level stages)'
    return ('&nbsp;&nbsp;↳ ' if speed_common.is_nested(key) else '') + f'`{key}`'


def format_table(jseg, official, section):
    """Markdown table (list of lines) of one section."""
    lines = ['| stage | jseg s | official s | ratio |', '|---|---:|---:|---:|']
    for key, a, b, r in table_rows(jseg, official, section):
        lines.append(f'| {_label(key)} | {_seconds(a)} | {_seconds(b)} | {_ratio_text(r)} |')
    return lines


def format_report(jseg, official, machine):
    """The whole markdown report: machine lines, then one table per section present."""
    cpu = machine['cpu']
    loads = [x for x in machine.get('load_averages', []) if x is not None]
    lines = [f'CPU: {cpu["model"]}; vector extensions: {" ".join(cpu["flags"]) or "none listed"}',
             f'threads: {machine["threads"]}; load average (1 min) during the run: '
             + (f'{min(loads):.2f}–{max(loads):.2f}' if loads else 'unknown'),
             f'rounds: {machine.get("rounds", 1)}; jseg versions: {_versions(jseg)}; '
             f'official versions: {_versions(official)}']
    for section in SECTIONS:
        if section not in jseg and section not in official:
            continue
        shape = (jseg.get(section) or official.get(section) or {}).get('shape')
        title = 'inference' if section == 'inference' else 'training iteration'
        lines += ['', f'{title}{" " + "x".join(map(str, shape)) if shape else ""} (medians; ratio = jseg / official)',
                  ''] + format_table(jseg, official, section)
    return '\n'.join(lines)


def side_loads(result):
    """The load averages a benchmark recorded: ``load_average`` as a number or a dict of numbers."""
    value = result.get('load_average')
    values = value.values() if isinstance(value, dict) else [value]
    return [v for v in values if isinstance(v, (int, float))]


def _versions(result):
    versions = result.get('versions') or {}
    return ', '.join(f'{k} {v}' for k, v in versions.items()) or 'unknown'


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=JSEG_CONFIG, help='jseg config (default: %(default)s)')
    parser.add_argument('--official-python', default=os.environ.get('JSEG_OFFICIAL_PYTHON'),
                        help='interpreter with PyTorch, mmengine, mmcv-lite (default: $JSEG_OFFICIAL_PYTHON)')
    parser.add_argument('--offseg-root', default=os.environ.get('OFFSEG_ROOT'),
                        help='checkout of HVision-NKU/OffSeg (default: $OFFSEG_ROOT)')
    parser.add_argument('--rounds', type=int, default=1, help='rounds of both sides, alternating (default: 1)')
    parser.add_argument('--runs', type=int, default=5, help='timed calls per measurement (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls first (default: %(default)s)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='threads of both sides (default: all)')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--crop', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--train-batch', type=int, default=2, help='training batch (default: 2)')
    parser.add_argument('--no-train', action='store_true', help='only inference')
    parser.add_argument('--jseg-json', nargs='+', default=None, metavar='FILE',
                        help='jseg results already written (one per round) instead of running jseg')
    parser.add_argument('--official-json', nargs='+', default=None, metavar='FILE',
                        help='official results already written (one per round) instead of running them')
    parser.add_argument('--timeout', type=int, default=3600, help='seconds per benchmark process (default: 3600)')
    parser.add_argument('--log', default=None, metavar='FILE', help='benchmark output (default: stderr)')
    parser.add_argument('--json', default=None, metavar='FILE', help='write rounds, merged results and ratios')
    args = parser.parse_args(argv)
    if min(args.rounds, args.runs, args.threads, args.train_batch, *args.shape, *args.crop) < 1 or args.warmup < 0:
        parser.error('--rounds, --runs, --threads, --train-batch and sizes must be positive, --warmup >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.strftime('%Y-%m-%d %H:%M:%S %Z')
    if args.official_json is None:
        problems = official_problems(args.official_python, args.offseg_root)
        if problems:
            print('error: the official side is unavailable:', file=sys.stderr)
            for problem in problems:
                print(f'  - {problem}', file=sys.stderr)
            return EXIT_UNAVAILABLE
    log = open(args.log, 'a') if args.log else sys.stderr
    rounds, loads = [], [speed_common.load_average()]
    try:
        with tempfile.TemporaryDirectory(prefix='jseg_speed_') as tmp:
            for index in range(args.rounds if (args.jseg_json is None or args.official_json is None) else 0):
                order = ('jseg', 'official') if index % 2 == 0 else ('official', 'jseg')
                entry = {}
                for side in order:
                    if side == 'jseg' and args.jseg_json is None:
                        entry['jseg'] = jseg_round(args, tmp, index, log)
                    elif side == 'official' and args.official_json is None:
                        entry['official'] = official_round(args, tmp, index, log)
                    loads.append(speed_common.load_average())
                rounds.append(entry)
            jseg_results = [read_result(p, 'jseg') for p in args.jseg_json] if args.jseg_json else \
                [r['jseg'] for r in rounds]
            official_results = [read_result(p, 'official') for p in args.official_json] if args.official_json else \
                [r['official'] for r in rounds]
    except (SideFailed, subprocess.TimeoutExpired) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    finally:
        if log is not sys.stderr:
            log.close()
    jseg, official = merge_rounds(jseg_results), merge_rounds(official_results)
    if args.jseg_json or args.official_json:
        loads = []                                 # the load when the given results were taken, not now
    loads += [x for r in jseg_results + official_results for x in side_loads(r)]
    machine = dict(cpu=speed_common.cpu_info(), threads=args.threads, load_averages=loads,
                   rounds=max(len(jseg_results), len(official_results)), started=started)
    print(format_report(jseg, official, machine))
    if args.json:
        ratios = {s: {key: r for key, _, _, r in table_rows(jseg, official, s)} for s in SECTIONS
                  if s in jseg or s in official}
        speed_common.write_json(args.json, dict(machine=machine, jseg=jseg, official=official, ratios=ratios,
                                   rounds=dict(jseg=jseg_results, official=official_results)))
        print(f'\nresults written to {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
