"""Plot training curves from the JSON-lines logs that training writes.

    python tools/analyze_logs.py work_dirs/exp/logs/20250101_120000.jsonl
    python tools/analyze_logs.py run_a.jsonl run_b.jsonl --keys loss decode.acc_seg mIoU --out curves.png
    python tools/analyze_logs.py work_dirs/exp_a work_dirs/exp_b --legend baseline offset --log-scale loss lr

Each LOG is a ``<work_dir>/logs/<time>.jsonl`` file, or a work dir / its
``logs`` folder (all its ``.jsonl`` logs, oldest first, joined: a run resumed
into the same work dir continues its curve). Records are
``{"mode": "train", "iter", "lr", "loss", "decode.loss_ce", "decode.acc_seg", "time", ...}``
and ``{"mode": "val", "iter", "aAcc", "mIoU", "mAcc"}``.

One panel per ``--keys`` entry (default: loss, lr, mIoU), stacked in one PNG
drawn with matplotlib (``pip install -e .[tools]``), one curve per log against
the iteration with a legend: train keys from train records, val keys from val
records (with markers, as validation is sparse). Validation metrics are logged
as fractions and plotted in percent. ``--log-scale`` puts the named panels on a
logarithmic y axis. A key no log has is an error listing the keys there are. A
summary per log is printed (last loss, best mIoU and its iteration).
"""
import argparse
import glob
import json
import math
import os.path as osp
import sys

from tool_common import ArgumentParser  # noqa: E402  (puts the checkout on sys.path)

PERCENT_KEYS = ('aAcc', 'mIoU', 'mAcc')
PANEL_SIZE = (860, 300)  # (width, height) of one panel, pixels at DPI
DPI = 100
NOT_PLOTTED = ('mode', 'iter', 'eta_seconds')


class LogError(Exception):
    """A log that cannot be read, or a key no log has."""


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('logs', nargs='+', metavar='LOG', help='a .jsonl log, or a work dir / logs folder')
    parser.add_argument('--keys', nargs='+', default=['loss', 'lr', 'mIoU'],
                        help='values to plot, one panel each (train: loss, lr, decode.loss_ce, decode.acc_seg, '
                             'time, ...; val: mIoU, aAcc, mAcc; default: loss lr mIoU)')
    parser.add_argument('--legend', nargs='+', default=None, metavar='NAME',
                        help='a name per LOG (default: <work dir>/<log time> or the file name)')
    parser.add_argument('--out', default='curves.png', help='the PNG to write (default: %(default)s)')
    parser.add_argument('--title', default=None, help='figure title (default: training curves)')
    parser.add_argument('--log-scale', nargs='+', default=[], metavar='KEY',
                        help='keys whose panel has a logarithmic y axis (e.g. --log-scale loss lr)')
    args = parser.parse_args(argv)
    unknown = [key for key in args.log_scale if key not in args.keys]
    if unknown:
        parser.error(f'--log-scale {" ".join(unknown)}: not among --keys ({" ".join(args.keys)})')
    if args.legend is not None and len(args.legend) != len(args.logs):
        parser.error(f'--legend needs one name per log ({len(args.logs)}), got {len(args.legend)}')
    return args


def log_files(item):
    """The .jsonl files of a LOG argument, oldest first."""
    if osp.isdir(item):
        folder = osp.join(item, 'logs') if osp.isdir(osp.join(item, 'logs')) else item
        files = sorted(glob.glob(osp.join(folder, '*.jsonl')))
        if not files:
            raise LogError(f'{item}: no .jsonl log in {folder}')
        return files
    if not osp.isfile(item):
        raise LogError(f'log {item} does not exist')
    return [item]


def default_label(item):
    """``<work dir>/<time>`` for ``<work dir>/logs/<time>.jsonl``, the folder name for a folder, else the file name."""
    path = osp.abspath(item)
    if osp.isdir(path):
        path = osp.dirname(path) if osp.basename(path) == 'logs' else path
        return osp.basename(path)
    stem = osp.splitext(osp.basename(path))[0]
    folder = osp.dirname(path)
    if osp.basename(folder) == 'logs':
        return f'{osp.basename(osp.dirname(folder))}/{stem}'
    return stem


