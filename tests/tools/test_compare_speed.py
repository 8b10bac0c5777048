"""tools/dev/compare_speed.py: its pure parts (merging rounds, ratios, the table, the missing-official-side
message) on hand-made results in the speed-spec layout. Nothing here runs either benchmark."""
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    module_name = f'_jseg_dev_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, 'tools', 'dev', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


cs = _load('compare_speed')
common = _load('speed_common')


def result(side, inference_total, stages, train_total=None, train_stages=None):
    """A benchmark result in the speed-spec JSON layout."""
    out = dict(side=side, config='c.py', cpu=dict(model='Test CPU', flags=['avx2']), threads=2,
               versions={'torch' if side == 'official' else 'jittor': '1.0'},
               inference=dict(shape=[1, 3, 512, 512], runs=3,
                              total=dict(median=inference_total, min=inference_total, max=inference_total),
                              stages=dict(stages)))
    if train_total is not None:
        out['train'] = dict(shape=[2, 3, 512, 512], runs=3, optimizer='AdamW',
                            total=dict(median=train_total, min=train_total, max=train_total),
                            stages=dict(train_stages or {}))
    return out


def test_ratio_is_jseg_over_official_and_none_when_undefined():
    assert cs.ratio(1.0, 4.0) == 0.25
    assert cs.ratio(None, 1.0) is None
    assert cs.ratio(1.0, None) is None
    assert cs.ratio(1.0, 0.0) is None


def test_other_is_total_minus_top_level_stages_only():
    section = dict(total=dict(median=2.0), stages={'backbone': 0.5, 'decode_head.freqfusions.0': 0.75,
                                                   'decode_head.freqfusions.0.carafe': 0.5,
                                                   'decode_head.freqfusions.0.dysampler': 0.125})
    assert cs.other_time(section) == pytest.approx(0.75)     # 2 - (0.5 + 0.75); nested not subtracted again
    assert cs.other_time(dict(total=dict(median=1.0))) is None


def test_merge_rounds_takes_medians_and_extremes():
    rounds = [result('jseg', 1.0, {'backbone': 0.2, 'resize': 0.1}, 10.0, {'loss': 1.0}),
              result('jseg', 3.0, {'backbone': 0.4}, 30.0, {'loss': 2.0}),
              result('jseg', 2.0, {'backbone': 0.9, 'resize': 0.3}, 20.0, {'loss': 9.0})]
    rounds[1]['inference']['total'].update(min=0.5, max=3.5)
    merged = cs.merge_rounds(rounds)
    inf = merged['inference']
    assert inf['total']['median'] == 2.0 and inf['total']['min'] == 0.5 and inf['total']['max'] == 3.5
    assert inf['stages'] == {'backbone': 0.4, 'resize': pytest.approx(0.2)}    # resize: median of 0.1 and 0.3
    assert inf['runs'] == 9 and inf['rounds'] == 3
    assert merged['train']['total']['median'] == 20.0 and merged['train']['stages'] == {'loss': 2.0}
    assert merged['side'] == 'jseg' and merged['threads'] == 2
    assert list(cs.merge_rounds([result('jseg', 1.0, {'resize': 1, 'backbone': 1, 'preprocess': 1})])
                ['inference']['stages']) == ['preprocess', 'backbone', 'resize']            # spec order


def test_table_rows_and_markdown():
    jseg = result('jseg', 1.0, {'backbone': 0.25, 'decode_head.freqfusions.2': 0.5,
                                'decode_head.freqfusions.2.carafe': 0.125})
    official = result('official', 2.0, {'backbone': 0.5, 'decode_head.freqfusions.2': 0.25, 'argmax': 0.5})
    rows = cs.table_rows(jseg, official, 'inference')
    assert rows == [('total', 1.0, 2.0, 0.5),
                    ('backbone', 0.25, 0.5, 0.5),
                    ('decode_head.freqfusions.2', 0.5, 0.25, 2.0),
                    ('decode_head.freqfusions.2.carafe', 0.125, None, None),
                    ('argmax', None, 0.5, None),
                    ('other', 0.25, 0.75, pytest.approx(1 / 3))]
    lines = cs.format_table(jseg, official, 'inference')
    assert lines[0] == '| stage | jseg s | official s | ratio |'
    assert '| **total** | 1.0000 | 2.0000 | 0.50 |' in lines
    assert '| &nbsp;&nbsp;↳ `decode_head.freqfusions.2.carafe` | 0.1250 | — | — |' in lines
    assert lines[-1] == '| other (total − top-level stages) | 0.2500 | 0.7500 | 0.33 |'
    assert cs.table_rows(jseg, official, 'train') == [('total', None, None, None), ('other', None, None, None)]


