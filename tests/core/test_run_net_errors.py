"""tools/run_net.py reports bad input as one 'error:' line with a non-zero exit status."""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_NET = os.path.join(ROOT, 'tools', 'run_net.py')


def run_net(*args, cwd):
    proc = subprocess.run([sys.executable, RUN_NET, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(stderr, *fragments):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f'expected one line, got:\n{stderr}'
    assert lines[0].startswith('error: ')
    assert 'Traceback' not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_config(tmp_path):
    rc, _, err = run_net('--config-file', str(tmp_path / 'nope.py'), '--task=train', cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, 'config file not found', 'nope.py')


def test_unknown_task(tmp_path):
    rc, _, err = run_net('--config-file', 'x.py', '--task=fit', cwd=tmp_path)
    assert rc == 2
    assert_one_error_line(err, "invalid choice: 'fit'")


def test_config_missing_a_key(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent("""
        max_iter = 10  # misspelt: the runner needs max_iters
        model = dict(type='EncoderDecoder')
        """))
    rc, _, err = run_net('--config-file', str(cfg), '--task=train', '--work-dir', str(tmp_path / 'w'),
                         cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, "config key 'max_iter' is not used by jseg", "did you mean 'max_iters'")


def test_config_without_max_iters(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='EncoderDecoder')\n")
    rc, _, err = run_net('--config-file', str(cfg), '--task=train', '--work-dir', str(tmp_path / 'w'),
                         cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, "config has no key 'max_iters'")


def test_tta_with_train_is_an_error(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='EncoderDecoder')\n")
    rc, _, err = run_net('--config-file', str(cfg), '--task=train', '--tta', cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, '--tta applies to --task=val and --task=test')


def test_bad_cfg_option(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("max_iters = 10\n")
    rc, _, err = run_net('--config-file', str(cfg), '--cfg-options', 'max_iter=3', cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, "no key 'max_iter'")


@pytest.mark.parametrize('task', ['val', 'test'])
def test_eval_without_weights(tmp_path, task):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='EncoderDecoder')\n")
    rc, _, err = run_net('--config-file', str(cfg), f'--task={task}', '--work-dir', str(tmp_path / 'w'),
                         cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, 'no weights given')


def test_unreadable_checkpoint(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='EncoderDecoder')\n")
    bad = tmp_path / 'broken.pth'
    bad.write_bytes(b'\x00garbage')
    rc, _, err = run_net('--config-file', str(cfg), '--task=val', f'--resume={bad}', '--work-dir',
                         str(tmp_path / 'w'), cwd=tmp_path)
    assert rc == 1
    assert_one_error_line(err, 'broken.pth')