def read_records(path):
    """The records of one JSON-lines log (blank lines skipped)."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise LogError(f'{path}:{number}: not a JSON record') from None
            if not isinstance(record, dict) or 'iter' not in record or 'mode' not in record:
                raise LogError(f'{path}:{number}: a record needs "mode" and "iter"')
            records.append(record)
    return records


def curve(records, key):
    """(iterations, values) of ``key`` in ``records`` (val metrics in percent), sorted by iteration."""
    points = {}
    for record in records:
        if key in record and record['mode'] in ('train', 'val'):
            value = record[key]
            value = float('nan') if value is None else float(value)
            points[int(record['iter'])] = 100 * value if key in PERCENT_KEYS else value
    iters = sorted(points)
    return iters, [points[i] for i in iters]


def available_keys(logs):
    keys = set()
    for records in logs:
        for record in records:
            keys.update(k for k, v in record.items() if k not in NOT_PLOTTED and isinstance(v, (int, float)))
    return sorted(keys)


def summary(label, records):
    """One line: last train loss, best and last mIoU."""
    parts = [label]
    train = [r for r in records if r['mode'] == 'train' and r.get('loss') is not None]
    if train:
        parts.append(f'last loss {train[-1]["loss"]:.4f} at iter {train[-1]["iter"]}')
    val = [r for r in records if r['mode'] == 'val' and r.get('mIoU') is not None and math.isfinite(r['mIoU'])]
    if val:
        best = max(val, key=lambda r: r['mIoU'])
        parts.append(f'best mIoU {100 * best["mIoU"]:.2f} at iter {best["iter"]}, '
                     f'last {100 * val[-1]["mIoU"]:.2f} at iter {val[-1]["iter"]}')
    return ': '.join(parts[:2]) + (', ' + ', '.join(parts[2:]) if len(parts) > 2 else '')


def plot(logs, labels, keys, title=None, log_scale=()):
    """The matplotlib Figure: one panel (axes) per key, stacked, one labelled curve per log.

    Args:
        logs (list[list[dict]]): the records of each log.
        labels (list[str]): the legend name of each log.
        keys (list[str]): one panel each, top to bottom.
        log_scale (Iterable[str]): keys whose panel has a logarithmic y axis.
    """
    from jseg.utils.plot import new_figure
    known = available_keys(logs)
    curves = []
    for key in keys:
        lines = [(label, *curve(records, key)) for records, label in zip(logs, labels)]
        lines = [line for line in lines if line[1]]
        if not lines:
            raise LogError(f'no log has {key!r}; keys in the logs: {", ".join(known)}')
        curves.append(lines)
    width, height = PANEL_SIZE
    figure = new_figure(width, height * len(keys), dpi=DPI)
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key, lines in zip(axes, keys, curves):
        validation = any(r['mode'] == 'val' and key in r for records in logs for r in records)
        for label, iters, values in lines:
            ax.plot(iters, values, label=label, marker='o' if validation else None, markersize=3, linewidth=1.2)
        ax.set_ylabel(f'{key} (%)' if key in PERCENT_KEYS else key)
        if key in log_scale:
            ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
        ax.legend(loc='best', fontsize=8)
    axes[-1].set_xlabel('iteration')
    axes[-1].set_xlim(left=0)
    figure.suptitle(title or 'training curves')
    figure.tight_layout()
    return figure


def main(argv=None):
    args = parse_args(argv)
    from jseg.utils.plot import MissingDependencyError, require_matplotlib, save_figure
    try:
        require_matplotlib()
        logs, labels = [], []
        for index, item in enumerate(args.logs):
            records = []
            for path in log_files(item):
                records.extend(read_records(path))
            logs.append(records)
            labels.append(args.legend[index] if args.legend else default_label(item))
        figure = plot(logs, labels, args.keys, args.title, args.log_scale)
    except (LogError, OSError, MissingDependencyError) as err:
        sys.stderr.write(f'error: {err}\n')
        return 1
    for label, records in zip(labels, logs):
        print(summary(label, records))
    save_figure(figure, args.out)
    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    print(f'wrote {args.out} ({width}x{height}, panels: {", ".join(args.keys)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
