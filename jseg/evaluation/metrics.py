"""Semantic segmentation metrics as mmsegmentation computes them.

Per-class intersection and union are accumulated over the whole split (not
averaged per image); pixels labelled ``ignore_index`` are skipped. A class
absent from both predictions and labels has IoU NaN; a class absent from the
labels has Acc NaN; NaNs are left out of the means (``np.nanmean``).
"""
import os.path as osp

import numpy as np

from jseg.config import ConfigError
from jseg.registry import METRICS
from jseg.utils.dist import all_reduce_sum, get_world_size

__all__ = ['IoUMetric', 'intersect_and_union', 'mean_iou', 'metrics_from_areas', 'format_metrics_table']


def _reduce_zero_label(label):
    label = label.astype(np.int64, copy=True)
    label[label == 0] = 256
    label -= 1  # 0 -> 255 (ignored), k -> k - 1
    return label


def intersect_and_union(pred, label, num_classes, ignore_index=255, reduce_zero_label=False):
    """Per-class pixel areas of one prediction/label pair.

    Args:
        pred (np.ndarray): (H, W) predicted class indices.
        label (np.ndarray): (H, W) ground truth.
        num_classes (int): K.
        ignore_index (int): label value to skip.
        reduce_zero_label (bool): map label 0 to ignored and k to k - 1 first.

    Returns:
        tuple[np.ndarray]: (area_intersect, area_union, area_pred, area_label), each (K,) int64.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f'prediction {pred.shape} and label {label.shape} differ in shape')
    if reduce_zero_label:
        label = _reduce_zero_label(label)
    mask = label != ignore_index
    pred = pred[mask].astype(np.int64)
    label = label[mask].astype(np.int64)
    valid = (label >= 0) & (label < num_classes)
    if not valid.all():
        bad = np.unique(label[~valid])[:5]
        raise ValueError(f'label values {bad.tolist()} are outside [0, {num_classes}) and not '
                         f'ignore_index={ignore_index}')
    hit = pred == label
    area_intersect = np.bincount(label[hit], minlength=num_classes)[:num_classes]
    in_range = (pred >= 0) & (pred < num_classes)
    area_pred = np.bincount(pred[in_range], minlength=num_classes)[:num_classes]
    area_label = np.bincount(label, minlength=num_classes)[:num_classes]
    area_union = area_pred + area_label - area_intersect
    return area_intersect, area_union, area_pred, area_label


def metrics_from_areas(area_intersect, area_union, area_label, area_pred=None, iou_metrics=('mIoU',),
                       nan_to_num=None, beta=1):
    """Split metrics (fractions) from per-class areas accumulated over the split, as mmseg's IoUMetric.

    Args:
        area_intersect, area_union, area_label, area_pred (np.ndarray): (K,) areas
            (``area_pred`` is needed for mDice and mFscore).
        iou_metrics (sequence[str]): besides aAcc, mIoU and mAcc (always computed),
            ``'mDice'`` adds ``Dice``/``mDice`` and ``'mFscore'`` adds
            ``Fscore``/``Precision``/``Recall`` and their means.
        nan_to_num (float | None): replaces NaN per-class values (and aAcc) before averaging.
        beta (float): the F-score's beta.

    Returns:
        dict: ``aAcc`` and ``m<Name>`` floats, per-class ``(K,)`` arrays ``IoU``, ``Acc``, ...
    """
    area_intersect = np.asarray(area_intersect, dtype=np.float64)
    area_union = np.asarray(area_union, dtype=np.float64)
    area_label = np.asarray(area_label, dtype=np.float64)
    per_class = {}
    with np.errstate(divide='ignore', invalid='ignore'):
        total = area_label.sum()
        aacc = area_intersect.sum() / total if total else float('nan')
        per_class['IoU'] = area_intersect / area_union  # NaN where the class is in neither
        per_class['Acc'] = area_intersect / area_label  # NaN where the class is not in the labels
        if 'mDice' in iou_metrics or 'mFscore' in iou_metrics:
            if area_pred is None:
                raise ValueError('mDice and mFscore need the predicted areas (area_pred)')
            area_pred = np.asarray(area_pred, dtype=np.float64)
        if 'mDice' in iou_metrics:
            per_class['Dice'] = 2 * area_intersect / (area_pred + area_label)
        if 'mFscore' in iou_metrics:
            precision = area_intersect / area_pred
            recall = area_intersect / area_label
            per_class['Fscore'] = (1 + beta ** 2) * precision * recall / (beta ** 2 * precision + recall)
            per_class['Precision'] = precision
            per_class['Recall'] = recall
    if nan_to_num is not None:
        aacc = float(np.nan_to_num(aacc, nan=nan_to_num))
        per_class = {k: np.nan_to_num(v, nan=nan_to_num) for k, v in per_class.items()}
    result = dict(aAcc=float(aacc))
    for name, values in per_class.items():
        result['m' + name] = float(np.nanmean(values)) if np.isfinite(values).any() else float('nan')
    result.update(per_class)
    return result


def mean_iou(preds, labels, num_classes, ignore_index=255, reduce_zero_label=False):
    """mIoU of a whole split.

    Args:
        preds, labels (list[np.ndarray] | np.ndarray): per-image (H, W) maps.
        num_classes (int): K.

    Returns:
        dict: ``aAcc``, ``mIoU``, ``mAcc`` (floats in [0, 1]) and per-class
        ``IoU`` and ``Acc`` arrays (NaN where undefined).
    """
    if isinstance(preds, np.ndarray) and preds.ndim == 2:
        preds, labels = [preds], [labels]
    if len(preds) != len(labels):
        raise ValueError(f'{len(preds)} predictions but {len(labels)} labels')
    totals = np.zeros((4, num_classes), dtype=np.int64)
    for pred, label in zip(preds, labels):
        totals += np.stack(intersect_and_union(pred, label, num_classes, ignore_index, reduce_zero_label))
    return metrics_from_areas(totals[0], totals[1], totals[3])


SCALAR_METRICS = ('aAcc', 'mIoU', 'mAcc', 'mDice', 'mFscore', 'mPrecision', 'mRecall')


def format_metrics_table(metrics, class_names):
    """Per-class IoU/Acc table (percent), as mmseg prints it."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(metrics['IoU']))]
    width = max([len('Class')] + [len(n) for n in names])
    lines = [f'| {"Class":<{width}} |   IoU  |   Acc  |', f'|{"-" * (width + 2)}|--------|--------|']
    for name, iou, acc in zip(names, metrics['IoU'], metrics['Acc']):
        lines.append(f'| {name:<{width}} | {_pct(iou):>6} | {_pct(acc):>6} |')
    summary = '  '.join(f'{k}: {_pct(metrics[k])}' for k in SCALAR_METRICS if k in metrics)
    return '\n'.join(lines) + '\n' + summary


