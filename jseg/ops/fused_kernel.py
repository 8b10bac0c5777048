"""Switch between the JIT-compiled operators and the pure-Jittor compositions.

:func:`jseg.ops.carafe`, :func:`jseg.ops.offset_attention` and
:func:`jseg.ops.multi_scale_deformable_attn` use the JIT-compiled operators
(:mod:`jseg.ops.carafe_kernel`, :mod:`jseg.ops.offset_attention_kernel`,
:mod:`jseg.ops.ms_deform_attn_kernel`) by default. Three ways to fall back
to the compositions (``carafe_reference``, ``offset_attention_reference``,
``ms_deform_attn_reference``), which stay the tested ground truth:

* environment variable, read when :mod:`jseg.ops` is imported:
  ``JSEG_FUSED_OPS=0`` (also ``false``/``off``/``no``);
* in code: ``jseg.ops.use_fused_ops(False)``, or temporarily
  ``with jseg.ops.fused_ops(False): ...``;
* in a config: a top-level ``use_fused_ops = False``, applied by
  ``jseg.ops.configure_fused_ops(cfg)`` where a model is built from the
  config.

The switch is process-wide: it routes the public functions, so every
module that calls them (FreqFusion, offset learning, deformable attention)
follows it. :func:`jseg.ops.resize_bilinear` (and so ``resize(...,
mode='bilinear')``), :func:`jseg.ops.softmax`, :func:`jseg.ops.argmax`,
:func:`jseg.ops.softmax_nll.softmax_nll` and :func:`jseg.ops.grid_sample.grid_sample`
read it at each call and use their JIT operators only while it is on (and not
on CUDA); their fallbacks are Jittor's own ops or the compositions.
"""
import contextlib

from jseg.jittor_env import env_flag

from .carafe import set_carafe_kernel
from .carafe_kernel import carafe_fused
from .ms_deform_attn import set_ms_deform_attn_kernel
from .ms_deform_attn_kernel import ms_deform_attn_fused
from .offset_attention import set_offset_attention_kernel
from .offset_attention_kernel import offset_attention_fused

__all__ = ['ENV_VAR', 'use_fused_ops', 'fused_ops_enabled', 'fused_ops', 'configure_fused_ops']

ENV_VAR = 'JSEG_FUSED_OPS'
_enabled = None


def use_fused_ops(enabled=True):
    """Route ``carafe``, ``offset_attention`` and ``multi_scale_deformable_attn``
    to the JIT-compiled operators (``enabled=True``) or to the pure-Jittor
    compositions (``False``)."""
    global _enabled
    _enabled = bool(enabled)
    set_carafe_kernel(carafe_fused if _enabled else None)
    set_offset_attention_kernel(offset_attention_fused if _enabled else None)
    set_ms_deform_attn_kernel(ms_deform_attn_fused if _enabled else None)


def fused_ops_enabled():
    """Whether the public ops currently use the JIT-compiled operators."""
    return _enabled


@contextlib.contextmanager
def fused_ops(enabled=True):
    """Context manager: use (or not) the JIT-compiled operators inside the block."""
    previous = _enabled
    use_fused_ops(enabled)
    try:
        yield
    finally:
        use_fused_ops(previous)


def configure_fused_ops(cfg):
    """Apply a config's top-level ``use_fused_ops`` (bool), if it has one.

    Args:
        cfg: a mapping (``Config`` or dict).

    Returns:
        bool: whether the fused operators are in use afterwards.
    """
    value = cfg.get('use_fused_ops', None) if hasattr(cfg, 'get') else None
    if value is not None:
        use_fused_ops(bool(value))
    return _enabled


use_fused_ops(env_flag(ENV_VAR, True))
