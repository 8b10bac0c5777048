"""Hungarian matching of Mask2Former: match costs, SciPy's assignment solver, and a batched assigner.

* :func:`linear_sum_assignment` solves the rectangular assignment problem with
  the shortest-augmenting-path algorithm of Crouse (2016) exactly as SciPy's
  ``scipy.optimize.linear_sum_assignment`` implements it (same tie rules, same
  transpose of tall matrices), so that it returns SciPy's (rows, cols) for
  the same costs, without depending on SciPy.
* The match costs are mmdet's ``ClassificationCost``, ``CrossEntropyLossCost``
  (sigmoid) and ``DiceCost`` on point samples of the masks.
* :class:`HungarianAssigner` computes the cost matrices of all predictions
  (decoder outputs x images) in one Jittor graph, fetches them with one sync
  and solves each on the CPU. mmdet's per-output loop would need one sync per
  matrix.
"""
import jittor as jt
import numpy as np

__all__ = ['ClassificationCost', 'CrossEntropyLossCost', 'DiceCost', 'HungarianAssigner', 'build_mask_assigner',
           'linear_sum_assignment']


# ---------------------------------------------------------------------------------------------- solver

def _shortest_augmenting_path(cost, u, v, path, row4col, cur_row):
    """One augmentation from ``cur_row`` (Crouse's pseudocode as SciPy runs it).

    ``remaining`` starts in reverse column order and loses its picked entry by
    a swap with the last one; among the columns of least reduced cost the
    search takes the first one met, unless a later tied column is unassigned,
    then the last unassigned one (SciPy: "strictly lower, or equal and column
    unassigned"). Returns (sink, min_val, shortest path costs, SR, SC).
    """
    num_rows, num_cols = cost.shape
    remaining = np.arange(num_cols - 1, -1, -1)
    num_remaining = num_cols
    shortest = np.full(num_cols, np.inf)
    visited_rows = np.zeros(num_rows, bool)
    visited_cols = np.zeros(num_cols, bool)
    min_val, i, sink = 0.0, cur_row, -1
    while sink == -1:
        visited_rows[i] = True
        cols = remaining[:num_remaining]
        reduced = min_val + cost[i, cols] - u[i] - v[cols]          # same operation order as SciPy
        better = reduced < shortest[cols]
        path[cols[better]] = i
        shortest[cols[better]] = reduced[better]
        values = shortest[cols]
        lowest = values.min()
        if lowest == np.inf:
            raise ValueError('cost matrix is infeasible')
        ties = np.flatnonzero(values == lowest)
        free = ties[row4col[cols[ties]] == -1]
        index = free[-1] if len(free) else ties[0]
        j = cols[index]
        min_val = lowest
        if row4col[j] == -1:
            sink = j
        else:
            i = row4col[j]
        visited_cols[j] = True
        num_remaining -= 1
        remaining[index] = remaining[num_remaining]
    return sink, min_val, shortest, visited_rows, visited_cols


