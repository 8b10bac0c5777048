"""Operators: each public op has a pure-Jittor reference and a seam for a fused kernel."""
from .argmax import argmax
from .carafe import carafe, carafe_reference, set_carafe_kernel
from .ms_deform_attn import ms_deform_attn_reference, multi_scale_deformable_attn, set_ms_deform_attn_kernel
from .offset_attention import offset_attention, offset_attention_reference, set_offset_attention_kernel
from .pixel_shuffle import pixel_shuffle, pixel_unshuffle
from .softmax import softmax, softmax_reference
# JIT-compiled operators, used by the public ops unless switched off (see fused_kernel)
from .fused_kernel import configure_fused_ops, fused_ops, fused_ops_enabled, use_fused_ops
from .resize_bilinear import resize_bilinear, resize_bilinear_reference

__all__ = ['argmax', 'carafe', 'carafe_reference', 'multi_scale_deformable_attn', 'ms_deform_attn_reference',
           'set_ms_deform_attn_kernel', 'offset_attention', 'offset_attention_reference', 'pixel_shuffle',
           'pixel_unshuffle', 'resize_bilinear', 'resize_bilinear_reference', 'set_carafe_kernel',
           'set_offset_attention_kernel', 'softmax', 'softmax_reference', 'configure_fused_ops', 'fused_ops',
           'fused_ops_enabled', 'use_fused_ops']
