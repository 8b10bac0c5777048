"""Training/validation records: a readable console line and a JSON-lines file.

Every record is one JSON object per line in ``<work_dir>/logs/<timestamp>.jsonl``
(``tools/analyze_logs.py`` plots them); the same values are printed through
the runner's logger, which also writes ``<work_dir>/logs/<timestamp>.log``.
"""
import datetime
import json
import math
import os
import os.path as osp
from collections import deque

from jseg.utils.dist import is_main_process

__all__ = ['LogWriter']


def _fmt(value):
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f'{value:.4e}'
        return f'{value:.4f}'
    return str(value)


class LogWriter:
    """Smooths training values over the logging window and writes records.

    Args:
        work_dir (str): run folder; logs go to ``work_dir/logs``.
        timestamp (str): names the log files.
        max_iters (int): for the ETA.
        logger (logging.Logger): prints the records (and writes the text log).
        window (int): number of iterations averaged in each train record.
    """

    def __init__(self, work_dir, timestamp, max_iters, logger, window=50):
        self.max_iters = max_iters
        self.enabled = is_main_process()
        log_dir = osp.join(work_dir, 'logs')
        self.json_path = osp.join(log_dir, f'{timestamp}.jsonl')
        if self.enabled:
            os.makedirs(log_dir, exist_ok=True)
        self.logger = logger
        self.window = window
        self.values = {}
        self.times = deque(maxlen=window)

    def update(self, log_vars, iter_time, data_time):
        for key, value in log_vars.items():
            self.values.setdefault(key, deque(maxlen=self.window)).append(float(value))
        self.times.append((iter_time, data_time))

    def write_train(self, iteration, lr):
        """Record the averages of the last window; ``iteration`` counts from 1."""
        means = {k: sum(v) / len(v) for k, v in self.values.items() if v}
        iter_time = sum(t for t, _ in self.times) / max(len(self.times), 1)
        data_time = sum(d for _, d in self.times) / max(len(self.times), 1)
        eta = int(iter_time * (self.max_iters - iteration))
        record = dict(mode='train', iter=iteration, lr=lr, **means, time=iter_time, data_time=data_time,
                      eta_seconds=eta)
        parts = [f'Iter(train) [{iteration:>{len(str(self.max_iters))}}/{self.max_iters}]',
                 f'lr: {lr:.4e}', f'eta: {datetime.timedelta(seconds=eta)}',
                 f'time: {iter_time:.4f}', f'data_time: {data_time:.4f}']
        parts += [f'{k}: {_fmt(v)}' for k, v in means.items()]
        self.logger.info('  '.join(parts))
        self._append(record)
        for values in self.values.values():
            values.clear()
        self.times.clear()

    def write_val(self, iteration, metrics):
        from jseg.evaluation.metrics import SCALAR_METRICS
        names = [k for k in SCALAR_METRICS if k in metrics]  # aAcc, mIoU, mAcc (+ mDice, mFscore, ...)
        record = dict(mode='val', iter=iteration, **{k: metrics[k] for k in names})
        self.logger.info(f'Iter(val) [{iteration}]  ' + '  '.join(f'{k}: {100 * metrics[k]:.2f}' for k in names))
        self._append(record)

    def _append(self, record):
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.json_path, 'a') as f:
            f.write(json.dumps(clean) + '\n')
