"""Training losses of Mask2Former for semantic segmentation, as mmdet 3.x computes them.

Source of the semantics: mmdetection 3.x ``mmdet/models/dense_heads/mask2former_head.py``
(``_get_targets_single``, ``_loss_by_feat_single``), ``maskformer_head.py`` (``get_targets``,
``loss_by_feat``), ``task_modules/samplers/mask_pseudo_sampler.py`` and mmsegmentation 1.x
``Mask2FormerHead._seg_data_to_instance_data`` (Apache-2.0, OpenMMLab).

Per prediction l (10 of them: deep supervision) and image i with k_i ground-truth classes::

    GT      one binary mask per class present in the label map (``ignore_index`` excluded)
    match   P random points per image; Hungarian matching of the Q queries to the k_i masks on
            class, sigmoid-CE and dice costs at those points (``assigner``)
    labels  K (no-object) for unmatched queries, the matched class otherwise
    cls     CE(cls, labels) with class weights w (no-object 0.1): sum w[y] CE / sum w[y]
    n_mask  mean over processes of sum_i max(k_i, 1), at least 1
    points  P points per matched mask: the most uncertain of 3P random ones (75 %) + random ones
    mask    5 * sum BCE(pred, target at the points) / (n_mask * P)
    dice    5 * sum (1 - dice) / n_mask              (naive dice, eps 1)

The random numbers are drawn in the official order (per prediction: one (1, P, 2) per
image for matching, then (N, 3P, 2) and (N, P - 0.75P, 2) for the loss points, N the
number of matched masks), from ``point_rand`` when it is set, so that a run of the
official code can be replayed exactly.
"""
import jittor as jt
import numpy as np
from jittor import nn

from jseg.registry import MODELS
from jseg.utils.dist import all_reduce_sum, get_world_size

from ..utils.assigner import build_mask_assigner
from ..utils.point_sample import get_uncertain_point_coords_with_randomness, point_sample

__all__ = ['Mask2FormerLoss', 'seg_to_instances']


def seg_to_instances(gt_seg, ignore_index=255):
    """Ground-truth instances of label maps: one binary mask per class present.

    Args:
        gt_seg (np.ndarray): (B, H, W) or (B, 1, H, W) integer labels.
        ignore_index (int): label that forms no instance.

    Returns:
        list[tuple[np.ndarray, np.ndarray]]: per image, the classes (k,) int64
        in ascending order and their masks (k, H, W) uint8.
    """
    gt_seg = np.asarray(gt_seg)
    if gt_seg.ndim == 4:
        if gt_seg.shape[1] != 1:
            raise ValueError(f'label maps must be (B, H, W) or (B, 1, H, W), got {gt_seg.shape}')
        gt_seg = gt_seg[:, 0]
    if gt_seg.ndim != 3:
        raise ValueError(f'label maps must be (B, H, W) or (B, 1, H, W), got {gt_seg.shape}')
    instances = []
    for seg in gt_seg:
        classes = np.unique(seg)
        classes = classes[classes != ignore_index].astype(np.int64)
        masks = (seg[None] == classes[:, None, None]).astype(np.uint8)          # (k, H, W)
        instances.append((classes, masks))
    return instances


def _uniform(shape):
    return jt.rand(*shape)


class _Replay:
    """Hands out pre-drawn random arrays in order (the ``rand`` of the uncertainty sampler)."""

    def __init__(self, arrays):
        self.arrays = list(arrays)

    def __call__(self, shape):
        array = self.arrays.pop(0)
        if tuple(array.shape) != tuple(shape):
            raise RuntimeError(f'replayed random numbers have shape {tuple(array.shape)}, expected {tuple(shape)}')
        return array


