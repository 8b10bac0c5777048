"""SegDataPreProcessor: colour order, normalisation, padding in the normalised space, metas."""
import numpy as np
import pytest

from jseg.registry import MODELS

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def make_batch(rng, shapes, pad_to, with_gt=True):
    """A loader-style batch: BGR uint8 images zero-padded to ``pad_to``, labels padded with 255."""
    b = len(shapes)
    inputs = np.zeros((b, 3) + pad_to, dtype=np.uint8)
    gt = np.full((b,) + pad_to, 255, dtype=np.uint8)
    metas = []
    for i, (h, w) in enumerate(shapes):
        inputs[i, :, :h, :w] = rng.randint(0, 256, (3, h, w))
        gt[i, :h, :w] = rng.randint(0, 150, (h, w))
        metas.append(dict(ori_shape=(h + 3, w + 1), img_shape=(h, w), pad_shape=pad_to, scale_factor=(1.0, 1.0),
                          flip=False, flip_direction=None, img_path='x.jpg', seg_map_path='x.png',
                          reduce_zero_label=False))
    batch = dict(inputs=inputs, metas=metas)
    if with_gt:
        batch['gt_seg'] = gt
    return batch


def normalised(image_bgr):
    rgb = image_bgr[::-1].astype(np.float32)
    return (rgb - np.float32(MEAN)[:, None, None]) / np.float32(STD)[:, None, None]


def test_training_normalises_and_pads_in_normalised_space():
    rng = np.random.RandomState(0)
    pre = MODELS.build(dict(type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=True, pad_val=0,
                            seg_pad_val=255, size=(12, 16)))
    batch = make_batch(rng, [(10, 13), (7, 11)], pad_to=(10, 13))
    inputs, gt, metas = pre(batch, training=True)
    inputs, gt = inputs.numpy(), gt.numpy()
    assert inputs.shape == (2, 3, 12, 16) and inputs.dtype == np.float32
    assert gt.shape == (2, 12, 16) and gt.dtype == np.int32
    for i, (h, w) in enumerate([(10, 13), (7, 11)]):
        np.testing.assert_array_equal(inputs[i, :, :h, :w], normalised(batch['inputs'][i, :, :h, :w]))
        pad = np.ones((3, 12, 16), bool)
        pad[:, :h, :w] = False
        assert np.all(inputs[i][pad] == 0)              # loader zeros and new padding are exactly pad_val
        np.testing.assert_array_equal(gt[i, :h, :w], batch['gt_seg'][i, :h, :w])
        assert np.all(gt[i][pad[0]] == 255)
        assert metas[i]['pad_shape'] == (12, 16) and metas[i]['img_shape'] == (h, w)
        assert metas[i]['padding_size'] == (0, 16 - w, 0, 12 - h)
    assert batch['metas'][0]['pad_shape'] == (10, 13)    # the caller's metas are not modified


def test_size_divisor_custom_pad_values_and_rgb_inputs():
    rng = np.random.RandomState(1)
    pre = MODELS.build(dict(type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=False, pad_val=-1.5,
                            seg_pad_val=7, size_divisor=8))
    batch = make_batch(rng, [(9, 10)], pad_to=(9, 10))
    inputs, gt, metas = pre(batch, training=True)
    inputs, gt = inputs.numpy(), gt.numpy()
    assert inputs.shape == (1, 3, 16, 16)
    rgb = batch['inputs'][0].astype(np.float32)            # no channel flip
    expected = (rgb - np.float32(MEAN)[:, None, None]) / np.float32(STD)[:, None, None]
    np.testing.assert_array_equal(inputs[0, :, :9, :10], expected)
    assert np.all(inputs[0, :, 9:] == -1.5) and np.all(inputs[0, :, :, 10:] == -1.5)
    assert np.all(gt[0, 9:] == 7) and np.all(gt[0, :, 10:] == 7)


def test_test_time_padding_and_metas():
    rng = np.random.RandomState(2)
    batch = make_batch(rng, [(9, 10)], pad_to=(9, 10))
    batch['gt_seg'] = rng.randint(0, 150, (1, 12, 11)).astype(np.uint8)   # original size at validation
    plain = MODELS.build(dict(type='SegDataPreProcessor', mean=MEAN, std=STD, size=(32, 32)))
    inputs, gt, metas = plain(batch, training=False)
    assert inputs.shape == (1, 3, 9, 10)                                   # no padding at test time
    np.testing.assert_array_equal(gt.numpy(), batch['gt_seg'])
    assert metas[0]['img_padding_size'] == (0, 0, 0, 0) and metas[0]['padding_size'] == (0, 0, 0, 0)
    padded = MODELS.build(dict(type='SegDataPreProcessor', mean=MEAN, std=STD, test_cfg=dict(size_divisor=4)))
    inputs, gt, metas = padded(batch, training=False)
    inputs = inputs.numpy()
    assert inputs.shape == (1, 3, 12, 12)
    np.testing.assert_array_equal(inputs[0, :, :9, :10], normalised(batch['inputs'][0]))
    assert np.all(inputs[0, :, 9:] == 0) and np.all(inputs[0, :, :, 10:] == 0)
    assert metas[0]['img_padding_size'] == (0, 2, 0, 3) and metas[0]['pad_shape'] == (12, 12)
    assert gt.shape == (1, 12, 11)
    _, gt, _ = padded(make_batch(rng, [(4, 4)], (4, 4), with_gt=False), training=False)
    assert gt is None


def test_invalid_arguments():
    with pytest.raises(ValueError):
        MODELS.build(dict(type='SegDataPreProcessor', mean=MEAN))
    with pytest.raises(ValueError):
        MODELS.build(dict(type='SegDataPreProcessor', bgr_to_rgb=True, rgb_to_bgr=True))
