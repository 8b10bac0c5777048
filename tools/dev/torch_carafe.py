"""CARAFE in plain PyTorch (CPU), with mmcv's semantics, for running the official OffSeg code without mmcv-full.

mmcv's ``mmcv.ops.carafe`` has only CUDA kernels (and mmcv-lite has no compiled operators at all), so
the official FreqFusion cannot run on a CPU as it is. :func:`carafe` is a stand-in with the same
arguments and result: for features (N, C, h, w) and masks (N, G*k*k, h*s, w*s)::

    out[n, c, y, x] = sum_{i,j < k} masks[n, g*k*k + i*k + j, y, x] * f[n, c, y//s + i - r, x//s + j - r]

with ``g = c // (C/G)``, ``r = (k-1)//2`` and zero outside the feature map (mmcv's
``carafe_naive_forward_cuda_kernel``). It is written for speed on a CPU, as the fastest CARAFE the
official code could have there: the k x k neighbourhoods are gathered channels-last once and every
output pixel is a row of one batched matrix product (forward and both gradients), instead of k*k
passes over the output or a per-pixel loop. :func:`carafe_naive`
is a direct loop over output pixels, only for checking it (:func:`self_check`).

Imported from ``tools/dev`` scripts that run with PyTorch, never by jseg.
"""
import torch
import torch.nn.functional as F

def _check(features, masks, kernel_size, group_size, scale_factor):
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    if k < 1 or k % 2 == 0 or g < 1 or s < 1 or c % g:
        raise ValueError(f'carafe: bad kernel_size {k}, group_size {g} or scale_factor {s} for {c} channels')
    if tuple(masks.shape) != (n, g * k * k, h * s, w * s):
        raise ValueError(f'carafe: masks {tuple(masks.shape)} do not match features {tuple(features.shape)} '
                         f'(expected {(n, g * k * k, h * s, w * s)})')


class _CarafeFunction(torch.autograd.Function):
    """Autograd function of :func:`carafe`.

    Per low-resolution pixel and group, the s*s output pixels are one small matrix product:
    (s*s, k*k) masks @ (k*k, C/G) neighbourhood, batched over the B = N*h*w*G pixels and groups.
    """

    @staticmethod
    def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
        n, c, h, w = features.shape
        k, g, s = kernel_size, group_size, scale_factor
        neighbourhoods = _neighbourhoods(features, k, g)                      # (B, k*k, C/G)
        # (N, G, k*k, h, s, w, s) -> (B, s*s, k*k)
        weights = masks.view(n, g, k * k, h, s, w, s).permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, s * s, k * k)
        rows = torch.bmm(weights, neighbourhoods)                              # (B, s*s, C/G)
        ctx.save_for_backward(neighbourhoods, weights)
        ctx.config = (n, c, h, w, k, g, s)
        return rows.view(n, h, w, g, s, s, c // g).permute(0, 3, 6, 1, 4, 2, 5).reshape(n, c, h * s, w * s)

    @staticmethod
    def backward(ctx, grad_out):
        neighbourhoods, weights = ctx.saved_tensors
        n, c, h, w, k, g, s = ctx.config
        r, cg = (k - 1) // 2, c // g
        # (N, G, C/G, h, s, w, s) -> (B, s*s, C/G)
        grad_rows = grad_out.reshape(n, g, cg, h, s, w, s).permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, s * s, cg)
        grad_features = grad_masks = None
        if ctx.needs_input_grad[0]:
            grad_nb = torch.bmm(weights.transpose(1, 2), grad_rows).view(n, h, w, g, k, k, cg)
            grad_padded = grad_out.new_zeros(n, h + 2 * r, w + 2 * r, g, cg)
            for i in range(k):
                for j in range(k):
                    grad_padded[:, i:i + h, j:j + w].add_(grad_nb[:, :, :, :, i, j])
            grad_features = grad_padded[:, r:r + h, r:r + w].permute(0, 3, 4, 1, 2).reshape(n, c, h, w)
        if ctx.needs_input_grad[1]:
            grad_weights = torch.bmm(grad_rows, neighbourhoods.transpose(1, 2))          # (B, s*s, k*k)
            grad_masks = grad_weights.view(n, h, w, g, s, s, k * k).permute(0, 3, 6, 1, 4, 2, 5).reshape(
                n, g * k * k, h * s, w * s)
        return grad_features, grad_masks, None, None, None


