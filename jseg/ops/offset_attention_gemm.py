"""The ``'gemm'`` strategy of the coupled attention: Jittor's products around two softmax operators.

Jittor's matrix products (oneDNN on CPU, cuBLAS on CUDA) for the products, and
two ``jt.code`` operators, each with a ``cpu_src`` and a ``cuda_src``, for
everything between them (maths in :mod:`jseg.ops.offset_attention_kernel`):

* :func:`softmax_stats`: both log-sum-exps and both probability maps from
  A^T (K, HW);
* :func:`attention_grad`: both maps and dA from A^T, ``G_cls E^T`` and
  ``W G_pos^T``.

The probability maps are transient (freed after the forward's products); only
the statistics are saved for backward. Works per image with 2-D products,
class-major (K, HW), like the reference.

CUDA kernels and their CPU twins
--------------------------------
``softmax_stats`` on CUDA runs ``cls_softmax_kernel`` (one block of 256
threads per class row: each thread merges every 256th logit into a running
(max, sum) state, ``lse_merge``, then the states are merged in a tree) and
``pos_softmax_kernel`` (one thread per position); ``attention_grad`` runs
``grad_kernel`` (one thread per position). Their per-thread arithmetic is
written once, as ``__host__ __device__`` functions in
``jseg/ops/csrc/offset_attention_gemm.h``; with ``impl='cuda_twin'`` the CPU
operators run exactly that arithmetic thread after thread (the block's shared
memory and tree emulated), so the CPU tests check the CUDA kernels' sums. The
default CPU operators (``impl='cpu'``) compute the same maps with loops that
vectorise: one exp per element of each softmax, and the softmax over classes
in strips of ``OA_COLUMNS`` (1024) positions of every class row
(``jseg/ops/csrc/cpu_simd.h``). The CUDA launch code itself only runs
on a machine with a GPU.

Backward on CPU
---------------
On the CPU (``impl='cpu'`` without ``jt.flags.use_cuda``) the backward is the
``'fused'`` strategy's backward operator
(:func:`jseg.ops.offset_attention_fused_cpu.fused_backward`), which takes
exactly the statistics this forward saves (``lse_cls``, ``lse_pos``, F_cls).
The backward written here recomputes A^T with one more product than the
composition's backward (the price of not saving A), and on the CPU the
products dominate: at OffSeg-T's shape (HW = 128x128, K = 150, C = 256,
batch 1, 2 threads of an AVX2 CPU) forward+backward took 435 ms of CPU time
against the composition's 386 ms, even with its softmax operators tuned (on
one thread ``attention_grad`` 28 to 16 ms, ``softmax_stats`` 13 to 7 ms);
with the fused backward it took 276 ms (``tools/benchmark_ops.py --op
offset``). ``impl='cuda_twin'`` keeps the backward below, so that the CUDA
kernels' arithmetic is still tested on CPU.

Sources: ``jseg/ops/csrc/offset_attention_gemm.h``,
``offset_attention_gemm_cpu.cc`` and ``offset_attention_gemm_cuda.cu``.
"""
import jittor as jt
from jittor import nn

from .csrc_bundle import bundle_source
from .offset_attention_fused_cpu import fused_backward

__all__ = ['CPU_IMPLS', 'GemmOffsetAttention', 'attention_grad', 'gemm_forward', 'gemm_source', 'softmax_stats']

# CPU variants of the two operators: 'cpu' (vectorised loops) or 'cuda_twin' (the CUDA kernels'
# per-thread arithmetic, for testing it on CPU).
CPU_IMPLS = ('cpu', 'cuda_twin')
_CPU_FUNCTIONS = {'cpu': ('stats_cpu', 'grad_cpu'), 'cuda_twin': ('stats_twin', 'grad_twin')}

# stats: in0 A^T (K, N) -> out0 P_cls (K, N), out1 P_pos (K, N), out2 lse_cls (K,), out3 lse_pos (N,)
# grad: in0 A^T, in1 G_cls E^T, in2 W G_pos^T (K, N), in3 lse_cls, in4 lse_pos, in5 rowdot(F_cls, G_cls)
#       -> out0 [P_cls; dA] (2K, N), out1 P_pos (K, N)
_ARGUMENTS = {
    'stats': 'in0_p, out0_p, out1_p, out2_p, out3_p, in0_shape0, in0_shape1',
    'grad': 'in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, out0_p, out1_p, in0_shape0, in0_shape1',
}


def gemm_source(op, device, impl='cpu'):
    """The ``cpu_src`` (``device='cpu'``) or ``cuda_src`` (``'cuda'``) of ``op`` ('stats' or 'grad')."""
    if device == 'cuda':
        function = f'{op}_cuda'
    else:
        function = _CPU_FUNCTIONS[impl][0 if op == 'stats' else 1]
    return f'jseg_oa_gemm::{function}<in0_type>({_ARGUMENTS[op]});'


def _code(op, shapes, dtypes, inputs, impl):
    if impl not in CPU_IMPLS:
        raise ValueError(f'offset_attention: unknown CPU impl {impl!r}, expected one of {CPU_IMPLS}')
    return jt.code(shapes, dtypes, inputs,
                   cpu_header=bundle_source('offset_attention_gemm_cpu.cc'), cpu_src=gemm_source(op, 'cpu', impl),
                   cuda_header=bundle_source('offset_attention_gemm_cuda.cu'), cuda_src=gemm_source(op, 'cuda'))


