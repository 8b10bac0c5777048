"""Ideal class representation mining (OffSeg paper, Sec. 3.2, Eq. 2 and Fig. 3).

For one image with decode-head pixel features E (N x C, one row per pixel) and
ground-truth one-hot masks M (K x N), the class representations that would
reproduce the masks best are::

    W* = M (E^T)^+                     (K x C, Moore-Penrose pseudo-inverse)

computed here as the minimum-norm least-squares solution of ``E W^T = M^T``
(``numpy.linalg.lstsq``, float64; the same matrix as ``M @ pinv(E.T)``). The
reconstruction ``argmax_k (W* E^T)`` shows how much of the labelling a
per-image linear classifier could recover from the features (the paper reports
about 95% mIoU on ADE20K); the cosine similarity of one class's rows of W*
across images shows how far those ideal classifiers are from one shared,
fixed class representation.

:class:`IdealReprAnalysis` accumulates both over a split; the functions are
the per-image steps. Model-specific work (which features) lives in
:mod:`jseg.analysis.features`.
"""
import numpy as np

from jseg.evaluation import intersect_and_union, metrics_from_areas

__all__ = ['IdealReprAnalysis', 'cosine_similarity_matrix', 'ideal_class_representations',
           'labels_at_feature_resolution', 'mean_off_diagonal', 'one_hot_masks', 'reconstruct',
           'reconstruct_labels']


def one_hot_masks(labels, num_classes, ignore_index=255):
    """One-hot masks of the labelled pixels.

    Args:
        labels (np.ndarray): (N,) class indices (any shape; flattened).
        num_classes (int): K.
        ignore_index (int): pixels with this label are dropped.

    Returns:
        tuple[np.ndarray, np.ndarray]: M (K, N') float64 with N' labelled
        pixels, and the boolean (N,) mask of the pixels kept.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    keep = labels != ignore_index
    kept = labels[keep]
    if kept.size and (kept.min() < 0 or kept.max() >= num_classes):
        bad = np.unique(kept[(kept < 0) | (kept >= num_classes)])[:5]
        raise ValueError(f'label values {bad.tolist()} are outside [0, {num_classes}) and not '
                         f'ignore_index={ignore_index}')
    masks = np.zeros((num_classes, kept.size), dtype=np.float64)
    masks[kept, np.arange(kept.size)] = 1.0
    return masks, keep


def ideal_class_representations(features, masks, rcond=None):
    """W* = M (E^T)^+ for features E (N, C) and masks M (K, N); returns (K, C) float64.

    ``(E^T)^+ = (E^+)^T``, so ``W*^T = E^+ M^T`` is the minimum-norm
    least-squares solution of ``E X = M^T``. With E of full column rank (N >= C)
    it is the unique least-squares fit; with fewer pixels than channels (or
    rank-deficient features) the fit is exact where possible and of minimum norm.
    ``rcond`` is passed to ``numpy.linalg.lstsq`` (None: machine precision
    times max(N, C)).
    """
    features = np.asarray(features, dtype=np.float64)
    masks = np.asarray(masks, dtype=np.float64)
    if features.ndim != 2 or masks.ndim != 2 or features.shape[0] != masks.shape[1]:
        raise ValueError(f'features must be (N, C) and masks (K, N); got {features.shape} and {masks.shape}')
    solution, _, _, _ = np.linalg.lstsq(features, masks.T, rcond=rcond)
    return solution.T


def reconstruct(representations, features):
    """Mask scores W E^T: (K, C) representations and (N, C) features -> (K, N)."""
    return np.asarray(representations, dtype=np.float64) @ np.asarray(features, dtype=np.float64).T


def reconstruct_labels(representations, features):
    """argmax over classes of W E^T: the (N,) labels the representations reconstruct."""
    return reconstruct(representations, features).argmax(axis=0)


def cosine_similarity_matrix(vectors, eps=1e-12):
    """Pairwise cosine similarities of the rows of ``vectors`` (n, C) -> (n, n) float64.

    Symmetric, with a unit diagonal for every non-zero row; a zero row (a norm
    below ``eps``) has similarity 0 with everything, itself included.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f'vectors must be (n, C), got shape {vectors.shape}')
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > eps)
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    sim = (sim + sim.T) / 2  # exactly symmetric despite rounding
    nonzero = norms > eps
    sim[np.diag_indices_from(sim)] = nonzero.astype(np.float64)
    return sim


