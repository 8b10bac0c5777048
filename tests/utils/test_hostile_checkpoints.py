"""Hand-made hostile checkpoints (issue 11, items 2 and 3): one clean error each, bounded memory.

Every file of :mod:`hostile_files` is read in a subprocess, as ``--load-from``
reads it (:func:`jseg.runner.checkpoint.checkpoint_state_dict`), by
``reader_harness.py``, which reports the one-line error and the growth of the
process's peak resident memory. A crash (the deep tuple key used to kill the
interpreter with SIGSEGV) shows as a missing report.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hostile_files  # noqa: E402

#: Peak memory growth allowed while reading one hostile file (every bomb inflates to 128 MB or more).
MEMORY_BOUND_MB = 32


def read_in_subprocess(paths, timeout=120):
    proc = subprocess.run([sys.executable, os.path.join(HERE, 'reader_harness.py'), *paths],
                          capture_output=True, text=True, timeout=timeout)
    reports = {}
    for line in proc.stdout.splitlines():
        report = json.loads(line)
        reports[report['file']] = report
    return proc, reports


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('hostile'))
    return [builder(folder) for builder in hostile_files.BUILDERS]


def test_every_hostile_file_ends_in_one_clean_error_with_bounded_memory(hostile):
    proc, reports = read_in_subprocess([path for path, _ in hostile])
    assert len(hostile) == len(hostile_files.BUILDERS) == 9
    for path, pattern in hostile:
        assert os.path.getsize(path) < 4 << 20, path  # small on disk
        assert path in reports, f'no report for {path}: the reader crashed ({proc.returncode}) {proc.stderr[-500:]}'
        report = reports[path]
        assert report['peak_growth_mb'] < MEMORY_BOUND_MB, (path, report)
        error = report['error']
        assert error is not None and error.startswith(f'error: {path}: ') and '\n' not in error, (path, error)
        assert re.search(pattern, error), (path, pattern, error)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_memory_measurement_sees_an_honest_large_read(tmp_path):
    """The bound above means something: reading 48 MB of weights shows as about 48 MB of growth."""
    from jseg.runner.checkpoint import save_checkpoint
    path = str(tmp_path / 'large.npz')
    save_checkpoint(path, {'w': np.ones(12 << 20, np.float32)}, {})
    proc, reports = read_in_subprocess([path])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert reports[path]['error'] is None and reports[path]['peak_growth_mb'] >= 40, reports


def test_load_from_reads_only_the_model_weights(tmp_path):
    """A bomb in the optimizer state of a jseg .npz: --load-from never reads it; a resume refuses it."""
    from jseg.runner.checkpoint import CheckpointError, read_checkpoint
    path, pattern = hostile_files.npz_compressed_bomb(str(tmp_path), where='optimizer/exp_avg/w')
    proc, reports = read_in_subprocess([path])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert reports[path]['error'] is None and reports[path]['peak_growth_mb'] < MEMORY_BOUND_MB, reports
    arrays, _ = read_checkpoint(path, prefixes=('model/',))
    np.testing.assert_array_equal(arrays['model/ok'], np.ones(2, np.float32))
    with pytest.raises(CheckpointError, match=pattern):
        read_checkpoint(path)  # everything, as a resume reads it
