"""tools/analyze_logs.py on synthetic JSON-lines logs whose curves are known."""
import json
import os

import numpy as np
from tool_helpers import load_tool
from PIL import Image

from jseg.utils.plot import COLORS


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


def curve_slope(path, color):
    """Rows per column of the pixels drawn in ``color`` (positive: the curve goes down the image)."""
    arr = np.asarray(Image.open(path).convert('RGB'))
    pixels = np.argwhere((arr == np.array(color, np.uint8)).all(axis=2))
    assert len(pixels) > 200, f'too few pixels of {color}'
    return np.polyfit(pixels[:, 1], pixels[:, 0], 1)[0]


def test_one_panel_per_key_and_curve_directions(tmp_path, capsys):
    tool = load_tool('analyze_logs')
    log = write_log(str(tmp_path / 'run' / 'logs' / '20250101_000000.jsonl'))
    loss_png, miou_png, all_png = (str(tmp_path / name) for name in ('loss.png', 'miou.png', 'all.png'))
    assert tool.main([log, '--keys', 'loss', '--out', loss_png]) == 0
    assert tool.main([log, '--keys', 'mIoU', '--out', miou_png]) == 0
    assert tool.main([log, '--keys', 'loss', 'lr', 'mIoU', 'decode.acc_seg', '--out', all_png]) == 0
    printed = capsys.readouterr().out
    assert 'run/20250101_000000: last loss 0.5000 at iter 200, best mIoU 60.00 at iter 200' in printed

    one, four = Image.open(loss_png), Image.open(all_png)
    width, height = tool.PANEL_SIZE
    assert one.format == 'PNG' and one.size[0] == width + 24 and four.size[0] == width + 24
    assert four.size[1] - one.size[1] == 3 * (height + 12)          # three more panels, 12 px apart
    assert curve_slope(loss_png, COLORS[0]) > 0.1      # falling loss: the curve goes down to the right
    assert curve_slope(miou_png, COLORS[0]) < -0.1     # rising mIoU: up to the right


def test_several_logs_and_folders(tmp_path, capsys):
    tool = load_tool('analyze_logs')
    first = write_log(str(tmp_path / 'a' / 'logs' / '1.jsonl'))
    write_log(str(tmp_path / 'b' / 'logs' / '1.jsonl'), loss_start=3.0, loss_end=2.0)
    out = str(tmp_path / 'two.png')
    assert tool.main([first, str(tmp_path / 'b'), '--legend', 'base', 'offset', '--keys', 'loss', '--out', out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('base: last loss 0.5000') and 'offset: last loss 2.0000' in printed
    assert curve_slope(out, COLORS[0]) > 0.1 and curve_slope(out, COLORS[1]) > 0.02


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
    assert not os.path.exists(tmp_path / 'o.png')
