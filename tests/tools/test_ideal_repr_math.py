"""The math of ideal class representation mining (jseg.analysis.ideal_repr), on synthetic features."""
import numpy as np
import pytest

from jseg.analysis import (IdealReprAnalysis, cosine_similarity_matrix, ideal_class_representations,
                           labels_at_feature_resolution, mean_off_diagonal, one_hot_masks, reconstruct,
                           reconstruct_labels)
from jseg.evaluation import mean_iou


def _labels(rng, n, k):
    labels = rng.randint(0, k, size=n)
    labels[:k] = np.arange(k)  # every class present
    return labels


@pytest.mark.parametrize('n,c', [(12, 12), (9, 16)])  # square invertible E; more channels than pixels
def test_exact_reconstruction_when_e_transpose_has_full_column_rank(n, c):
    rng = np.random.RandomState(0)
    features = rng.randn(n, c)
    assert np.linalg.matrix_rank(features) == n
    labels = _labels(rng, n, 4)
    masks, keep = one_hot_masks(labels, 4)
    assert keep.all() and masks.shape == (4, n)
    w = ideal_class_representations(features, masks)
    assert w.shape == (4, c)
    np.testing.assert_allclose(reconstruct(w, features), masks, atol=1e-10)   # W* E^T == M
    pred = reconstruct_labels(w, features)
    np.testing.assert_array_equal(pred, labels)
    assert mean_iou(pred, labels, num_classes=4)['mIoU'] == 1.0
    if n == c:
        np.testing.assert_allclose(w, masks @ np.linalg.inv(features.T), atol=1e-10)


def test_overdetermined_full_column_rank_is_the_least_squares_fit():
    rng = np.random.RandomState(1)
    features = rng.randn(60, 6)
    masks, _ = one_hot_masks(_labels(rng, 60, 3), 3)
    w = ideal_class_representations(features, masks)
    # normal equations: the residual is orthogonal to every feature channel
    np.testing.assert_allclose((masks - w @ features.T) @ features, 0, atol=1e-10)
    np.testing.assert_allclose(w, masks @ features @ np.linalg.inv(features.T @ features), atol=1e-10)


def test_rank_deficient_features_give_the_minimum_norm_solution():
    rng = np.random.RandomState(2)
    features = rng.randn(40, 3) @ rng.randn(3, 7)           # (N=40, C=7), rank 3
    assert np.linalg.matrix_rank(features) == 3
    masks, _ = one_hot_masks(_labels(rng, 40, 5), 5)
    w = ideal_class_representations(features, masks)
    # independent expectation: M (E^T)^+ with the pseudo-inverse built from an SVD of E^T
    u, s, vt = np.linalg.svd(features.T, full_matrices=False)
    rank = int((s > s[0] * 1e-10).sum())
    pinv_et = vt[:rank].T @ np.diag(1 / s[:rank]) @ u[:, :rank].T
    np.testing.assert_allclose(w, masks @ pinv_et, atol=1e-9)
    np.testing.assert_allclose(w, masks @ np.linalg.pinv(features.T), atol=1e-9)
    # least squares (normal equations) and minimum norm (rows in the row space of E)
    np.testing.assert_allclose((masks - w @ features.T) @ features, 0, atol=1e-9)
    row_space = np.linalg.pinv(features) @ features                 # projector onto E's row space
    np.testing.assert_allclose(w @ row_space, w, atol=1e-9)
    # the same problem through lstsq directly
    direct, *_ = np.linalg.lstsq(features, masks.T, rcond=None)
    np.testing.assert_allclose(w, direct.T, atol=1e-12)


