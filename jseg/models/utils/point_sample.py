"""Point sampling on feature maps, as mmcv's ``point_sample`` and mmdet's uncertainty sampler.

Mask2Former computes its matching costs and mask losses on a set of points in
the unit square instead of on every pixel. ``point_sample`` reads a map at such
points (bilinear, zero outside the map, ``align_corners=False``), and
``get_uncertain_point_coords_with_randomness`` draws the training points:
mostly where the predicted mask logit is closest to 0, plus some uniform ones.
Coordinates are (x, y) in [0, 1], x along the width.
"""
import jittor as jt

from jseg.ops.grid_sample import grid_sample

__all__ = ['get_uncertain_point_coords_with_randomness', 'point_sample']


def point_sample(input, points, align_corners=False):
    """Bilinear samples of ``input`` at normalised points.

    Args:
        input (jt.Var): (N, C, H, W) maps.
        points (jt.Var): (N, P, 2) or (N, Hg, Wg, 2) coordinates (x, y) in
            [0, 1]; 0 and 1 are the outer edges of the border pixels
            (``align_corners=False``). Samples outside the map read zeros.
        align_corners (bool): as in ``grid_sample``.

    Returns:
        jt.Var: (N, C, P), or (N, C, Hg, Wg) for 4-D ``points``.
    """
    if points.ndim not in (3, 4) or points.shape[-1] != 2:
        raise ValueError(f'point_sample: points must be (N, P, 2) or (N, Hg, Wg, 2), got {tuple(points.shape)}')
    if input.ndim != 4 or input.shape[0] != points.shape[0]:
        raise ValueError(f'point_sample: input must be (N, C, H, W) with N = {points.shape[0]} '
                         f'(the points\' batch), got {tuple(input.shape)}')
    flat = points.ndim == 3
    grid = points.unsqueeze(2) if flat else points                         # (N, P, 1, 2)
    grid = (grid * 2.0 - 1.0).cast(input.dtype)                            # [0, 1] -> [-1, 1]
    out = grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=align_corners)
    return out.squeeze(3) if flat else out                                 # (N, C, P)


def _uniform(shape):
    return jt.rand(*shape)


def get_uncertain_point_coords_with_randomness(mask_preds, num_points, oversample_ratio,
                                               importance_sample_ratio, rand=None):
    """Training points: the most uncertain of an oversampled uniform set, plus uniform ones.

    mmdet's rule for class-agnostic masks: draw ``int(num_points *
    oversample_ratio)`` uniform points per mask, keep the
    ``int(importance_sample_ratio * num_points)`` whose sampled logit has the
    smallest magnitude (uncertainty ``-|logit|``, taken at the points, not on
    the grid), in descending order of uncertainty, and append
    ``num_points - kept`` fresh uniform points.

    Args:
        mask_preds (jt.Var): (N, 1, H, W) mask logits.
        num_points (int): points per mask, P.
        oversample_ratio (float): >= 1.
        importance_sample_ratio (float): in [0, 1].
        rand (callable | None): ``rand(shape) -> jt.Var`` of uniform [0, 1)
            numbers; called with (N, int(P * oversample_ratio), 2) and then,
            when some points are random, (N, P - kept, 2). Default ``jt.rand``;
            replace it to replay another implementation's draws.

    Returns:
        jt.Var: (N, P, 2) point coordinates (x, y) in [0, 1), no gradient.
    """
    if oversample_ratio < 1:
        raise ValueError(f'oversample_ratio must be >= 1, got {oversample_ratio}')
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f'importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}')
    if mask_preds.ndim != 4 or mask_preds.shape[1] != 1:
        raise ValueError(f'mask_preds must be (N, 1, H, W), got {tuple(mask_preds.shape)}')
    rand = rand or _uniform
    batch = mask_preds.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    mask_preds = mask_preds.detach()  # detach, not stop_grad: that would cut the caller's gradient in place
    coords = jt.array(rand((batch, num_sampled, 2))).float32().stop_grad()  # (N, S, 2)
    logits = point_sample(mask_preds, coords)                                # (N, 1, S)
    uncertainty = -logits[:, 0].abs()                                        # (N, S)
    _, idx = jt.topk(uncertainty, num_uncertain, dim=1)                      # (N, K), most uncertain first
    kept = coords.reindex([batch, num_uncertain, 2], ['i0', '@e0(i0,i1)', 'i2'], extras=[idx])  # (N, K, 2)
    if num_random > 0:
        extra = jt.array(rand((batch, num_random, 2))).float32().stop_grad()
        kept = jt.concat([kept, extra], dim=1)                               # (N, P, 2)
    return kept.stop_grad()
