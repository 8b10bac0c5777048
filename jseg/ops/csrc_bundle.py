"""One translation unit from a source under ``jseg/ops/csrc/`` and the csrc headers it includes.

The sources include each other as ordinary files (``#include "carafe.h"``), so that
compilers and editors can read them alone (``nvcc -I jseg/ops/csrc carafe_cuda.cu``).
``jt.code`` compiles the text it is given in Jittor's cache folder, where those files
cannot be found: :func:`bundle_source` replaces each such line by the included file's
text, once per file (as ``#pragma once`` would), recursively. System includes
(``#include <vector>``) stay as they are.
"""
import functools
import re

from .csrc_source import read_source

__all__ = ['bundle_source']

_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def _expand(name, seen):
    if name in seen:
        return ''
    seen.add(name)
    text = read_source(name)
    return _LOCAL_INCLUDE.sub(lambda m: _expand(m.group(1), seen), text)


@functools.lru_cache(maxsize=None)
def bundle_source(name):
    """Text of ``jseg/ops/csrc/<name>`` with its csrc includes inlined (see the module docstring).

    Raises:
        FileNotFoundError: naming a missing source file (``read_source``).
    """
    return _expand(name, set())