def test_one_hot_masks_drop_ignored_pixels_and_reject_bad_labels():
    masks, keep = one_hot_masks(np.array([[0, 255], [2, 1]]), 3)
    np.testing.assert_array_equal(keep, [True, False, True, True])
    np.testing.assert_array_equal(masks, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    with pytest.raises(ValueError, match='outside'):
        one_hot_masks(np.array([0, 3]), 3)


def test_cosine_similarity_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.RandomState(3)
    vectors = rng.randn(6, 20) * rng.uniform(0.01, 100, size=(6, 1))   # very different norms
    sim = cosine_similarity_matrix(vectors)
    assert sim.shape == (6, 6)
    np.testing.assert_array_equal(sim, sim.T)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-12)
    assert np.all(np.abs(sim) <= 1.0)
    a, b = vectors[0], vectors[1]
    assert sim[0, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    # scale-invariant, and -1 / 0 for opposite / orthogonal vectors
    np.testing.assert_allclose(cosine_similarity_matrix(vectors * 7.0), sim, atol=1e-12)
    np.testing.assert_allclose(cosine_similarity_matrix(np.array([[1.0, 0], [-2.0, 0], [0, 3.0]])),
                               [[1, -1, 0], [-1, 1, 0], [0, 0, 1]], atol=1e-12)
    # a zero vector is similar to nothing
    np.testing.assert_array_equal(cosine_similarity_matrix(np.array([[0.0, 0.0], [1.0, 1.0]])), [[0, 0], [0, 1]])
    assert mean_off_diagonal(np.array([[1.0, 0.2], [0.4, 1.0]])) == pytest.approx(0.3)
    assert np.isnan(mean_off_diagonal(np.ones((1, 1))))


def test_labels_at_feature_resolution_samples_centres_and_ignores_padding():
    label = np.arange(8)[:, None] * 100 + np.arange(12)[None, :]       # (8, 12) original
    # resized x2 to 16x24, padded to 32x32, features at stride 4: (8, 8)
    out = labels_at_feature_resolution(label, (16, 24), (32, 32), (8, 8), ignore_index=255)
    assert out.shape == (8, 8)
    # feature (i, j): centre (4i + 2, 4j + 2) in the input -> (2i + 1, 2j + 1) in the original
    for i in range(4):
        for j in range(6):
            assert out[i, j] == (2 * i + 1) * 100 + (2 * j + 1)
    assert (out[4:, :] == 255).all() and (out[:, 6:] == 255).all()
    # same resolution, no padding: identity
    np.testing.assert_array_equal(labels_at_feature_resolution(label, (8, 12), (8, 12), (8, 12)), label)


def test_analysis_accumulates_metrics_and_per_class_rows():
    rng = np.random.RandomState(4)
    analysis = IdealReprAnalysis(num_classes=4, ignore_index=255, images_per_class=2)
    labels_a = np.array([0, 0, 1, 1, 2, 255])
    labels_b = np.array([0, 1, 1, 0, 0, 0])
    labels_c = np.array([0, 3, 0, 0, 0, 0])
    for image_id, labels in zip(['a', 'b', 'c'], [labels_a, labels_b, labels_c]):
        out = analysis.add(rng.randn(6, 8), labels, image_id=image_id)   # 6 pixels < 8 channels: exact
        np.testing.assert_array_equal(out['pred'], labels[labels != 255])
    metrics = analysis.metrics()
    assert metrics['num_images'] == 3 and metrics['mIoU'] == 1.0 and metrics['aAcc'] == 1.0
    np.testing.assert_array_equal(analysis.image_counts, [3, 2, 1, 1])
    np.testing.assert_array_equal(analysis.pixel_counts, [11, 4, 1, 1])
    assert analysis.frequent_classes(count=6) == [0, 1]          # classes in at least two images
    assert analysis.frequent_classes(count=1, min_images=1) == [0]
    ids, sim = analysis.similarity(0)
    assert ids == ['a', 'b'] and sim.shape == (2, 2)              # capped at images_per_class
    np.testing.assert_allclose(np.diag(sim), 1.0)
    assert analysis.similarity(3)[0] == ['c']
    assert analysis.similarity(2)[0] == ['a']


def test_analysis_counts_classes_it_cannot_reconstruct():
    """Identical features for two classes: one of them is lost, as mean_iou scores it."""
    analysis = IdealReprAnalysis(num_classes=2)
    features = np.ones((4, 3))
    labels = np.array([0, 0, 1, 1])
    out = analysis.add(features, labels)
    metrics = analysis.metrics()
    expected = mean_iou(out['pred'], labels, num_classes=2)
    assert metrics['mIoU'] == pytest.approx(expected['mIoU']) and metrics['mIoU'] < 1.0