def _pct(value):
    return 'nan' if not np.isfinite(value) else f'{100 * value:.2f}'


@METRICS.register_module()
class IoUMetric:
    """Accumulates per-class areas over a split; MPI ranks are summed in :meth:`compute`.

    Under MPI, Jittor fills the last batch of a split by giving some ranks a
    sample another rank also has. Passing each sample's ``sample_idx`` to
    :meth:`process` lets :meth:`compute` count every sample exactly once, so a
    split evaluated by N processes gives the single-process result.

    Args:
        num_classes (int): K (set by the runner from the dataset when omitted).
        ignore_index (int): label to skip.
        iou_metrics (list[str]): ``'mDice'`` and ``'mFscore'`` add those metrics; the
            result always holds aAcc, mIoU and mAcc (mmseg leaves mIoU out unless named).
        nan_to_num (float | None): per-class NaNs become this number before the means.
        beta (float): the F-score's beta.
        output_dir (str | None): also write each prediction as ``<output_dir>/<image name>.png``
            (uint8 class indices, +1 when the sample has ``reduce_zero_label``: ADE20K's
            0..150 ids of the test server), as mmseg's IoUMetric does.
        format_only (bool): only write the predictions (needs ``output_dir``); no metrics.
        collect_device, prefix: only the defaults ('cpu', None); jseg gathers on the CPU
            and names metrics without prefix.
    """

    def __init__(self, num_classes=None, ignore_index=255, iou_metrics=('mIoU',), nan_to_num=None,
                 beta=1, collect_device='cpu', output_dir=None, format_only=False, prefix=None):
        iou_metrics = [iou_metrics] if isinstance(iou_metrics, str) else list(iou_metrics)
        unsupported = set(iou_metrics) - {'mIoU', 'mDice', 'mFscore'}
        if unsupported:
            raise ConfigError(f'IoUMetric: unknown iou_metrics {sorted(unsupported)}')
        if format_only and not output_dir:
            raise ConfigError('IoUMetric: format_only=True needs output_dir (where the predictions are written)')
        if collect_device != 'cpu':
            raise ConfigError(f'IoUMetric: collect_device={collect_device!r} is not supported (use \'cpu\')')
        if prefix:
            raise ConfigError(f'IoUMetric: prefix={prefix!r} is not supported (metric names carry no prefix)')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.iou_metrics = tuple(iou_metrics)
        self.nan_to_num = nan_to_num
        self.beta = beta
        self.output_dir = output_dir
        self.format_only = bool(format_only)
        self.reset()

    @property
    def metric_names(self):
        """The scalar metrics :meth:`compute` returns (``save_best`` may name any of them)."""
        if self.format_only:
            return []
        names = ['aAcc', 'mIoU', 'mAcc']
        if 'mDice' in self.iou_metrics:
            names.append('mDice')
        if 'mFscore' in self.iou_metrics:
            names += ['mFscore', 'mPrecision', 'mRecall']
        return names

    def reset(self):
        self.totals = None      # (4, K) areas of samples without an index
        self.plain_count = 0    # how many of those
        self.by_sample = {}     # sample_idx -> (4, K) areas

    def save_prediction(self, pred, meta):
        """Write one (H, W) prediction to ``output_dir`` as mmseg does (nothing without ``output_dir``).

        ``meta`` gives ``img_path`` (the file name) and ``reduce_zero_label`` (add 1).
        """
        if not self.output_dir:
            return
        from jseg.visualization import write_label_map
        name = osp.splitext(osp.basename(meta['img_path']))[0] + '.png'
        mask = np.asarray(pred).astype(np.int64)
        if meta.get('reduce_zero_label', False):
            mask = mask + 1
        write_label_map(osp.join(osp.abspath(self.output_dir), name), mask.astype(np.uint8))

    def process(self, pred, label, sample_idx=None):
        """Add one (H, W) prediction and its (H, W) label (a repeated ``sample_idx`` counts once).

        With ``format_only`` nothing is accumulated.
        """
        if self.format_only:
            return
        if self.num_classes is None:
            raise ValueError('IoUMetric.num_classes is not set')
        areas = np.stack(intersect_and_union(pred, label, self.num_classes, self.ignore_index))
        if sample_idx is not None:
            self.by_sample[int(sample_idx)] = areas
        else:
            self.totals = areas if self.totals is None else self.totals + areas
            self.plain_count += 1

    def _indexed_totals(self):
        """Sum of per-sample areas over all ranks, each sample counted once: ((4, K), count)."""
        size = int(all_reduce_sum(np.array([max(self.by_sample, default=-1) + 1]))[0])
        if get_world_size() == 1 or size == 0:
            areas = sum(self.by_sample.values(), np.zeros((4, self.num_classes), np.int64))
            return areas, len(self.by_sample)
        dense = np.zeros((size, 4, self.num_classes), np.int64)
        seen = np.zeros(size, np.int64)
        for idx, areas in self.by_sample.items():
            dense[idx] = areas
            seen[idx] = 1
        dense, seen = all_reduce_sum(dense), all_reduce_sum(seen)
        counted = seen > 0
        return (dense[counted] // seen[counted, None, None]).sum(0), int(counted.sum())

    def compute(self):
        """Metrics over everything processed on every MPI rank (``{}`` with ``format_only``)."""
        if self.format_only:
            return {}
        plain = self.totals if self.totals is not None else np.zeros((4, self.num_classes), np.int64)
        plain = all_reduce_sum(plain)
        indexed, count = self._indexed_totals()
        totals = plain + indexed
        count += int(all_reduce_sum(np.array([self.plain_count]))[0])
        if count == 0:
            raise ValueError('IoUMetric: no samples were evaluated')
        result = metrics_from_areas(totals[0], totals[1], totals[3], totals[2], self.iou_metrics,
                                    self.nan_to_num, self.beta)
        result['num_samples'] = count
        return result
