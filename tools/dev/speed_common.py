"""Shared by the OffSeg speed tools: stage keys, machine description and timing summaries.

Plain Python (no torch, no Jittor): imported by ``tools/dev/benchmark_official_offseg.py`` (run with
PyTorch) and by ``tools/dev/compare_speed.py`` (run with jseg's Python). The stage keys and the JSON
layout are those of the speed spec of issue 14 (see ``compare_speed.py``).
"""
import os
import statistics

# Stage keys in report order; nested ones (inside their parent's time) are NESTED_STAGES.
STAGES = (
    'preprocess', 'backbone', 'decode_head.pre',
    'decode_head.freqfusions.0', 'decode_head.freqfusions.0.carafe', 'decode_head.freqfusions.0.dysampler',
    'decode_head.freqfusions.1', 'decode_head.freqfusions.1.carafe', 'decode_head.freqfusions.1.dysampler',
    'decode_head.freqfusions.2', 'decode_head.freqfusions.2.carafe', 'decode_head.freqfusions.2.dysampler',
    'decode_head.align', 'decode_head.offset_learning', 'resize', 'argmax', 'loss', 'optimizer',
)
NESTED_SUFFIXES = ('.carafe', '.dysampler')

# /proc/cpuinfo flags that name vector instruction sets (x86 ``flags``, Arm ``Features``)
_VECTOR_PREFIXES = ('sse', 'ssse', 'avx', 'fma', 'f16c', 'amx', 'asimd', 'neon', 'sve')


def is_nested(stage):
    """True for a stage counted inside its parent (``....carafe``, ``....dysampler``)."""
    return stage.endswith(NESTED_SUFFIXES)


def cpu_info(path='/proc/cpuinfo'):
    """``{"model": str, "flags": [vector extensions, sorted]}`` of the first CPU in ``path``."""
    model, flags = 'unknown', []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return dict(model=model, flags=flags)
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'hardware', 'cpu model') and model == 'unknown':
            model = value.strip()
        elif key in ('flags', 'features') and not flags:
            flags = sorted({f for f in value.split() if f.startswith(_VECTOR_PREFIXES)})
    return dict(model=model, flags=flags)


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
