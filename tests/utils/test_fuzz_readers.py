"""A few seconds of fuzzing of each checkpoint reader (longer runs: see fuzz_readers.py)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SECONDS = 3


def fuzz(*args):
    return subprocess.run([sys.executable, os.path.join(HERE, 'fuzz_readers.py'), *args, '--seconds', str(SECONDS)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('reader', ['pth', 'npz'])
def test_mutation_fuzzing_ends_every_input_in_a_load_or_one_error(reader):
    proc = fuzz(reader)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats['inputs'] >= 100 and stats['loaded'] > 0 and stats['refused'] > 0, stats
    assert stats['max_growth_mb'] < 32


@pytest.mark.parametrize('reader', ['pth', 'npz'])
def test_atheris_fuzzing(reader):
    pytest.importorskip('atheris', reason='coverage-guided fuzzing needs atheris (pip install atheris)')
    proc = fuzz(reader, '--atheris')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Done ' in proc.stderr and 'stat::number_of_executed_units' in proc.stderr