def linear_sum_assignment(cost):
    """Minimum-cost assignment, identical to ``scipy.optimize.linear_sum_assignment(cost)``.

    Args:
        cost (array-like): (R, C) costs, converted to float64; NaN and -inf
            are rejected, +inf marks forbidden pairs.

    Returns:
        tuple[np.ndarray, np.ndarray]: int64 ``rows`` (ascending) and ``cols``,
        min(R, C) pairs each.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f'expected a matrix (2-D array), got a {cost.ndim}-D array')
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    transpose = cost.shape[1] < cost.shape[0]                     # SciPy solves tall matrices transposed
    if transpose:
        cost = cost.T
    cost = np.ascontiguousarray(cost)
    if np.isnan(cost).any() or (cost == -np.inf).any():
        raise ValueError('matrix contains invalid numeric entries')
    num_rows, num_cols = cost.shape
    u, v = np.zeros(num_rows), np.zeros(num_cols)
    path = np.full(num_cols, -1, np.int64)
    col4row = np.full(num_rows, -1, np.int64)
    row4col = np.full(num_cols, -1, np.int64)
    for cur_row in range(num_rows):
        sink, min_val, shortest, visited_rows, visited_cols = _shortest_augmenting_path(
            cost, u, v, path, row4col, cur_row)
        # dual update
        u[cur_row] += min_val
        others = np.flatnonzero(visited_rows)
        others = others[others != cur_row]
        u[others] += min_val - shortest[col4row[others]]
        v[visited_cols] -= min_val - shortest[visited_cols]
        # augment along the path back to cur_row
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == cur_row:
                break
    if transpose:
        order = np.argsort(col4row, kind='stable')
        return col4row[order], order.astype(np.int64)
    return np.arange(num_rows, dtype=np.int64), col4row


# ---------------------------------------------------------------------------------------------- costs

class ClassificationCost:
    """mmdet's ClassificationCost: ``-softmax(cls)[:, gt_label] * weight``.

    ``__call__(cls_scores (n, Q, K+1) logits, gt_labels (n, k) int Var, ...)`` -> (n, Q, k).
    """

    def __init__(self, weight=1.0):
        self.weight = weight

    def __call__(self, cls_scores, mask_points, gt_labels, gt_points):
        probs = _softmax(cls_scores)                                    # (n, Q, K+1)
        n, q = probs.shape[:2]
        k = gt_labels.shape[1]
        picked = probs.reindex([n, q, k], ['i0', 'i1', '@e0(i0,i2)'], extras=[gt_labels])  # (n, Q, k)
        return -picked * self.weight


class CrossEntropyLossCost:
    """mmdet's CrossEntropyLossCost (sigmoid): mean over points of the BCE of each (query, gt) pair.

    ``(BCE(x, 1) @ t^T + BCE(x, 0) @ (1 - t)^T) / P * weight`` on mask logits
    x (n, Q, P) and binary (or soft) targets t (n, k, P) -> (n, Q, k).
    """

    def __init__(self, use_sigmoid=True, weight=1.0):
        if not use_sigmoid:
            raise NotImplementedError('CrossEntropyLossCost: only use_sigmoid=True is supported (as mmdet)')
        self.weight = weight

    def __call__(self, cls_scores, mask_points, gt_labels, gt_points):
        num_points = mask_points.shape[2]
        max_val = (-mask_points).maximum(0)
        pos = max_val + ((-max_val).exp() + (-mask_points - max_val).exp()).log()   # BCE(x, 1) = softplus(-x)
        neg = mask_points + pos                                                     # BCE(x, 0) = softplus(x)
        targets = gt_points.transpose(0, 2, 1)                                      # (n, P, k)
        cost = jt.matmul(pos, targets) + jt.matmul(neg, 1 - targets)
        return cost / num_points * self.weight


class DiceCost:
    """mmdet's DiceCost: ``1 - (2 p.t + eps) / (sum p + sum t + eps)`` per (query, gt) pair.

    ``pred_act`` applies a sigmoid to the mask logits first; ``naive_dice=False``
    squares the sums' terms (K-Net/SOLO form). (n, Q, P) x (n, k, P) -> (n, Q, k).
    """

    def __init__(self, pred_act=False, eps=1e-3, naive_dice=True, weight=1.0):
        self.pred_act = pred_act
        self.eps = eps
        self.naive_dice = naive_dice
        self.weight = weight

    def __call__(self, cls_scores, mask_points, gt_labels, gt_points):
        preds = mask_points.sigmoid() if self.pred_act else mask_points
        numerator = 2 * jt.matmul(preds, gt_points.transpose(0, 2, 1))             # (n, Q, k)
        if self.naive_dice:
            denominator = preds.sum(-1).unsqueeze(2) + gt_points.sum(-1).unsqueeze(1)
        else:
            denominator = (preds * preds).sum(-1).unsqueeze(2) + (gt_points * gt_points).sum(-1).unsqueeze(1)
        return (1 - (numerator + self.eps) / (denominator + self.eps)) * self.weight


def _softmax(x):
    """Softmax over the last dim with the max subtracted."""
    e = (x - x.max(-1, keepdims=True)).exp()
    return e / e.sum(-1, keepdims=True)


MATCH_COSTS = {'ClassificationCost': ClassificationCost, 'CrossEntropyLossCost': CrossEntropyLossCost,
               'DiceCost': DiceCost}

#: the official Mask2Former matcher (mmseg's mask2former configs)
DEFAULT_MATCH_COSTS = (dict(type='ClassificationCost', weight=2.0),
                       dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                       dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0))


def _build_cost(cfg):
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    name = name[len('mmdet.'):] if isinstance(name, str) and name.startswith('mmdet.') else name
    if name not in MATCH_COSTS:
        raise ValueError(f'unknown match cost type {name!r}; supported: {sorted(MATCH_COSTS)}')
    try:
        return MATCH_COSTS[name](**cfg)
    except TypeError as e:
        raise ValueError(f'match cost {name}: {e}') from None


# ---------------------------------------------------------------------------------------------- assigner

def _stack(vars_):
    return jt.stack(vars_, dim=0) if len(vars_) > 1 else vars_[0].unsqueeze(0)


class HungarianAssigner:
    """mmdet's HungarianAssigner for mask predictions, batched over predictions.

    Args:
        match_costs (list[dict] | dict): cost configs, summed in order
            (types ``ClassificationCost``, ``CrossEntropyLossCost``,
            ``DiceCost``, with or without the ``mmdet.`` scope).
    """

    def __init__(self, match_costs=DEFAULT_MATCH_COSTS):
        if isinstance(match_costs, dict):
            match_costs = [match_costs]
        if not match_costs:
            raise ValueError('HungarianAssigner: match_costs must not be empty')
        self.match_costs = [_build_cost(c) for c in match_costs]

    def cost_matrices(self, cls_scores, mask_points, gt_labels, gt_points):
        """The (Q, k_j) cost matrix of every prediction j as lazy Vars (None where k_j = 0).

        Args:
            cls_scores (list[jt.Var]): (Q, K+1) class logits per prediction.
            mask_points (list[jt.Var]): (Q, P) mask logits at the matching points.
            gt_labels (list[array-like]): (k_j,) GT classes.
            gt_points (list[jt.Var | None]): (k_j, P) GT masks at the same points.

        Predictions with the same k are stacked and costed together.
        """
        if not len(cls_scores) == len(mask_points) == len(gt_labels) == len(gt_points):
            raise ValueError('cost_matrices: cls_scores, mask_points, gt_labels and gt_points differ in length')
        groups = {}
        for j, labels in enumerate(gt_labels):
            k = len(labels)
            if k:
                groups.setdefault(k, []).append(j)
        costs = [None] * len(gt_labels)
        for k, members in groups.items():
            cls = _stack([cls_scores[j].detach().float32() for j in members])            # (n, Q, K+1)
            preds = _stack([mask_points[j].detach().float32() for j in members])         # (n, Q, P)
            gts = _stack([gt_points[j].detach().float32() for j in members])             # (n, k, P)
            labels = jt.array(np.stack([np.asarray(gt_labels[j], np.int32) for j in members]))  # (n, k)
            total = None
            for cost in self.match_costs:
                term = cost(cls, preds, labels, gts)
                total = term if total is None else total + term                           # (n, Q, k)
            for row, j in enumerate(members):
                costs[j] = total[row]
        return costs

    def assign_batch(self, cls_scores, mask_points, gt_labels, gt_points):
        """Match every prediction; one device sync for all cost matrices.

        Arguments as :meth:`cost_matrices`. Returns a list of (rows, cols)
        int64 arrays per prediction: query ``rows[m]`` matches GT ``cols[m]``
        (rows ascending; empty when the image has no GT).
        """
        costs = self.cost_matrices(cls_scores, mask_points, gt_labels, gt_points)
        present = [c for c in costs if c is not None]
        flat = None
        if present:
            joined = jt.concat([c.reshape(-1) for c in present]) if len(present) > 1 else present[0].reshape(-1)
            flat = joined.numpy()                                                          # the one sync
        results, offset = [], 0
        for c in costs:
            if c is None:
                results.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
                continue
            q, k = c.shape
            results.append(linear_sum_assignment(flat[offset:offset + q * k].reshape(q, k)))
            offset += q * k
        return results


def build_mask_assigner(cfg=None):
    """A :class:`HungarianAssigner` from ``train_cfg.assigner`` (None: the official matcher)."""
    if cfg is None:
        return HungarianAssigner()
    cfg = dict(cfg)
    name = cfg.pop('type', 'HungarianAssigner')
    if name not in ('HungarianAssigner', 'mmdet.HungarianAssigner'):
        raise ValueError(f'Mask2Former supports assigner HungarianAssigner only, got {name!r}')
    return HungarianAssigner(**cfg)
