"""GELU (exact erf form, PyTorch's ``approximate='none'``) as a JIT CPU operator, forward and backward.

Jittor fuses an elementwise composition into the operators around it. For
GELU that is a trap in training: the backward of a BatchNorm that feeds a
GELU (conv-BN-GELU, EfficientFormerV2's FFNs) becomes one fused reduction that
recomputes the normalisation, erf and exp of every element inside the
per-channel sums; on OffSeg-T's first stage (2 x 128 x 128 x 128) two such
kernels took 1.4 s each. Here forward and backward are ``jt.code`` operators
(``jseg/ops/csrc/gelu_cpu.cc``), which Jittor does not fuse into others: the
BatchNorm backward then reads the GELU gradient as a plain tensor.

Under CUDA, with the fused operators switched off, or for dtypes other than
float32/float64, :func:`gelu` is the composition :func:`gelu_reference`.
"""
import math

import jittor as jt

from .csrc_bundle import bundle_source
from .fused_kernel import fused_ops_enabled

__all__ = ['gelu', 'gelu_reference']


def gelu_reference(x):
    """``x * Phi(x)`` as a Jittor composition."""
    return x * 0.5 * (1.0 + jt.erf(x / math.sqrt(2.0)))


class _GELU(jt.Function):

    def execute(self, x):
        self.x = x
        return jt.code(x.shape, x.dtype, [x], cpu_header=bundle_source('gelu_cpu.cc'),
                       cpu_src='jseg_gelu::forward<in0_type>(in0_p, out0_p, in0->num);')

    def grad(self, dy):
        return jt.code(self.x.shape, self.x.dtype, [self.x, dy.cast(self.x.dtype)],
                       cpu_header=bundle_source('gelu_cpu.cc'),
                       cpu_src='jseg_gelu::backward<in0_type>(in0_p, in1_p, out0_p, in0->num);')


def gelu(x):
    """GELU of ``x`` (any shape); see the module docstring."""
    if jt.flags.use_cuda or not fused_ops_enabled() or str(x.dtype) not in ('float32', 'float64') or x.numel() == 0:
        return gelu_reference(x)
    return _GELU.apply(x)
