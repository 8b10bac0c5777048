"""Shared by the OffSeg speed tools: stage keys, machine description and timing summaries.

Plain Python (no torch, no Jittor): imported by ``tools/dev/benchmark_official_offseg.py`` (run with
PyTorch) and by ``tools/dev/compare_speed.py`` (run with jseg's Python). The stage keys and the JSON
layout are those of the speed spec of issue 14 (see ``compare_speed.py``).
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tools/
from benchmark_stages import cpu_info  # noqa: E402,F401  (plain Python; one reader of /proc/cpuinfo)

# Stage keys in report order; nested ones (inside their parent's time) are NESTED_STAGES.
STAGES = (
    'preprocess', 'backbone', 'decode_head.pre',
    'decode_head.freqfusions.0', 'decode_head.freqfusions.0.carafe', 'decode_head.freqfusions.0.dysampler',
    'decode_head.freqfusions.1', 'decode_head.freqfusions.1.carafe', 'decode_head.freqfusions.1.dysampler',
    'decode_head.freqfusions.2', 'decode_head.freqfusions.2.carafe', 'decode_head.freqfusions.2.dysampler',
    'decode_head.align', 'decode_head.offset_learning', 'resize', 'argmax', 'loss', 'optimizer',
)
NESTED_SUFFIXES = ('.carafe', '.dysampler')

def is_nested(stage):
    """True for a stage counted inside its parent (``....carafe``, ``....dysampler``)."""
    return stage.endswith(NESTED_SUFFIXES)


def load_average():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def summarise(wall, cpu=None):
    """``{"median", "min", "max"[, "cpu_median"], "runs": [...]}`` of per-run seconds."""
    out = dict(median=statistics.median(wall), min=min(wall), max=max(wall))
    if cpu:
        out['cpu_median'] = statistics.median(cpu)
    out['runs'] = list(wall)
    return out


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(json.dumps(obj, indent=2) + '\n')
    os.replace(tmp, path)
