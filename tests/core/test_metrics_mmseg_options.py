"""IoUMetric's mmseg options: mDice, mFscore with beta, nan_to_num, output_dir/format_only; others rejected.

The expected numbers are worked by hand from mmseg 1.2.2's definitions
(``IoUMetric.total_area_to_metrics``): Dice = 2I/(P+L), Precision = I/P, Recall = I/L,
Fscore = (1+b^2)PR/(b^2 P + R), NaN per-class values replaced by ``nan_to_num`` before the
class means (``np.nanmean``).
"""
import types

import numpy as np
import pytest

from jseg.config import ConfigError
from jseg.evaluation.metrics import IoUMetric

# 3 classes; label 255 ignored. Kept pixels (label, pred): (0,0) (1,0) (1,1) (1,1) (1,2)
# -> intersect [1, 2, 0], pred [2, 2, 1], label [1, 4, 0]; class 2 is never labelled.
LABEL = np.array([[0, 1, 1], [1, 1, 255]])
PRED = np.array([[0, 0, 1], [1, 2, 2]])


def computed(**kwargs):
    metric = IoUMetric(num_classes=3, **kwargs)
    metric.process(PRED, LABEL)
    return metric.compute()


def test_dice_and_fscore_by_hand():
    out = computed(iou_metrics=['mIoU', 'mDice', 'mFscore'])
    assert out['aAcc'] == pytest.approx(3 / 5)
    assert out['mIoU'] == pytest.approx((0.5 + 0.5 + 0) / 3)
    np.testing.assert_allclose(out['Dice'], [2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(out['Precision'], [0.5, 1, 0])
    np.testing.assert_allclose(out['Recall'], [1, 0.5, np.nan])
    np.testing.assert_allclose(out['Fscore'], [2 / 3, 2 / 3, np.nan])
    assert out['mDice'] == pytest.approx(4 / 9)
    assert out['mFscore'] == pytest.approx(2 / 3)  # NaN left out of the mean
    assert out['mPrecision'] == pytest.approx(0.5) and out['mRecall'] == pytest.approx(0.75)


def test_beta_weights_recall():
    out = computed(iou_metrics=['mFscore'], beta=2)
    np.testing.assert_allclose(out['Fscore'][:2], [5 * 0.5 / (4 * 0.5 + 1), 5 * 0.5 / (4 + 0.5)])


def test_nan_to_num_changes_the_means():
    assert computed()['mAcc'] == pytest.approx(0.75)  # Acc = [1, 0.5, NaN]
    out = computed(iou_metrics=['mFscore'], nan_to_num=0)
    assert out['mAcc'] == pytest.approx(0.5)
    assert out['mRecall'] == pytest.approx(0.5) and out['mFscore'] == pytest.approx(4 / 9)
    assert not np.isnan(out['Acc']).any()


def test_metric_names_follow_iou_metrics():
    assert IoUMetric(iou_metrics='mDice').metric_names == ['aAcc', 'mIoU', 'mAcc', 'mDice']
    assert 'mFscore' not in IoUMetric().metric_names


@pytest.mark.parametrize('kwargs, match', [
    (dict(format_only=True), 'format_only=True needs output_dir'),
    (dict(iou_metrics=['mAP']), 'mAP'), (dict(collect_device='gpu'), 'collect_device'),
    (dict(prefix='val'), 'prefix'),
])
def test_unsupported_options_are_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        IoUMetric(**kwargs)


def test_output_dir_writes_test_server_pngs(tmp_path):
    import cv2
    pred = np.array([[0, 1], [2, 149]])
    metric = IoUMetric(num_classes=150, output_dir=str(tmp_path / 'out'), format_only=True)
    metric.save_prediction(pred, dict(img_path='/data/ADE_test_00000001.jpg', reduce_zero_label=True))
    metric.save_prediction(pred, dict(img_path='/data/plain.jpg', reduce_zero_label=False))
    metric.process(pred, pred)  # format_only: nothing is accumulated, no metrics
    assert metric.compute() == {} and metric.metric_names == []
    ade = cv2.imread(str(tmp_path / 'out' / 'ADE_test_00000001.png'), cv2.IMREAD_UNCHANGED)
    assert ade.dtype == np.uint8 and ade.tolist() == [[1, 2], [3, 150]]  # ADE20K's ids: 0 is "other"
    plain = cv2.imread(str(tmp_path / 'out' / 'plain.png'), cv2.IMREAD_UNCHANGED)
    assert plain.tolist() == pred.tolist()
    # without format_only the metrics are computed as well
    metric = IoUMetric(num_classes=150, output_dir=str(tmp_path / 'out2'))
    metric.process(pred, pred)
    assert metric.compute()['aAcc'] == 1.0


def _runner(tmp_path, save_best, iou_metrics):
    from jseg.config import Config
    from jseg.runner.runner import Runner
    cfg = Config(dict(save_best=save_best, val_evaluator=dict(type='IoUMetric', iou_metrics=iou_metrics)))
    return Runner(cfg, work_dir=str(tmp_path))


def test_save_best_must_name_a_computed_metric(tmp_path):
    loader = types.SimpleNamespace(dataset=types.SimpleNamespace(metainfo=dict(classes=('a', 'b'))))
    _runner(tmp_path, 'mDice', ['mIoU', 'mDice'])._check_save_best(loader)
    with pytest.raises(ConfigError, match="save_best='mDice'.*aAcc, mIoU, mAcc"):
        _runner(tmp_path, 'mDice', ['mIoU'])._check_save_best(loader)
    with pytest.raises(ConfigError, match="save_best='miou'"):
        _runner(tmp_path, 'miou', ['mIoU'])._check_save_best(loader)