class Mask2FormerLoss(nn.Module):
    """Matching and losses of all predictions (deep supervision); holds no parameters.

    Args:
        num_classes (int): K; label K is no-object.
        loss_cls (dict): softmax CrossEntropyLoss with ``class_weight`` (K + 1 values).
        loss_mask (dict): sigmoid CrossEntropyLoss on the sampled points.
        loss_dice (dict): DiceLoss on the sampled points.
        train_cfg (dict | None): ``num_points`` (12544), ``oversample_ratio`` (3.0),
            ``importance_sample_ratio`` (0.75), ``assigner`` (HungarianAssigner with
            ``match_costs``), ``sampler`` (MaskPseudoSampler; the only one supported).
        ignore_index (int): label without an instance.

    Attributes:
        point_rand (callable | None): ``rand(shape) -> jt.Var | np.ndarray`` of uniform
            [0, 1) numbers, called in the official order (see the module docstring);
            None uses ``jt.rand``. Set it to replay the random points of another run.
    """

    def __init__(self, num_classes, loss_cls, loss_mask, loss_dice, train_cfg=None, ignore_index=255):
        super().__init__()
        train_cfg = dict(train_cfg or {})
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        class_weight = loss_cls.get('class_weight')
        if class_weight is None:
            class_weight = [1.0] * (num_classes + 1)
        if len(class_weight) != num_classes + 1:
            raise ValueError(f'loss_cls.class_weight has {len(class_weight)} entries; expected num_classes + 1 '
                             f'= {num_classes + 1} (the last weights no-object)')
        self.class_weight = np.asarray(class_weight, dtype=np.float32)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.num_points = int(train_cfg.get('num_points', 12544))
        self.oversample_ratio = float(train_cfg.get('oversample_ratio', 3.0))
        self.importance_sample_ratio = float(train_cfg.get('importance_sample_ratio', 0.75))
        sampler = train_cfg.get('sampler')
        if sampler is not None and sampler.get('type') not in ('MaskPseudoSampler', 'mmdet.MaskPseudoSampler'):
            raise ValueError(f'Mask2Former supports sampler MaskPseudoSampler only, got {sampler!r}')
        self.assigner = build_mask_assigner(train_cfg.get('assigner'))
        self.point_rand = None

    # ------------------------------------------------------------------ random numbers

    def _draw(self, num_predictions, num_images, num_matched):
        """All random points of one loss call, in the official order.

        Returns:
            tuple[list[list[jt.Var]], list[list]]: matching points [l][i] (1, P, 2) and, per
            prediction, the arrays the uncertainty sampler asks for (empty when N = 0).
        """
        rand = self.point_rand or _uniform
        p = self.num_points
        num_sampled = int(p * self.oversample_ratio)
        num_random = p - int(self.importance_sample_ratio * p)
        matching, sampling = [], []
        for _ in range(num_predictions):
            matching.append([jt.array(rand((1, p, 2))).float32().stop_grad() for _ in range(num_images)])
            draws = []
            if num_matched:
                draws.append(rand((num_matched, num_sampled, 2)))
                if num_random > 0:
                    draws.append(rand((num_matched, num_random, 2)))
            sampling.append(draws)
        return matching, sampling

    # ------------------------------------------------------------------ loss

    def execute(self, cls_preds, mask_preds, gt_seg):
        """Losses of every prediction.

        Args:
            cls_preds (list[jt.Var]): (B, Q, K+1) class logits per prediction.
            mask_preds (list[jt.Var]): (B, Q, h, w) mask logits per prediction.
            gt_seg (jt.Var | np.ndarray): (B, H, W) or (B, 1, H, W) labels.

        Returns:
            dict[str, jt.Var]: ``loss_cls``, ``loss_mask``, ``loss_dice`` of the last
            prediction and ``d{l}.loss_*`` of the others.
        """
        labels_np = gt_seg.numpy() if isinstance(gt_seg, jt.Var) else np.asarray(gt_seg)
        instances = seg_to_instances(labels_np, self.ignore_index)
        num_predictions, batch, num_queries = len(cls_preds), cls_preds[0].shape[0], cls_preds[0].shape[1]
        if len(instances) != batch:
            raise ValueError(f'{len(instances)} label maps for a batch of {batch}')
        # every GT is matched, unless an image has more classes than queries: then every query is
        num_gts = [min(len(classes), num_queries) for classes, _ in instances]
        num_matched = sum(num_gts)
        matching_points, sampling_draws = self._draw(num_predictions, batch, num_matched)

        # ground truth as Vars: (k_i, 1, H, W) float masks per image
        gt_masks = [jt.array(masks[:, None].astype(np.float32)) if len(masks) else None for _, masks in instances]
        gt_labels = [classes for classes, _ in instances]

        # costs at the matching points of every prediction and image, solved with one fetch
        pred_points, gt_points, cls_scores = [], [], []
        for l in range(num_predictions):
            for i in range(batch):
                points = matching_points[l][i]                                          # (1, P, 2)
                pred_points.append(point_sample(mask_preds[l][i:i + 1].stop_grad(), points)[0])   # (Q, P)
                gt_points.append(point_sample(gt_masks[i].reshape(1, -1, *gt_masks[i].shape[2:]), points)[0]
                                 if gt_masks[i] is not None else None)                 # (k_i, P)
                cls_scores.append(cls_preds[l][i].stop_grad())                          # (Q, K+1)
        labels_per_prediction = [gt_labels[i] for _ in range(num_predictions) for i in range(batch)]
        assignments = self.assigner.assign_batch(cls_scores, pred_points, labels_per_prediction, gt_points)

        # mmdet 3.x: the sum over images of MaskPseudoSampler's avg_factor = max(matched masks, 1),
        # reduce_mean over processes, at least 1
        num_total_masks = float(sum(max(k, 1) for k in num_gts))
        num_total_masks = float(all_reduce_sum(np.array([num_total_masks]))[0]) / get_world_size()
        num_total_masks = max(num_total_masks, 1.0)

        losses = {}
        for l in range(num_predictions):
            loss_cls, loss_mask, loss_dice = self._loss_single(
                cls_preds[l], mask_preds[l], gt_masks, gt_labels, assignments[l * batch:(l + 1) * batch],
                num_total_masks, sampling_draws[l])
            prefix = '' if l == num_predictions - 1 else f'd{l}.'
            losses[f'{prefix}loss_cls'] = loss_cls
            losses[f'{prefix}loss_mask'] = loss_mask
            losses[f'{prefix}loss_dice'] = loss_dice
        # mmdet's order: the last prediction's losses first, then d0 .. d{L-2}
        order = ['loss_cls', 'loss_mask', 'loss_dice'] + [k for k in losses if k.startswith('d')]
        return {k: losses[k] for k in order}

    def _loss_single(self, cls_pred, mask_pred, gt_masks, gt_labels, assignments, num_total_masks, draws):
        """Losses of one prediction: cls_pred (B, Q, K+1), mask_pred (B, Q, h, w)."""
        batch, num_queries = cls_pred.shape[:2]
        labels = np.full((batch, num_queries), self.num_classes, dtype=np.int64)
        flat_queries, targets = [], []
        for i, (rows, cols) in enumerate(assignments):
            rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
            order = np.argsort(rows, kind='stable')                   # matched queries in ascending order
            rows, cols = rows[order], cols[order]
            labels[i, rows] = gt_labels[i][cols]
            flat_queries.extend((i * num_queries + rows).tolist())
            if len(rows):
                targets.append(gt_masks[i][jt.array(cols)])            # (n_i, 1, H, W)
        label_weight_sum = float(self.class_weight[labels.reshape(-1)].sum(dtype=np.float32))
        loss_cls = self.loss_cls(cls_pred.reshape(batch * num_queries, -1), jt.array(labels.reshape(-1)),
                                 weight=jt.ones(batch * num_queries), avg_factor=label_weight_sum)
        if not flat_queries:
            zero = mask_pred.sum() * 0.0                               # mmdet: the sum of no predictions
            return loss_cls, zero, zero
        h, w = mask_pred.shape[2:]
        matched = mask_pred.reshape(batch * num_queries, h, w)[jt.array(np.asarray(flat_queries, np.int64))]
        matched = matched.unsqueeze(1)                                  # (N, 1, h, w)
        target = jt.concat(targets, dim=0) if len(targets) > 1 else targets[0]   # (N, 1, H, W)
        points = get_uncertain_point_coords_with_randomness(
            matched, self.num_points, self.oversample_ratio, self.importance_sample_ratio, rand=_Replay(draws))
        target_points = point_sample(target, points)[:, 0].stop_grad()          # (N, P)
        pred_points = point_sample(matched, points)[:, 0]                       # (N, P)
        loss_dice = self.loss_dice(pred_points, target_points, avg_factor=num_total_masks)
        loss_mask = self.loss_mask(pred_points, target_points, avg_factor=num_total_masks * self.num_points)
        return loss_cls, loss_mask, loss_dice
