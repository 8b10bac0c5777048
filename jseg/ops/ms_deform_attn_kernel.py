"""Multi-scale deformable attention as JIT-compiled Jittor operators (``jt.code``), forward and backward.

Same semantics and arguments as
:func:`jseg.ops.ms_deform_attn.ms_deform_attn_reference` (mmcv's
``multi_scale_deformable_attn``). :func:`ms_deform_attn_fused` is the entry
point; it is a ``jt.Function`` whose forward is one ``jt.code`` operator and
whose backward is one ``jt.code`` operator with three outputs (gradients of
value, sampling locations and attention weights), each with a ``cpu_src`` and
a ``cuda_src``.

The C++ lives in ``jseg/ops/csrc/``:

* ``ms_deform_attn_common.h``: the per-sample arithmetic (the four bilinear
  neighbours with zero padding, their weights and the weights' derivatives,
  the location and weight gradients of a sample) as ``__host__ __device__``
  inline functions, shared by both back-ends;
* ``ms_deform_attn_cpu.h``: OpenMP kernels; forward parallel over (b, query),
  backward parallel over (b, head, level) so that each task owns its slice of the
  value gradient (no atomics; results independent of the thread count);
  every inner loop runs over the D contiguous channels of one pixel and head;
* ``ms_deform_attn_cuda.cuh``: forward one thread per output element, backward
  one warp per sample with ``atomicAdd`` into the value gradient.

The level sizes travel in the operator's ``data`` (runtime constants), so one
compiled kernel per dtype serves every image size. Outputs of ``jt.code`` are
not zeroed by Jittor; the kernels write or zero every output element.

Speed and memory against the pure-Jittor composition: run
``python tools/benchmark_ops.py`` (Mask2Former's pixel-decoder shapes).
"""
import jittor as jt

from .csrc_bundle import bundle_source
from .ms_deform_attn import _check

__all__ = ['ms_deform_attn_fused', 'MSDeformAttnFunction', 'MAX_LEVELS']

MAX_LEVELS = 16   # jseg_msda::MAX_LEVELS in ms_deform_attn_common.h


def _cpu_header():
    return bundle_source('ms_deform_attn_cpu.h')


def _cuda_header():
    return bundle_source('ms_deform_attn_cuda.cuh')


# Every source reads the sizes from value (in{V}), the locations (in{LOC}) and the level sizes from data.
_PRELUDE = r'''
using namespace jseg_msda;
typedef in{V}_type T;
const idx_t B = in{V}_shape0, S = in{V}_shape1, nH = in{V}_shape2, D = in{V}_shape3;
const idx_t Lq = in{LOC}_shape1, P = in{LOC}_shape4;
Levels levels;
levels.count = (int)in{LOC}_shape3;
idx_t level_start = 0;
for (int l = 0; l < levels.count; l++) {{
    levels.height[l] = (int)data["h" + std::to_string(l)];
    levels.width[l] = (int)data["w" + std::to_string(l)];
    levels.start[l] = level_start;
    level_start += (idx_t)levels.height[l] * levels.width[l];
}}
'''

# forward: in0 value, in1 locations, in2 attention weights; out0 (B, Lq, nH*D)
_FORWARD_CALL = 'FN<T>(in0_p, in1_p, in2_p, out0_p, B, S, nH, D, Lq, P, levels);'
# backward: in0 dout, in1 value, in2 locations, in3 weights; out0..2 gradients of value, locations, weights
_BACKWARD_CALL = 'FN<T>(in0_p, in1_p, in2_p, in3_p, out0_p, out1_p, out2_p, B, S, nH, D, Lq, P, levels);'


def forward_source(backend):
    """Body of the forward ``jt.code`` source for ``backend`` ('cpu' or 'cuda')."""
    return _PRELUDE.format(V=0, LOC=1) + _FORWARD_CALL.replace('FN', f'{backend}_forward')


def backward_source(backend):
    """Body of the backward ``jt.code`` source for ``backend`` ('cpu' or 'cuda')."""
    return _PRELUDE.format(V=1, LOC=2) + _BACKWARD_CALL.replace('FN', f'{backend}_backward')


def _level_data(spatial_shapes):
    data = {}
    for l, (h, w) in enumerate(spatial_shapes):
        data[f'h{l}'], data[f'w{l}'] = h, w
    return data


class MSDeformAttnFunction(jt.Function):
    """Forward/backward as ``jt.code`` operators (see the module docstring).

    ``execute(value, sampling_locations, attention_weights, spatial_shapes)``
    returns (B, Lq, nH*D); ``grad`` returns the gradients for value
    (B, S, nH, D), sampling locations (B, Lq, nH, L, P, 2) and attention
    weights (B, Lq, nH, L, P). The three inputs are kept for backward.
    """

    def execute(self, value, sampling_locations, attention_weights, spatial_shapes):
        b, _, nh, d = value.shape
        lq = sampling_locations.shape[1]
        self.inputs = (value, sampling_locations, attention_weights)
        self.data = _level_data(spatial_shapes)
        return jt.code((b, lq, nh * d), value.dtype, [value, sampling_locations, attention_weights],
                       cpu_header=_cpu_header(), cpu_src=forward_source('cpu'),
                       cuda_header=_cuda_header(), cuda_src=forward_source('cuda'), data=self.data)

    def grad(self, dout):
        value, loc, attn = self.inputs
        if dout is None:
            return None, None, None
        dout = dout.cast(value.dtype)
        return jt.code([value.shape, loc.shape, attn.shape], [value.dtype] * 3, [dout, value, loc, attn],
                       cpu_header=_cpu_header(), cpu_src=backward_source('cpu'),
                       cuda_header=_cuda_header(), cuda_src=backward_source('cuda'), data=self.data)


def ms_deform_attn_fused(value, spatial_shapes, sampling_locations, attention_weights):
    """Multi-scale deformable attention through the JIT-compiled operators; same
    arguments and result as :func:`jseg.ops.ms_deform_attn.ms_deform_attn_reference`.

    Args:
        value (jt.Var): (B, S, nH, D), float32 or float64 (other dtypes are
            computed in float32).
        spatial_shapes (tuple[tuple[int, int]]): ``(H_l, W_l)`` per level, at
            most ``MAX_LEVELS`` levels.
        sampling_locations (jt.Var): (B, Lq, nH, L, P, 2), cast to value's dtype.
        attention_weights (jt.Var): (B, Lq, nH, L, P), cast to value's dtype.

    Returns:
        jt.Var: (B, Lq, nH*D).
    """
    shapes = _check(value, spatial_shapes, sampling_locations, attention_weights)
    if len(shapes) > MAX_LEVELS:
        raise ValueError(f'multi_scale_deformable_attn: the fused kernel takes at most {MAX_LEVELS} levels, '
                         f'got {len(shapes)}')
    if value.dtype not in (jt.float32, jt.float64):
        value = value.float32()
    if sampling_locations.dtype != value.dtype:
        sampling_locations = sampling_locations.cast(value.dtype)
    if attention_weights.dtype != value.dtype:
        attention_weights = attention_weights.cast(value.dtype)
    return MSDeformAttnFunction.apply(value, sampling_locations, attention_weights, shapes)
