"""IoU metrics against hand-computed confusion matrices."""
import numpy as np
import pytest

from jseg.evaluation import IoUMetric, format_metrics_table, mean_iou


def test_hand_computed_case_with_ignore_and_absent_class():
    # classes 0..3; class 3 appears nowhere -> NaN IoU and Acc, left out of the means
    label = np.array([[0, 0, 1, 1],
                      [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [2, 2, 3, 0]])  # the pixel under 255 is ignored whatever it predicts
    out = mean_iou(pred, label, num_classes=4)
    # confusion (label rows, pred cols) over the 7 valid pixels:
    # label0: pred0 x1, pred1 x1; label1: pred1 x2, pred0 x1; label2: pred2 x2
    iou = np.array([1 / (2 + 2 - 1), 2 / (3 + 3 - 2), 2 / 2, np.nan])
    acc = np.array([1 / 2, 2 / 3, 2 / 2, np.nan])
    np.testing.assert_allclose(out['IoU'], iou)
    np.testing.assert_allclose(out['Acc'], acc)
    assert out['aAcc'] == pytest.approx(5 / 7)
    assert out['mIoU'] == pytest.approx(np.nanmean(iou))
    assert out['mAcc'] == pytest.approx(np.nanmean(acc))


def test_areas_accumulate_over_the_split_not_per_image():
    l1, p1 = np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 1]])
    l2, p2 = np.array([[1]]), np.array([[1]])
    out = mean_iou([p1, p2], [l1, l2], num_classes=2)
    # class0: I=3, U=4; class1: I=1, U=2 (one false positive in image 1)
    np.testing.assert_allclose(out['IoU'], [3 / 4, 1 / 2])
    assert out['aAcc'] == pytest.approx(4 / 5)


def test_predicted_but_absent_class_scores_zero_iou_and_nan_acc():
    out = mean_iou(np.array([[1, 1]]), np.array([[0, 0]]), num_classes=2)
    assert out['IoU'][1] == 0 and np.isnan(out['Acc'][1])
    assert out['mIoU'] == pytest.approx(0.0)


def test_reduce_zero_label():
    label = np.array([[0, 1, 2]])  # 0 -> ignored, 1 -> 0, 2 -> 1
    out = mean_iou(np.array([[5, 0, 0]]), label, num_classes=2, reduce_zero_label=True)
    np.testing.assert_allclose(out['IoU'], [1 / 2, 0.0])


def test_bad_labels_and_shapes_raise():
    with pytest.raises(ValueError, match='outside'):
        mean_iou(np.zeros((2, 2), int), np.full((2, 2), 7), num_classes=3)
    with pytest.raises(ValueError, match='shape'):
        mean_iou(np.zeros((2, 2), int), np.zeros((2, 3), int), num_classes=3)


def test_iou_metric_class_and_table():
    metric = IoUMetric(num_classes=2)
    metric.process(np.array([[0, 1]]), np.array([[0, 0]]))
    metric.process(np.array([[1]]), np.array([[1]]))
    out = metric.compute()
    assert out['num_samples'] == 2
    np.testing.assert_allclose(out['IoU'], [1 / 2, 1 / 2])
    table = format_metrics_table(out, ['road', 'sky'])
    assert '| road' in table and '50.00' in table and 'mIoU: 50.00' in table


def test_repeated_sample_index_counts_once():
    # under MPI a rank may get a sample another rank also evaluates; its index dedupes it
    metric = IoUMetric(num_classes=2)
    metric.process(np.array([[0, 1]]), np.array([[0, 0]]), sample_idx=0)
    metric.process(np.array([[0, 1]]), np.array([[0, 0]]), sample_idx=0)
    metric.process(np.array([[1]]), np.array([[1]]), sample_idx=1)
    out = metric.compute()
    assert out['num_samples'] == 2
    np.testing.assert_allclose(out['IoU'], [1 / 2, 1 / 2])