def _neighbourhoods(features, k, g):
    """(N, C, h, w) -> (N*h*w*G, k*k, C/G): the zero-padded k x k neighbourhood of every pixel, per group."""
    n, c, h, w = features.shape
    r, cg = (k - 1) // 2, c // g
    padded = F.pad(features, [r] * 4).permute(0, 2, 3, 1).contiguous()        # (N, h+2r, w+2r, C)
    sn, sy, sx, _ = padded.stride()
    view = padded.as_strided((n, h, w, g, k, k, cg), (sn, sy, sx, cg, sy, sx, 1))
    return view.reshape(n * h * w * g, k * k, cg)


def carafe(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE as mmcv's ``carafe``: features (N, C, h, w), masks (N, G*k*k, h*s, w*s) -> (N, C, h*s, w*s)."""
    _check(features, masks, kernel_size, group_size, scale_factor)
    return _CarafeFunction.apply(features.contiguous(), masks.contiguous(), kernel_size, group_size, scale_factor)


def carafe_naive(features, masks, kernel_size, group_size, scale_factor):
    """The formula of the module docstring, one output pixel at a time (tiny inputs only)."""
    _check(features, masks, kernel_size, group_size, scale_factor)
    n, c, h, w = features.shape
    k, s, cg = kernel_size, scale_factor, c // group_size
    r = (k - 1) // 2
    out = features.new_zeros(n, c, h * s, w * s)
    for y in range(h * s):
        for x in range(w * s):
            for ch in range(c):
                total = features.new_zeros(n)
                for i in range(k):
                    for j in range(k):
                        fy, fx = y // s + i - r, x // s + j - r
                        if 0 <= fy < h and 0 <= fx < w:
                            total = total + masks[:, (ch // cg) * k * k + i * k + j, y, x] * features[:, ch, fy, fx]
                out[:, ch, y, x] = total
    return out


def self_check():
    """:func:`carafe` against :func:`carafe_naive` (values and both gradients, float64) on tiny cases.

    Returns a list of ``(case, max |difference|)``; raises ``AssertionError`` past 1e-10.
    """
    results = []
    gen = torch.Generator().manual_seed(0)
    cases = [(1, 3, 4, 5, 5, 1, 2), (2, 4, 3, 4, 3, 2, 1), (1, 4, 5, 3, 3, 2, 2), (1, 2, 2, 2, 1, 1, 3)]
    for n, c, h, w, k, g, s in cases:
        f = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        m = torch.randn(n, g * k * k, h * s, w * s, generator=gen, dtype=torch.float64)
        cot = torch.randn(n, c, h * s, w * s, generator=gen, dtype=torch.float64)
        grads = []
        outs = []
        for fn in (carafe, carafe_naive):
            fr, mr = f.clone().requires_grad_(), m.clone().requires_grad_()
            out = fn(fr, mr, k, g, s)
            outs.append(out.detach())
            grads.append(torch.autograd.grad((out * cot).sum(), (fr, mr)))
        diff = max([(outs[0] - outs[1]).abs().max().item()]
                   + [(a - b).abs().max().item() for a, b in zip(*grads)])
        results.append(((n, c, h, w, k, g, s), diff))
        assert diff < 1e-10, f'carafe differs from the naive loop by {diff} on (N, C, h, w, k, G, s) = ' \
            f'{(n, c, h, w, k, g, s)}'
    return results
