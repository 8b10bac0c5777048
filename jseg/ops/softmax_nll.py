"""Softmax cross-entropy per position (the per-pixel loss of semantic segmentation) as a JIT CPU operator.

``softmax_nll(logits, label, ignore_index)`` for logits (N, C, ...) and
integer labels (N, ...) returns the (N, ...) negative log-likelihoods
``logsumexp_c(logits) - logits[label]``, 0 where the label is
``ignore_index`` or outside [0, C) (the one-hot composition of
:func:`jseg.models.losses.cross_entropy` gives 0 there too). Its gradient
with respect to the logits is ``g * (softmax - onehot)``, 0 at those
positions; labels get none.

The composition makes about eight passes over the (N, C, H, W) logits
forward and as many backward; this operator makes two forward (max, then the
sum of exponentials, on chunks of positions that stay in cache; see
``jseg/ops/csrc/softmax_nll_cpu.cc``) and one backward, keeping the per
position log-sum-exp (N, ...) between them.

Measured (``tools/benchmark_ops.py --op loss``, one thread, the (B, 150,
128, 128) logits resized to 512x512 then averaged as ``loss_by_feat`` does):
forward and backward 230 against 389 ms at batch 1, 540 against 892 ms at
batch 2. Alone, on a plain input and with a per-pixel gradient, the
composition is about as fast: Jittor fuses its passes well there. Without
gradients (``jt.no_grad``) the composition is the faster, since it fuses the
resize into its reductions and never writes the resized logits, so it is
used there; also under CUDA, with the fused operators switched off, and for
dtypes other than float32/float64.
"""
import jittor as jt

from .csrc_bundle import bundle_source

__all__ = ['softmax_nll', 'softmax_nll_fused', 'softmax_nll_reference']


def softmax_nll_reference(logits, label, ignore_index):
    """The composition: log-softmax over dim 1, the label's entry, 0 where not counted."""
    shifted = logits - logits.max(1, keepdims=True)
    log_prob = shifted - shifted.exp().sum(1, keepdims=True).log()
    counted = jt.logical_and(jt.logical_and(label != ignore_index, label >= 0), label < logits.shape[1])
    safe = jt.where(counted, label, jt.zeros_like(label))
    onehot = jt.index(logits.shape, 1) == safe.unsqueeze(1)
    nll = -(log_prob * onehot).sum(1)
    return jt.where(counted, nll, jt.zeros_like(nll))


def _source(direction):
    if direction == 'forward':
        return ('jseg_softmax_nll::forward<in0_type>(in0_p, in1_p, out0_p, out1_p, '
                'in0_shape0, in0_shape1, in0_shape2, (int)data["ignore_index"]);')
    return ('jseg_softmax_nll::backward<in0_type>(in0_p, in1_p, in2_p, in3_p, out0_p, '
            'in0_shape0, in0_shape1, in0_shape2, (int)data["ignore_index"]);')


class SoftmaxNLL(jt.Function):
    """(N, C, P) logits, (N, P) int32 labels -> (N, P) nll; saves the (N, P) log-sum-exp."""

    def execute(self, logits, label, ignore_index):
        n, _, p = logits.shape
        nll, lse = jt.code([(n, p), (n, p)], [logits.dtype, logits.dtype], [logits, label],
                           cpu_header=bundle_source('softmax_nll_cpu.cc'), cpu_src=_source('forward'),
                           data=dict(ignore_index=int(ignore_index)))
        self.saved = (logits, label, lse, int(ignore_index))
        return nll

    def grad(self, grad_nll):
        logits, label, lse, ignore_index = self.saved
        d_logits = jt.code(logits.shape, logits.dtype, [logits, label, lse, grad_nll.cast(logits.dtype)],
                           cpu_header=bundle_source('softmax_nll_cpu.cc'), cpu_src=_source('backward'),
                           data=dict(ignore_index=ignore_index))
        return d_logits, None


def _check_shapes(logits, label):
    if logits.ndim < 2 or tuple(label.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f'softmax_nll: labels {tuple(label.shape)} do not fit logits {tuple(logits.shape)} '
                         f'(expected (N, ...) for (N, C, ...))')


def softmax_nll_fused(logits, label, ignore_index=-100):
    """The operator (CPU, float32/float64, at least one position); arguments and result as :func:`softmax_nll`."""
    _check_shapes(logits, label)
    n, c = logits.shape[0], logits.shape[1]
    spatial = tuple(logits.shape[2:])
    positions = 1
    for size in spatial:
        positions *= size
    nll = SoftmaxNLL.apply(logits.reshape((n, c, positions)), label.reshape((n, positions)).int32(),
                           ignore_index)
    return nll.reshape((n, *spatial))


def softmax_nll(logits, label, ignore_index=-100):
    """Per-position softmax cross-entropy of (N, C, ...) ``logits`` against (N, ...) ``label``; see the module doc."""
    from .fused_kernel import fused_ops_enabled   # fused_kernel imports the op modules: import late
    _check_shapes(logits, label)
    if (jt.flags.use_cuda or jt.flags.no_grad or not fused_ops_enabled()
            or str(logits.dtype) not in ('float32', 'float64') or logits.numel() == 0):
        return softmax_nll_reference(logits, label, ignore_index)
    return softmax_nll_fused(logits, label, ignore_index)
