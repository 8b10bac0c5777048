"""What the command-line tools in tools/ share: the checkout on ``sys.path`` and one-line errors.

A tool does::

    from tool_common import ArgumentParser, run_tool     # tools/ is sys.path[0] when it runs
    parser = ArgumentParser(description=...)              # usage errors: one "error: ..." line, exit 2
    ...
    return run_tool(task, args, no_cuda=args.no_cuda)     # jseg input errors: one line, exit 1

Nothing here imports jseg (which configures and imports Jittor): ``--no-cuda``
must be known before that happens.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without installing jseg

__all__ = ['ROOT', 'ArgumentParser', 'run_tool']


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one ``error: ...`` line (exit status 2)."""

    def error(self, message):
        sys.stderr.write(f'error: {message} (see --help)\n')
        sys.exit(2)


def run_tool(task, args, no_cuda=False, extra_errors=()):
    """Run ``task(args)``; report bad input as one ``error: ...`` line.

    Args:
        task (callable): the tool's work, given the parsed ``args``.
        no_cuda (bool): force the CPU (set before jseg, hence Jittor, is imported).
        extra_errors (tuple[type]): the tool's own input errors, besides ``jseg.cli.ERRORS``.

    Returns:
        int: 0, or 1 after an input error. Other exceptions keep their traceback.
    """
    if no_cuda:
        os.environ['JSEG_NO_CUDA'] = '1'
    from jseg.cli import ERRORS  # imports Jittor
    try:
        task(args)
    except ERRORS + tuple(extra_errors) as err:
        sys.stderr.write(f'error: {err}\n')
        return 1
    return 0
