"""Count parameters and multiply-accumulates (MACs) of a Jittor model, from shapes.

:class:`MacCounter` patches Jittor's convolution and matrix-product entry points
for the duration of a ``with`` block and adds up, from the operand shapes:

* convolutions (``nn.Conv``/``nn.Conv2d`` and subclasses, ``nn.conv2d``, transposed convolutions):
  ``output elements x in_channels / groups x kernel area``;
* matrix products (``matmul``, ``bmm``, ``@``, ``nn.Linear``): ``batch x n x m x k``.

A multiply-add counts once, as the "FLOPs" of mmsegmentation's ``get_flops`` and
of papers in this field. Biases, normalisation, activations, interpolation,
softmax and sampling are not counted. Nested calls (a Linear layer calling
``matmul_transpose``) are counted once, at the outermost entry point.

Inside the block the JIT-compiled operators are switched off
(:func:`jseg.ops.fused_ops`): they compute their products inside one kernel,
which no entry point sees, so their pure-Jittor compositions run instead.
"""
import contextlib
import math
import threading

import jittor as jt
from jittor import nn

__all__ = ['MacCounter', 'count_parameters']


def count_parameters(model):
    """Number of trainable parameter elements of ``model`` (buffers excluded).

    Jittor's ``eval()`` stops the gradient of every parameter and remembers
    which were trainable (``backup_grad_state``); that record is used when present.
    """
    backup = getattr(model, 'backup_grad_state', {})
    return sum(int(math.prod(p.shape)) for p in model.parameters()
               if backup.get(id(p), not p.is_stop_grad()))


def _conv_macs(weight_shape, groups, out):
    # weight (C_out, C_in / groups, kh, kw); out (B, C_out, H', W')
    return int(math.prod(out.shape)) * int(math.prod(weight_shape[1:]))


def _matmul_macs(a, b, transpose_b=False):
    a_shape, b_shape = list(a.shape), list(b.shape)
    if len(b_shape) == 1:
        b_shape = b_shape + [1]
    if len(a_shape) == 1:
        a_shape = [1] + a_shape
    if transpose_b:
        b_shape = b_shape[:-2] + [b_shape[-1], b_shape[-2]]
    n, k = a_shape[-2], a_shape[-1]
    m = b_shape[-1]
    batch = a_shape[:-2] if len(a_shape) >= len(b_shape) else b_shape[:-2]
    return int(math.prod(batch)) * n * m * k


def _with_subclasses(cls):
    found, stack = [], [cls]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(current.__subclasses__())
    return found


class MacCounter:
    """``with MacCounter() as c: model(x)`` then read ``c.conv`` and ``c.matmul`` (MACs).

    Not thread-safe across concurrent forward passes; meant for one measurement.
    """

    def __init__(self):
        self.conv = 0
        self.matmul = 0
        self._depth = threading.local()
        self._saved = []
        self._compositions = contextlib.ExitStack()

    @property
    def total(self):
        return self.conv + self.matmul

    def _guarded(self, kind, fn, macs_of):
        counter = self

        def wrapper(*args, **kwargs):
            depth = getattr(counter._depth, 'value', 0)
            counter._depth.value = depth + 1
            try:
                out = fn(*args, **kwargs)
            finally:
                counter._depth.value = depth
            if depth == 0:
                setattr(counter, kind, getattr(counter, kind) + macs_of(out, *args, **kwargs))
            return out
        return wrapper

    def _patch(self, owner, name, kind, macs_of):
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, self._guarded(kind, original, macs_of))

    def __enter__(self):
        from jseg.ops import fused_ops
        self._compositions.enter_context(fused_ops(False))
        conv_module = lambda out, module, *a, **k: _conv_macs(module.weight.shape, module.groups, out)  # noqa: E731
        for cls in _with_subclasses(nn.Conv):  # subclasses may compute a conv another way (1x1 as GEMM)
            if 'execute' in cls.__dict__:
                self._patch(cls, 'execute', 'conv', conv_module)
        for cls_name in ('ConvTranspose', 'ConvTranspose2d'):
            if hasattr(nn, cls_name):
                self._patch(getattr(nn, cls_name), 'execute', 'conv',
                            lambda out, module, x, *a, **k: int(math.prod(x.shape)) *
                            int(math.prod(module.weight.shape[1:])))
        self._patch(nn, 'conv2d', 'conv',
                    lambda out, x, weight, *a, **k: _conv_macs(weight.shape, 1, out))
        self._patch(nn, 'matmul', 'matmul', lambda out, a, b: _matmul_macs(a, b))
        self._patch(nn, 'bmm', 'matmul', lambda out, a, b: _matmul_macs(a, b))
        self._patch(nn, 'matmul_transpose', 'matmul', lambda out, a, b: _matmul_macs(a, b, True))
        self._patch(nn, 'bmm_transpose', 'matmul', lambda out, a, b: _matmul_macs(a, b, True))
        self._patch(jt, 'matmul', 'matmul', lambda out, a, b: _matmul_macs(a, b))
        self._patch(jt.Var, 'matmul', 'matmul', lambda out, a, b: _matmul_macs(a, b))
        self._patch(jt.Var, '__matmul__', 'matmul', lambda out, a, b: _matmul_macs(a, b))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
        self._compositions.close()
        return False