def test_official_problems_name_what_is_missing(tmp_path):
    python = tmp_path / 'python'
    python.write_text('#!/bin/sh\n')
    python.chmod(0o755)
    checkout = tmp_path / 'OffSeg'
    (checkout / os.path.dirname(cs.OFFICIAL_CONFIG)).mkdir(parents=True)
    (checkout / cs.OFFICIAL_CONFIG).write_text('')
    assert cs.official_problems(str(python), str(checkout), probe=lambda p: []) == []

    problems = cs.official_problems(None, None, probe=lambda p: [])
    assert len(problems) == 2
    assert 'JSEG_OFFICIAL_PYTHON' in problems[0] and 'OFFSEG_ROOT' in problems[1]
    problems = cs.official_problems(str(tmp_path / 'nope'), str(tmp_path), probe=lambda p: [])
    assert problems == [f'official Python {tmp_path / "nope"}: no such executable file',
                        f'OffSeg checkout {tmp_path}: {cs.OFFICIAL_CONFIG} not found in it']
    problems = cs.official_problems(str(python), str(checkout), probe=lambda p: ['torch', 'mmcv'])
    assert problems == [f'official Python {python} lacks the module(s) torch, mmcv']

    def broken(p):
        raise OSError('exec format error')
    assert cs.official_problems(str(python), str(checkout), probe=broken) == [
        f'official Python {python} does not run: exec format error']


def test_probe_modules_runs_the_interpreter():
    assert cs.probe_modules(sys.executable, ('json', 'no_such_module_for_jseg_tests')) == [
        'no_such_module_for_jseg_tests']


def test_main_without_official_side_exits_2_with_the_reasons(tmp_path, capsys):
    code = cs.main(['--official-python', str(tmp_path / 'nope'), '--offseg-root', str(tmp_path)])
    assert code == cs.EXIT_UNAVAILABLE == 2
    err = capsys.readouterr().err
    assert 'the official side is unavailable' in err
    assert 'no such executable file' in err and f'{cs.OFFICIAL_CONFIG} not found' in err


def test_main_from_written_results(tmp_path, capsys):
    paths = {}
    for name, res in [('j0', result('jseg', 1.0, {'backbone': 0.5}, 8.0, {'loss': 1.0})),
                      ('j1', result('jseg', 3.0, {'backbone': 0.7}, 12.0, {'loss': 3.0})),
                      ('o0', result('official', 4.0, {'backbone': 1.0}, 20.0, {'loss': 4.0}))]:
        res['load_average'] = dict(start=3.0, end=0.5) if name == 'o0' else 1.5
        paths[name] = str(tmp_path / f'{name}.json')
        with open(paths[name], 'w') as f:
            json.dump(res, f)
    out_json = str(tmp_path / 'out.json')
    assert cs.main(['--jseg-json', paths['j0'], paths['j1'], '--official-json', paths['o0'],
                    '--threads', '2', '--json', out_json]) == 0
    out = capsys.readouterr().out
    assert '| **total** | 2.0000 | 4.0000 | 0.50 |' in out          # jseg: median of 1 and 3
    assert '| `loss` | 2.0000 | 4.0000 | 0.50 |' in out
    assert 'threads: 2' in out and 'jittor 1.0' in out and 'torch 1.0' in out
    assert 'load average (1 min) during the run: 0.50–3.00' in out           # the sides' own, not now
    with open(out_json) as f:
        saved = json.load(f)
    assert saved['ratios']['train']['total'] == pytest.approx(0.5)
    assert saved['ratios']['inference']['other'] == pytest.approx((2.0 - 0.6) / (4.0 - 1.0))
    assert len(saved['rounds']['jseg']) == 2


def test_read_result_rejects_other_layouts(tmp_path):
    path = tmp_path / 'old.json'
    path.write_text(json.dumps({'inference': 1.0, 'config': 'c'}))
    with pytest.raises(cs.SideFailed, match='no "inference" or "train" section'):
        cs.read_result(str(path), 'jseg')
    path.write_text('{not json')
    with pytest.raises(cs.SideFailed, match='cannot read'):
        cs.read_result(str(path), 'jseg')


def test_jseg_commands_split_inference_and_training():
    args = cs.parse_args(['--runs', '3', '--warmup', '1', '--train-batch', '2'])
    inference, train = cs.jseg_commands(args, 'a.json', 'b.json')
    assert inference[1].endswith(os.path.join('tools', 'benchmark.py'))
    assert '--breakdown' in inference and '--train' not in inference
    assert inference[inference.index('--batch') + 1] == '1'
    assert train[train.index('--batch') + 1] == '2' and '--train' in train
    assert train[train.index('--crop') + 1:train.index('--crop') + 3] == ['512', '512']
    assert len(cs.jseg_commands(cs.parse_args(['--no-train']), 'a.json', 'b.json')) == 1


def test_cpu_info_reads_model_and_vector_flags(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nmodel name\t: Test EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma '
                    'avx512f bmi2\n\nprocessor\t: 1\nmodel name\t: other\n')
    assert common.cpu_info(str(path)) == dict(model='Test EPYC',
                                              flags=['avx', 'avx2', 'avx512f', 'fma', 'sse', 'sse2'])
    assert common.cpu_info(str(tmp_path / 'missing')) == dict(model='unknown', flags=[])
