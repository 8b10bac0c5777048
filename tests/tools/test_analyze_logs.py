"""tools/analyze_logs.py on synthetic JSON-lines logs whose curves are known."""
import json
import os
import sys

import numpy as np
import pytest
from tool_helpers import load_tool
from PIL import Image

pytest.importorskip('matplotlib', reason='the drawing tools need matplotlib (pip install -e .[tools])')


def write_log(path, loss_start=2.0, loss_end=0.5, miou_start=0.2, miou_end=0.6, iters=200):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for it in range(10, iters + 1, 10):
            t = it / iters
            f.write(json.dumps({'mode': 'train', 'iter': it, 'lr': 0.01 * (1 - t) + 1e-4,
                                'loss': loss_start + (loss_end - loss_start) * t, 'decode.loss_ce': 1.0,
                                'decode.acc_seg': 50.0, 'time': 0.5, 'data_time': 0.01, 'eta_seconds': 5}) + '\n')
            if it % 50 == 0:
                f.write(json.dumps({'mode': 'val', 'iter': it, 'aAcc': 0.8,
                                    'mIoU': miou_start + (miou_end - miou_start) * t, 'mAcc': 0.5}) + '\n')
    return str(path)


def expected_curves(iters=200):
    """The (iterations, loss, lr, mIoU %) that write_log wrote with its defaults, computed independently."""
    train = np.arange(10, iters + 1, 10)
    val = np.arange(50, iters + 1, 50)
    return train, 2.0 - 1.5 * train / iters, 0.01 * (1 - train / iters) + 1e-4, val, 100 * (0.2 + 0.4 * val / iters)


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_one_panel_per_key_with_the_logged_curves(tmp_path, capsys):
    tool = load_tool('analyze_logs')
    log = write_log(str(tmp_path / 'run' / 'logs' / '20250101_000000.jsonl'))
    records = tool.read_records(log)
    figure = tool.plot([records], ['run'], ['loss', 'lr', 'mIoU', 'decode.acc_seg'], log_scale=['lr'])
    axes = figure.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ['loss', 'lr', 'mIoU (%)', 'decode.acc_seg']
    assert [ax.get_yscale() for ax in axes] == ['linear', 'log', 'linear', 'linear']
    assert axes[-1].get_xlabel() == 'iteration' and figure._suptitle.get_text() == 'training curves'
    train, loss, lr, val, miou = expected_curves()
    for ax, (x, y) in zip(axes, [(train, loss), (train, lr), (val, miou), (train, np.full(20, 50.0))]):
        (line,) = ax.get_lines()
        assert line.get_label() == 'run'
        np.testing.assert_array_equal(line.get_xdata(), x)
        np.testing.assert_allclose(line.get_ydata(), y, rtol=1e-12)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ['run']
    assert axes[2].get_lines()[0].get_marker() == 'o' and axes[0].get_lines()[0].get_marker() == 'None'

    out = str(tmp_path / 'all.png')
    assert tool.main([log, '--keys', 'loss', 'lr', 'mIoU', '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'run/20250101_000000: last loss 0.5000 at iter 200, best mIoU 60.00 at iter 200' in printed
    width, height = tool.PANEL_SIZE
    assert f'wrote {out} ({width}x{3 * height}, panels: loss, lr, mIoU)' in printed
    image = Image.open(out)
    assert image.format == 'PNG' and image.size == (width, 3 * height)
    pixels = np.asarray(image.convert('RGB')).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20          # drawn, not a blank canvas
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_several_logs_legends_and_log_scale(tmp_path, capsys):
    tool = load_tool('analyze_logs')
    first = write_log(str(tmp_path / 'a' / 'logs' / '1.jsonl'))
    write_log(str(tmp_path / 'b' / 'logs' / '1.jsonl'), loss_start=3.0, loss_end=2.0)
    write_log(str(tmp_path / 'b' / 'logs' / '2.jsonl'), loss_start=2.0, loss_end=1.0, iters=100)
    logs = [tool.read_records(first)] + [[r for f in tool.log_files(str(tmp_path / 'b'))
                                           for r in tool.read_records(f)]]
    assert tool.default_label(str(tmp_path / 'b')) == 'b' and tool.default_label(first) == 'a/1'
    figure = tool.plot(logs, ['base', 'offset'], ['loss'], title='two runs', log_scale=['loss'])
    (ax,) = figure.get_axes()
    lines = lines_by_label(ax)
    assert list(lines) == ['base', 'offset'] and ax.get_yscale() == 'log'
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['base', 'offset']
    # b's second log (resumed, 100 iterations) overrides the first one's values at iterations 10..100
    offset = dict(zip(lines['offset'].get_xdata(), lines['offset'].get_ydata()))
    assert offset[100] == pytest.approx(1.0) and offset[110] == pytest.approx(3.0 - 1.0 * 110 / 200)
    assert offset[200] == pytest.approx(2.0)
    assert figure._suptitle.get_text() == 'two runs'

    out = str(tmp_path / 'two.png')
    assert tool.main([first, str(tmp_path / 'b'), '--legend', 'base', 'offset', '--keys', 'loss',
                      '--log-scale', 'loss', '--out', out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('base: last loss 0.5000') and 'offset: last loss 1.0000' in printed
    assert Image.open(out).size == tool.PANEL_SIZE


def test_errors_are_one_line(tmp_path, capsys):
    tool = load_tool('analyze_logs')
    log = write_log(str(tmp_path / 'x.jsonl'))
    assert tool.main([log, '--keys', 'nope', '--out', str(tmp_path / 'o.png')]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no log has 'nope'; keys in the logs: aAcc, data_time, decode.acc_seg")
    assert err.count('\n') == 1
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"mode": "train", "iter": 1, "loss": 1.0}\n{oops\n')
    assert tool.main([str(bad)]) == 1
    assert capsys.readouterr().err == f'error: {bad}:2: not a JSON record\n'
    assert tool.main([str(tmp_path / 'missing.jsonl')]) == 1
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main([log, '--keys', 'loss', '--log-scale', 'lr'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: --log-scale lr: not among --keys (loss) (see --help)\n'
    assert not os.path.exists(tmp_path / 'o.png')


def test_missing_matplotlib_is_one_line_naming_the_install_command(tmp_path, capsys, monkeypatch):
    tool = load_tool('analyze_logs')
    log = write_log(str(tmp_path / 'x.jsonl'))
    for name in ('matplotlib', 'matplotlib.figure', 'matplotlib.backends', 'matplotlib.backends.backend_agg'):
        monkeypatch.setitem(sys.modules, name, None)   # "import matplotlib..." now raises ImportError
    out = str(tmp_path / 'o.png')
    assert tool.main([log, '--out', out]) == 1
    captured = capsys.readouterr()
    assert captured.err == ("error: drawing needs matplotlib, which is not installed; install it with: "
                            "pip install -e .[tools]  (or: pip install 'matplotlib>=3.5')\n")
    assert captured.out == '' and not os.path.exists(out)