def mean_off_diagonal(matrix):
    """Mean of the off-diagonal entries of a square matrix (NaN for 1 x 1)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if n < 2:
        return float('nan')
    return float((matrix.sum() - np.trace(matrix)) / (n * n - n))


def labels_at_feature_resolution(label, img_shape, pad_shape, feat_shape, ignore_index=255):
    """Ground truth at the resolution of a feature map, by nearest-neighbour sampling.

    The features cover the model input: the image resized to ``img_shape``
    (H_r, W_r) and padded at the bottom/right to ``pad_shape``. The label map is
    at the original image size. Feature pixel (i, j) takes the label under its
    centre, ``((i + 0.5) * H_pad / h, (j + 0.5) * W_pad / w)`` in input
    coordinates mapped back to the original image; centres in the padding get
    ``ignore_index``.

    Args:
        label (np.ndarray): (H_ori, W_ori) ground truth.
        img_shape, pad_shape (tuple[int, int]): resized and padded input size.
        feat_shape (tuple[int, int]): (h, w) of the features.

    Returns:
        np.ndarray: (h, w) int64 labels.
    """
    label = np.asarray(label)
    h_ori, w_ori = label.shape[:2]
    h_img, w_img = (int(v) for v in tuple(img_shape)[:2])
    h_pad, w_pad = (int(v) for v in tuple(pad_shape)[:2])
    h, w = (int(v) for v in tuple(feat_shape)[:2])
    ys = (np.arange(h) + 0.5) * h_pad / h              # centres in input pixels
    xs = (np.arange(w) + 0.5) * w_pad / w
    rows = np.minimum((ys * h_ori / h_img).astype(np.int64), h_ori - 1)
    cols = np.minimum((xs * w_ori / w_img).astype(np.int64), w_ori - 1)
    out = label[rows[:, None], cols[None, :]].astype(np.int64)
    out[ys >= h_img, :] = ignore_index
    out[:, xs >= w_img] = ignore_index
    return out


class IdealReprAnalysis:
    """Ideal class representations over a split: reconstruction metrics and per-class W* rows.

    Args:
        num_classes (int): K.
        ignore_index (int): label without a mask.
        images_per_class (int): W* rows kept per class (from the first images
            that contain it) for :meth:`similarity`.

    Call :meth:`add` once per image, then :meth:`metrics`,
    :meth:`frequent_classes` and :meth:`similarity`.
    """

    def __init__(self, num_classes, ignore_index=255, images_per_class=10):
        if images_per_class < 1:
            raise ValueError(f'images_per_class must be at least 1, got {images_per_class}')
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.images_per_class = int(images_per_class)
        self.areas = np.zeros((4, self.num_classes), dtype=np.int64)
        self.image_counts = np.zeros(self.num_classes, dtype=np.int64)   # images containing each class
        self.pixel_counts = np.zeros(self.num_classes, dtype=np.int64)   # labelled pixels per class
        self.rows = {k: [] for k in range(self.num_classes)}             # class -> [(image_id, W*[k])]
        self.num_images = 0

    def add(self, features, labels, image_id=None):
        """Analyse one image.

        Args:
            features (np.ndarray): E, (N, C) pixel features.
            labels (np.ndarray): (N,) labels of those pixels (``ignore_index`` allowed).
            image_id: names the image in :meth:`similarity` (default: its order).

        Returns:
            dict: ``representations`` W* (K, C), ``pred`` and ``labels`` of the
            labelled pixels, ``present`` classes.
        """
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels).reshape(-1)
        if features.ndim != 2 or features.shape[0] != labels.size:
            raise ValueError(f'features must be (N, C) for N = {labels.size} labels, got {features.shape}')
        image_id = self.num_images if image_id is None else image_id
        masks, keep = one_hot_masks(labels, self.num_classes, self.ignore_index)
        self.num_images += 1
        if not keep.any():
            return dict(representations=None, pred=np.zeros(0, np.int64), labels=np.zeros(0, np.int64),
                        present=np.zeros(0, np.int64))
        kept_features, kept_labels = features[keep], labels[keep].astype(np.int64)
        representations = ideal_class_representations(kept_features, masks)
        pred = reconstruct_labels(representations, kept_features)
        self.areas += np.stack(intersect_and_union(pred, kept_labels, self.num_classes, self.ignore_index))
        counts = np.bincount(kept_labels, minlength=self.num_classes)
        present = np.flatnonzero(counts)
        self.image_counts[present] += 1
        self.pixel_counts += counts
        for k in present:
            if len(self.rows[k]) < self.images_per_class:
                self.rows[k].append((image_id, representations[k].copy()))
        return dict(representations=representations, pred=pred, labels=kept_labels, present=present)

    def metrics(self):
        """Reconstruction ``aAcc``, ``mIoU``, ``mAcc`` and per-class ``IoU``/``Acc`` (fractions), as
        :func:`jseg.evaluation.mean_iou` computes them over the split, plus ``num_images``."""
        result = metrics_from_areas(self.areas[0], self.areas[1], self.areas[3])
        result['num_images'] = self.num_images
        return result

    def frequent_classes(self, count=6, min_images=2):
        """Up to ``count`` classes in at least ``min_images`` images, most images first (then pixels)."""
        order = sorted(range(self.num_classes), key=lambda k: (-self.image_counts[k], -self.pixel_counts[k], k))
        return [k for k in order if self.image_counts[k] >= min_images][:count]

    def similarity(self, cls):
        """(image ids, (n, n) cosine similarity of class ``cls``'s W* rows across those images)."""
        rows = self.rows[int(cls)]
        if not rows:
            return [], np.zeros((0, 0))
        ids = [image_id for image_id, _ in rows]
        return ids, cosine_similarity_matrix(np.stack([row for _, row in rows]))
