"""C++/CUDA sources of the JIT operators, kept as real files under ``jseg/ops/csrc/``.

Each op module passes the text of its sources to ``jt.code`` (``cpu_header``,
``cpu_src``, ``cuda_header``, ``cuda_src``); keeping them as files lets editors,
compilers (``nvcc`` in the tests) and readers see them as C++/CUDA.
"""
import functools
import os.path as osp

__all__ = ['CSRC_DIR', 'read_source']

CSRC_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')


@functools.lru_cache(maxsize=None)
def read_source(name):
    """Text of ``jseg/ops/csrc/<name>`` (read once per process).

    Raises:
        FileNotFoundError: naming the missing source file (a broken install).
    """
    path = osp.join(CSRC_DIR, name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'jseg operator source {path} is missing: reinstall jseg (pip install -e .)')
    with open(path, encoding='utf-8') as f:
        return f.read()
