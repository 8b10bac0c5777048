"""Run jseg's checkpoint readers in a light subprocess and measure its memory.

The readers (``jseg.runner.checkpoint.read_checkpoint`` / ``checkpoint_state_dict``
and ``jseg.utils.torch_format``) need only NumPy; importing the ``jseg`` package
would import Jittor (seconds, and memory). :func:`import_readers` loads them
without running ``jseg/__init__.py``, for subprocesses only: never call it in
the pytest process, where ``jseg`` is the real package.

As a script: ``python reader_harness.py FILE...`` loads each file's weights
like ``--load-from`` does and prints, per file, one JSON line
``{"file", "error", "peak_growth_mb"}``: the one-line error (or null) and the
growth of the peak resident memory while reading that file.
"""
import json
import os
import resource
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_light_packages():
    """Let ``jseg.runner.*`` modules import without running the package ``__init__`` files (Jittor)."""
    for name in ('jseg', 'jseg.runner'):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(ROOT, *name.split('.'))]
            sys.modules[name] = module


def import_readers():
    """``(jseg.runner.checkpoint, jseg.utils.torch_format)`` without importing Jittor."""
    use_light_packages()
    import jseg.runner.checkpoint as checkpoint
    import jseg.utils.torch_format as torch_format
    return checkpoint, torch_format


def reset_peak_rss():
    """Start a new peak: Linux resets VmHWM to the current RSS on ``echo 5 > /proc/self/clear_refs``."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mb():
    """The process's peak resident memory in MB (since the last :func:`reset_peak_rss`)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main(paths):
    use_light_packages()
    import jseg.runner.checkpoint as checkpoint
    for path in paths:
        reset_peak_rss()
        baseline = peak_rss_mb()
        try:
            checkpoint.checkpoint_state_dict(path)
            error = None
        except checkpoint.CheckpointError as err:
            error = f'error: {err}'
        print(json.dumps({'file': path, 'error': error, 'peak_growth_mb': peak_rss_mb() - baseline}), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
