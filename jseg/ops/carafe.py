"""CARAFE: content-aware reassembly of features (Wang et al., ICCV 2019, arXiv:1905.02188).

Semantics follow mmcv's ``mmcv.ops.carafe`` (its CUDA kernels are the
specification; mmcv has no CPU version). For features ``x`` (B, C, h, w),
reassembly kernels ``m`` (B, G*k*k, h*s, w*s), group ``g(c) = c // (C // G)``
and ``r = (k - 1) // 2``::

    out[b, c, y, x] = sum_{i, j < k} x[b, c, y // s + i - r, x // s + j - r]
                                     * m[b, g(c)*k*k + i*k + j, y, x]

with zero padding outside the feature map. The sum runs over ``(i, j)`` in
row-major order, as mmcv's kernels accumulate it.

:func:`carafe` is the public entry point. :func:`carafe_reference` is the
pure-Jittor implementation (forward and, through Jittor's autograd, backward);
``carafe`` dispatches to it until a fused kernel is registered with
:func:`set_carafe_kernel`.
"""
from jittor import nn

__all__ = ['carafe', 'carafe_reference', 'set_carafe_kernel']

# A fused implementation with carafe_reference's signature, or None. It is
# the seam for a jt.code kernel: carafe() uses it when set.
_fused_kernel = None


def set_carafe_kernel(fn):
    """Route :func:`carafe` to ``fn`` (same signature); ``None`` restores the reference.

    Returns:
        callable | None: the kernel registered before, so that callers can restore it.
    """
    global _fused_kernel
    previous, _fused_kernel = _fused_kernel, fn
    return previous


def _check(features, masks, kernel_size, group_size, scale_factor):
    if features.ndim != 4 or masks.ndim != 4:
        raise ValueError(f'carafe expects 4-D features and masks, got {features.shape} and {masks.shape}')
    b, c, h, w = features.shape
    expected = (b, group_size * kernel_size * kernel_size, h * scale_factor, w * scale_factor)
    if tuple(masks.shape) != expected:
        raise ValueError(f'carafe: masks must have shape {expected} for features {tuple(features.shape)} '
                         f'(kernel {kernel_size}, group {group_size}, scale {scale_factor}), '
                         f'got {tuple(masks.shape)}')
    if kernel_size % 2 != 1:
        raise ValueError(f'carafe: kernel_size must be odd, got {kernel_size}')
    if c % group_size:
        raise ValueError(f'carafe: {c} channels do not split into {group_size} groups')


def carafe(features, masks, kernel_size, group_size, scale_factor):
    """Reassemble ``features`` with per-pixel kernels ``masks`` (mmcv semantics).

    Args:
        features (jt.Var): (B, C, h, w).
        masks (jt.Var): (B, G*k*k, h*s, w*s), usually softmax-normalised over
            each group's k*k taps.
        kernel_size (int): k, odd.
        group_size (int): G; channel group ``c // (C // G)`` uses mask group ``g``.
        scale_factor (int): s, the upsampling factor.

    Returns:
        jt.Var: (B, C, h*s, w*s).
    """
    _check(features, masks, kernel_size, group_size, scale_factor)
    if _fused_kernel is not None:
        return _fused_kernel(features, masks, kernel_size, group_size, scale_factor)
    return carafe_reference(features, masks, kernel_size, group_size, scale_factor)


def carafe_reference(features, masks, kernel_size, group_size, scale_factor):
    """Pure-Jittor CARAFE; same arguments and result as :func:`carafe`.

    The k*k shifted views of the zero-padded input are multiplied with their
    mask channel and summed. Jittor fuses the whole sum into one element-wise
    kernel, so neither the unfolded (B, C*k*k, ...) tensor nor the upsampled
    input is ever materialised. The output is computed phase-major,
    (B, G, C/G, s, s, h, w), so the fused loop runs over contiguous rows, and
    interleaved to (B, C, h*s, w*s) at the end.
    """
    _check(features, masks, kernel_size, group_size, scale_factor)
    b, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    r = (k - 1) // 2
    padded = nn.pad(features, [r, r, r, r]) if r else features        # (B, C, h+2r, w+2r)
    # masks (B, G*k*k, h*s, w*s) -> (B, G, k*k, s, s, h, w): output phase (dy, dx) at (y, x)
    if s == 1:
        phased = masks.reshape(b, g, k * k, 1, 1, h, w)
    else:
        phased = masks.reshape(b, g, k * k, h, s, w, s).permute(0, 1, 2, 4, 6, 3, 5)
    out = None
    for i in range(k):
        for j in range(k):
            tap = padded[:, :, i:i + h, j:j + w].reshape(b, g, c // g, 1, 1, h, w)
            term = tap * phased[:, :, i * k + j:i * k + j + 1]          # (B, G, C/G, s, s, h, w)
            out = term if out is None else out + term
    if s == 1:
        return out.reshape(b, c, h, w)
    return out.permute(0, 1, 2, 5, 3, 6, 4).reshape(b, c, h * s, w * s)