def softmax_stats(attn_t, impl='cpu'):
    """Both softmaxes of one image's class-major attention A^T (K, N).

    Args:
        attn_t (jt.Var): A^T (K, N).
        impl (str): CPU variant, ``'cpu'`` or ``'cuda_twin'`` (ignored on CUDA).

    Returns:
        tuple: P_cls (K, N) (softmax over positions, i.e. along each row),
        P_pos (K, N) (softmax over classes, along each column), lse_cls (K,),
        lse_pos (N,).
    """
    k, n = attn_t.shape
    dt = attn_t.dtype
    return _code('stats', [(k, n), (k, n), (k,), (n,)], [dt] * 4, [attn_t], impl)


def attention_grad(attn_t, dp_cls, dp_pos, lse_cls, lse_pos, d_cls, impl='cpu'):
    """Backward through both softmaxes of one image (all (K, N) except the vectors).

    Args:
        attn_t: A^T (K, N), recomputed.
        dp_cls: d loss / d P_cls = G_cls E^T (K, N).
        dp_pos: d loss / d P_pos = W G_pos^T (K, N).
        lse_cls (K,), lse_pos (N,): the forward's statistics.
        d_cls (K,): rowdot(F_cls, G_cls).
        impl (str): CPU variant, ``'cpu'`` or ``'cuda_twin'`` (ignored on CUDA).

    Returns:
        tuple: [P_cls; dA] (2K, N) and P_pos (K, N).
    """
    k, n = attn_t.shape
    dt = attn_t.dtype
    return _code('grad', [(2 * k, n), (k, n)], [dt, dt], [attn_t, dp_cls, dp_pos, lse_cls, lse_pos, d_cls], impl)


def _image_views(img_feat, cls_repr, i, channels_first):
    e_t = img_feat[i] if channels_first else img_feat[i].transpose(1, 0)   # (C, N)
    w = cls_repr[i if cls_repr.shape[0] > 1 else 0]                       # (K, C)
    return e_t, w


def _stack(parts):
    return parts[0].unsqueeze(0) if len(parts) == 1 else jt.stack(parts)


class GemmOffsetAttention(jt.Function):
    """``'gemm'`` strategy: Jittor products around :func:`softmax_stats` and
    :func:`attention_grad` (see the module docstring). Saved for backward:
    the inputs, ``lse_cls`` (K,) and ``lse_pos`` (N,) per image, and F_cls.

    ``execute(img_feat, cls_repr, channels_first=False, impl='cpu')``; ``impl``
    picks the CPU variant of the two operators (``'cuda_twin'`` for tests).
    """

    def execute(self, img_feat, cls_repr, channels_first=False, impl='cpu'):
        b = img_feat.shape[0]
        f_cls, f_pos, stats = [], [], []
        for i in range(b):
            e_t, w = _image_views(img_feat, cls_repr, i, channels_first)
            p_cls, p_pos, lse_cls, lse_pos = softmax_stats(jt.matmul(w, e_t), impl)
            f_cls.append(nn.matmul_transpose(p_cls, e_t))                  # (K, C)
            f_pos_t = jt.matmul(w.transpose(1, 0), p_pos)                       # (C, N)
            f_pos.append(f_pos_t if channels_first else f_pos_t.transpose(1, 0))
            stats.append((lse_cls, lse_pos))
        f_cls, f_pos = _stack(f_cls), _stack(f_pos)
        self.saved = (img_feat, cls_repr, stats, f_cls)
        self.channels_first = channels_first
        self.impl = impl
        return f_cls, f_pos

    def grad(self, g_cls, g_pos):
        img_feat, cls_repr, stats, f_cls = self.saved
        cf = self.channels_first
        if self.impl == 'cpu' and not jt.flags.use_cuda:
            # The CPU rule (module docstring): the fused backward operator, from the same statistics.
            lse_cls = _stack([s[0] for s in stats])
            lse_pos = _stack([s[1] for s in stats])
            d_feat, d_w = fused_backward(img_feat, cls_repr, g_cls, g_pos, lse_cls, lse_pos, f_cls, cf)
            return d_feat, d_w, None
        dt = img_feat.dtype
        g_cls = jt.zeros(f_cls.shape, dt) if g_cls is None else g_cls.cast(dt)
        g_pos = jt.zeros(img_feat.shape, dt) if g_pos is None else g_pos.cast(dt)
        d_cls_all = (f_cls * g_cls).sum(2)                                      # (B, K)
        k = cls_repr.shape[1]
        d_feat, d_w = [], []
        for i in range(img_feat.shape[0]):
            e_t, w = _image_views(img_feat, cls_repr, i, cf)
            gp_t = g_pos[i] if cf else g_pos[i].transpose(1, 0)                 # (C, N)
            gc = g_cls[i]                                                       # (K, C)
            lse_cls, lse_pos = stats[i]
            pd, p_pos = attention_grad(jt.matmul(w, e_t), jt.matmul(gc, e_t), jt.matmul(w, gp_t),
                                       lse_cls, lse_pos, d_cls_all[i], self.impl)
            de_t = jt.matmul(jt.concat([gc, w], 0).transpose(1, 0), pd)         # (C, N)
            d_feat.append(de_t if cf else de_t.transpose(1, 0))
            d_w.append(nn.matmul_transpose(p_pos, gp_t) + nn.matmul_transpose(pd[k:], e_t))
        d_feat = _stack(d_feat)
        if cls_repr.shape[0] == 1:
            total = d_w[0]
            for extra in d_w[1:]:
                total = total + extra
            d_w = total.unsqueeze(0)
        else:
            d_w = _stack(d_w)
        return d_feat, d_w, None


def gemm_forward(img_feat, cls_repr, channels_first=False):
    """The ``'gemm'`` strategy on checked inputs; see
    :func:`jseg.ops.offset_attention_kernel.offset_attention_fused`."""
    return GemmOffsetAttention.apply(img_feat, cls_repr, channels_first)
