"""Transforms against closed-form expectations (mmcv 2.x / mmseg 1.x rules written out by hand)."""
import cv2
import numpy as np
import pytest

from jseg.datasets.transforms import (Compose, LoadAnnotations, LoadImageFromFile, Normalize, PackSegInputs,
                                      Pad, PhotoMetricDistortion, RandomCrop, RandomFlip, RandomResize, Resize,
                                      ResizeToMultiple)
from jseg.datasets.transforms import TestTimeAug as TTA
from jseg.datasets.transforms import RandomChoiceResize, ResizeShortestEdge
from jseg.registry import TRANSFORMS

from data_helpers import write_image, write_label


def coords_image(h, w):
    """Pixel (y, x) holds (y, x, y + x): shows where every pixel went."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, yy + xx], -1).astype(np.uint8)


def results_for(img, seg=None, **extra):
    results = dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], seg_fields=[], **extra)
    if seg is not None:
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')
    return results


# --------------------------------------------------------------------------------------- Resize

def mmcv_keep_ratio_size(h, w, scale):
    """mmcv.rescale_size: the factor fits the long and the short edge; sides rounded half up."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


@pytest.mark.parametrize('h, w, expected', [
    (512, 683, (512, 683)),      # ADE-like landscape: short edge already 512
    (375, 500, (512, 683)),      # 375 * 1.3653 = 512.0; 500 * 1.3653 = 682.67 -> 683
    (700, 300, (1195, 512)),     # portrait: short edge limits
    (100, 3000, (68, 2048)),     # panorama: long edge limits
    (1024, 2048, (512, 1024)),   # Cityscapes size under ADE's scale
])
def test_resize_keep_ratio_follows_mmcv_rule(h, w, expected):
    assert mmcv_keep_ratio_size(h, w, (2048, 512)) == expected  # the rule, checked by hand above
    seg = (np.arange(h * w) % 7).reshape(h, w).astype(np.uint8)
    out = Resize(scale=(2048, 512), keep_ratio=True)(results_for(np.zeros((h, w, 3), np.uint8), seg))
    assert out['img'].shape == expected + (3,)
    assert out['gt_seg_map'].shape == expected
    assert out['img_shape'] == expected
    assert out['scale_factor'] == pytest.approx((expected[1] / w, expected[0] / h))
    assert out['keep_ratio'] is True and out['scale'] == (2048, 512)
    assert set(np.unique(out['gt_seg_map'])) <= set(range(7))  # nearest: no new label values


def test_resize_scale_order_does_not_matter_with_keep_ratio():
    img = np.zeros((375, 500, 3), np.uint8)
    a = Resize(scale=(2048, 512), keep_ratio=True)(results_for(img))
    b = Resize(scale=(512, 2048), keep_ratio=True)(results_for(img))
    assert a['img'].shape == b['img'].shape == (512, 683, 3)


def test_resize_without_keep_ratio_is_exact_w_h():
    out = Resize(scale=(100, 60), keep_ratio=False)(results_for(np.zeros((30, 40, 3), np.uint8)))
    assert out['img'].shape == (60, 100, 3)
    assert out['scale_factor'] == (2.5, 2.0)


@pytest.mark.parametrize('ratio, h, w, expected', [
    # target = (int(w*r+.5), int(h*r+.5)), then rescaled to fit it (factor = min of the two ratios)
    (0.5, 375, 500, (188, 250)),    # target (250, 188): factor min(.5, .50133) = .5 -> h 187.5+.5 -> 188
    (0.75, 512, 683, (384, 512)),   # target (512, 384): factor min(.74963, .75) -> h int(383.81+.5)=384
    (1.75, 30, 41, (53, 72)),       # target (72, 53): factor min(1.7561, 1.7667) -> w 72, h int(52.68+.5)=53
    (1.0, 37, 51, (37, 51)),
])
def test_resize_scale_factor_form(ratio, h, w, expected):
    out = Resize(scale_factor=ratio, keep_ratio=True)(results_for(np.zeros((h, w, 3), np.uint8)))
    assert out['img'].shape[:2] == expected
    assert out['scale'] == (int(w * ratio + 0.5), int(h * ratio + 0.5))


def test_resize_image_bilinear_label_nearest():
    img = coords_image(8, 8)
    seg = np.tile(np.array([1, 2], np.uint8), (8, 4))
    out = Resize(scale=(16, 16), keep_ratio=False)(results_for(img, seg))
    np.testing.assert_array_equal(out['img'], cv2.resize(img, (16, 16), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(out['gt_seg_map'], cv2.resize(seg, (16, 16), interpolation=cv2.INTER_NEAREST))


def test_random_resize_draws_ratio_and_truncates(scripted_rng):
    rng = scripted_rng(random_sample=[0.25])             # ratio = 0.25 * (2.0 - 0.5) + 0.5 = 0.875
    t = RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)
    out = t(results_for(np.zeros((375, 500, 3), np.uint8), rng=rng))
    assert out['scale'] == (int(2048 * 0.875), int(512 * 0.875)) == (1792, 448)
    assert out['img'].shape[:2] == mmcv_keep_ratio_size(375, 500, (1792, 448))


def test_random_resize_stays_in_range():
    t = RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)
    for seed in range(20):
        out = t(results_for(np.zeros((512, 683, 3), np.uint8), rng=np.random.RandomState(seed)))
        assert 256 <= out['img'].shape[0] <= 1024


def test_random_resize_scale_range_form(scripted_rng):
    t = RandomResize(scale=[(100, 50), (200, 60)], keep_ratio=False)
    out = t(results_for(np.zeros((10, 10, 3), np.uint8), rng=scripted_rng(randint=[150, 55])))
    assert out['img'].shape[:2] == (55, 150)


# ----------------------------------------------------------------------------------- RandomCrop

def test_random_crop_cuts_image_and_label_at_the_same_window():
    img = coords_image(60, 80)
    seg = img[..., 0].copy()
    out = RandomCrop(crop_size=(20, 30))(results_for(img, seg, rng=np.random.RandomState(3)))
    assert out['img'].shape == (20, 30, 3) and out['img_shape'] == (20, 30)
    y0, x0 = int(out['img'][0, 0, 0]), int(out['img'][0, 0, 1])
    np.testing.assert_array_equal(out['img'], img[y0:y0 + 20, x0:x0 + 30])
    np.testing.assert_array_equal(out['gt_seg_map'], seg[y0:y0 + 20, x0:x0 + 30])


def test_random_crop_smaller_image_gives_smaller_crop():
    out = RandomCrop(crop_size=64)(results_for(np.zeros((40, 50, 3), np.uint8), np.zeros((40, 50), np.uint8)))
    assert out['img'].shape[:2] == (40, 50)


def test_random_crop_respects_cat_max_ratio_when_possible():
    # x < 64: class 1 only (windows there hold one class: rejected); x >= 64: 8-pixel bands of 1 and 2
    seg = np.ones((32, 200), np.uint8)
    seg[:, 64:] = 1 + (np.arange(64, 200) // 8) % 2
    crop = RandomCrop(crop_size=(32, 32), cat_max_ratio=0.75)

    def acceptable(window):
        counts = np.bincount(window.ravel(), minlength=3)[1:]
        return counts.min() > 0 and counts.max() / counts.sum() < 0.75

    first_draw_rejected = 0
    for seed in range(30):
        rng = np.random.RandomState(seed)
        rng.randint(0, 1)
        x1 = rng.randint(0, 169)
        first_draw_rejected += not acceptable(seg[:, x1:x1 + 32])
        out = crop(results_for(np.zeros((32, 200, 3), np.uint8), seg.copy(), rng=np.random.RandomState(seed)))
        assert acceptable(out['gt_seg_map'])
    assert first_draw_rejected >= 3  # the retries were exercised


def test_random_crop_retries_at_most_ten_times(scripted_rng):
    seg = np.ones((32, 64), np.uint8)  # a single class: no window is acceptable
    rng = scripted_rng(randint=[0] * 40)
    RandomCrop(crop_size=(16, 16), cat_max_ratio=0.75)(results_for(np.zeros((32, 64, 3), np.uint8), seg, rng=rng))
    assert len(rng.calls) == 2 * 11  # the first window and 10 redraws, 2 draws each


def test_random_crop_does_not_count_ignored_pixels(scripted_rng):
    seg = np.full((16, 32), 255, np.uint8)
    seg[:, :8] = 1
    seg[:, 8:16] = 2          # window x in [0, 16): classes 1 and 2 at 50% each (255 not counted)
    rng = scripted_rng(randint=[0, 0, 0, 16])
    out = RandomCrop(crop_size=(16, 16), cat_max_ratio=0.75)(
        results_for(np.zeros((16, 32, 3), np.uint8), seg, rng=rng))
    assert len(rng.calls) == 2  # accepted at once
    assert set(np.unique(out['gt_seg_map'])) == {1, 2}


# ----------------------------------------------------------------------------------- RandomFlip

@pytest.mark.parametrize('direction, flip', [('horizontal', lambda a: a[:, ::-1]), ('vertical', lambda a: a[::-1]),
                                             ('diagonal', lambda a: a[::-1, ::-1])])
def test_flip_moves_image_and_label_together(direction, flip):
    img = coords_image(6, 9)
    seg = img[..., 2].copy()
    out = RandomFlip(prob=1.0, direction=direction)(results_for(img, seg, rng=np.random.RandomState(0)))
    np.testing.assert_array_equal(out['img'], flip(img))
    np.testing.assert_array_equal(out['gt_seg_map'], flip(seg))
    assert out['flip'] is True and out['flip_direction'] == direction
    assert out['img'].flags.c_contiguous


def test_flip_with_prob_zero_changes_nothing():
    img = coords_image(6, 9)
    out = RandomFlip(prob=0.0)(results_for(img.copy(), rng=np.random.RandomState(0)))
    np.testing.assert_array_equal(out['img'], img)
    assert out['flip'] is False and out['flip_direction'] is None


def test_flip_probability_is_about_half():
    flips = [RandomFlip(prob=0.5)(results_for(np.zeros((2, 2, 3), np.uint8), rng=np.random.RandomState(s)))['flip']
             for s in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_flip_rejects_bad_arguments():
    with pytest.raises(ValueError):
        RandomFlip(prob=1.5)
    with pytest.raises(ValueError):
        RandomFlip(prob=0.5, direction='sideways')


# ------------------------------------------------------------------------------ Pad, ToMultiple

def test_pad_to_size_divisor_fills_image_0_and_label_255():
    img = np.full((50, 70, 3), 7, np.uint8)
    seg = np.full((50, 70), 3, np.uint8)
    out = Pad(size_divisor=32)(results_for(img, seg))
    assert out['img'].shape == (64, 96, 3) and out['gt_seg_map'].shape == (64, 96)
    # mmcv 2.x Pad: pad_shape = padded_img.shape (channels included), img_shape = padded_img.shape[:2]
    assert out['pad_shape'] == (64, 96, 3) and out['img_shape'] == (64, 96)
    assert (out['img'][:50, :70] == 7).all() and (out['img'][50:] == 0).all() and (out['img'][:, 70:] == 0).all()
    assert (out['gt_seg_map'][:50, :70] == 3).all() and (out['gt_seg_map'][50:] == 255).all()
    assert (out['gt_seg_map'][:, 70:] == 255).all()


def test_pad_to_fixed_size_is_w_h():
    out = Pad(size=(100, 80), pad_val=dict(img=5, seg=254))(results_for(np.zeros((50, 70, 3), np.uint8),
                                                                       np.zeros((50, 70), np.uint8)))
    assert out['img'].shape == (80, 100, 3)
    assert out['img'][79, 99].tolist() == [5, 5, 5] and out['gt_seg_map'][79, 99] == 254


def test_resize_to_multiple_rounds_each_side_up():
    out = ResizeToMultiple(size_divisor=32)(results_for(np.zeros((50, 70, 3), np.uint8),
                                                        np.zeros((50, 70), np.uint8)))
    assert out['img'].shape[:2] == (64, 96) and out['gt_seg_map'].shape == (64, 96)
    assert out['pad_shape'] == (64, 96)


# ------------------------------------------------------------------------------- loading

def test_load_annotations_reduce_zero_label_mapping(tmp_path):
    values = np.array([[0, 1, 2, 150, 255, 254]], np.uint8)
    write_image(str(tmp_path / 'a.jpg'), 1, 6)
    write_label(str(tmp_path / 'a.png'), values)
    results = dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'a.png'), seg_fields=[],
                   reduce_zero_label=True)
    out = LoadAnnotations()(LoadImageFromFile()(results))
    np.testing.assert_array_equal(out['gt_seg_map'], [[255, 0, 1, 149, 255, 253]])
    assert out['seg_fields'] == ['gt_seg_map']
    plain = LoadAnnotations()(dict(results, reduce_zero_label=False, seg_fields=[]))
    np.testing.assert_array_equal(plain['gt_seg_map'], values)


def test_load_annotations_applies_label_map(tmp_path):
    write_label(str(tmp_path / 'a.png'), [[0, 1, 2]])
    out = LoadAnnotations()(dict(seg_map_path=str(tmp_path / 'a.png'), seg_fields=[], label_map={0: 255, 1: 0, 2: 1}))
    np.testing.assert_array_equal(out['gt_seg_map'], [[255, 0, 1]])


def test_load_annotations_conflicting_reduce_zero_label_is_an_error(tmp_path):
    write_label(str(tmp_path / 'a.png'), [[0, 1]])
    with pytest.raises(ValueError, match='reduce_zero_label'):
        LoadAnnotations(reduce_zero_label=False)(dict(seg_map_path=str(tmp_path / 'a.png'), seg_fields=[],
                                                      reduce_zero_label=True))


def test_load_image_is_bgr_as_cv2_reads(tmp_path):
    img = write_image(str(tmp_path / 'x.png'), 5, 7)
    out = LoadImageFromFile()(dict(img_path=str(tmp_path / 'x.png')))
    np.testing.assert_array_equal(out['img'], img)
    assert out['img_shape'] == out['ori_shape'] == (5, 7)


# ---------------------------------------------------------------------------- photometric

def test_normalize_values():
    img = np.array([[[10, 20, 30]]], np.uint8)  # BGR
    out = Normalize(mean=[1, 2, 3], std=[2, 4, 8], to_rgb=True)(results_for(img))
    np.testing.assert_allclose(out['img'][0, 0], [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8], rtol=1e-6)
    assert out['img'].dtype == np.float32
    kept = Normalize(mean=[1, 2, 3], std=[2, 4, 8], to_rgb=False)(results_for(img))
    np.testing.assert_allclose(kept['img'][0, 0], [(10 - 1) / 2, (20 - 2) / 4, (30 - 3) / 8], rtol=1e-6)


def test_photometric_identity_when_every_branch_is_off(scripted_rng):
    img = coords_image(16, 16)
    out = PhotoMetricDistortion()(results_for(img.copy(), rng=scripted_rng(randint=[0] * 10)))
    np.testing.assert_array_equal(out['img'], img)


def test_photometric_brightness_branch_adds_clipped_delta(scripted_rng):
    img = np.array([[[0, 100, 250]]], np.uint8)
    # brightness on (+20.7), mode 0, saturation off, hue off, contrast off
    rng = scripted_rng(randint=[1, 0, 0, 0, 0], uniform=[20.7])
    out = PhotoMetricDistortion()(results_for(img, rng=rng))
    assert out['img'][0, 0].tolist() == [20, 120, 255]  # float add, clip, truncate


def test_photometric_brightness_only_stays_within_delta():
    t = PhotoMetricDistortion(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    img = np.full((4, 4, 3), 128, np.uint8)
    deltas = set()
    for seed in range(40):
        out = t(results_for(img.copy(), rng=np.random.RandomState(seed)))['img'].astype(int) - 128
        assert np.abs(out).max() <= 32
        deltas.add(int(out[0, 0, 0]))
    assert len(deltas) > 5 and 0 in deltas  # both on and off happen


def test_photometric_contrast_and_hue_ranges(scripted_rng):
    img = np.full((2, 2, 3), 100, np.uint8)
    # brightness off, mode 1 -> contrast first (on, x1.5), saturation off, hue off
    out = PhotoMetricDistortion()(results_for(img, rng=scripted_rng(randint=[0, 1, 1, 0, 0], uniform=[1.5])))
    assert (out['img'] == 150).all()
    # hue draws its shift from [-18, 18)
    rng = scripted_rng(randint=[0, 0, 0, 1])
    PhotoMetricDistortion()(results_for(coords_image(2, 2), rng=rng))
    assert ('randint', (-18, 18)) in rng.calls


# ---------------------------------------------------------------------------- formatting, TTA

def test_pack_seg_inputs_layout_and_python_meta():
    img = coords_image(5, 7)
    results = results_for(img, np.ones((5, 7), np.uint8), img_path='a.jpg', scale_factor=(np.float32(0.5), 1.0))
    sample = PackSegInputs()(results)
    assert sample['inputs'].shape == (3, 5, 7) and sample['inputs'].dtype == np.uint8
    assert sample['inputs'].flags.c_contiguous
    np.testing.assert_array_equal(sample['inputs'][1], img[..., 1])
    assert sample['gt_seg'].shape == (5, 7) and sample['gt_seg'].dtype == np.uint8
    meta = sample['meta']
    assert set(meta) == {'img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                         'flip', 'flip_direction', 'reduce_zero_label'}
    assert meta['img_shape'] == meta['pad_shape'] == (5, 7) and meta['flip'] is False
    assert type(meta['scale_factor'][0]) is float and meta['flip_direction'] is None
    assert 'gt_seg' not in PackSegInputs()(results_for(img))


def test_test_time_aug_views_in_mmseg_order(tmp_path):
    write_image(str(tmp_path / 'a.jpg'), 20, 30)
    write_label(str(tmp_path / 'a.png'), np.ones((20, 30)))
    ratios = [0.5, 1.0, 1.5]
    tta = TRANSFORMS.build(dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]]))
    results = LoadImageFromFile()(dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'a.png'),
                                       seg_fields=[], reduce_zero_label=False))
    views = tta(results)
    assert isinstance(tta, TTA) and len(views) == 6
    assert [v['meta']['flip'] for v in views] == [False, True] * 3
    assert [v['inputs'].shape[1:] for v in views[::2]] == [(10, 15), (20, 30), (30, 45)]
    assert all(v['gt_seg'].shape == (20, 30) for v in views)  # labels stay at the original size
    assert all(v['meta']['ori_shape'] == (20, 30) for v in views)


def test_compose_stops_at_none_and_reprs_are_informative():
    pipeline = Compose([dict(type='RandomFlip', prob=0.5), lambda r: None, dict(type='PackSegInputs')])
    assert pipeline(results_for(np.zeros((2, 2, 3), np.uint8))) is None
    for cfg in [dict(type='Resize', scale=(2048, 512), keep_ratio=True),
                dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
                dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75), dict(type='RandomFlip', prob=0.5),
                dict(type='PhotoMetricDistortion'), dict(type='PackSegInputs'), dict(type='Pad', size_divisor=32),
                dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='LoadImageFromFile'),
                dict(type='Normalize', mean=[0, 0, 0], std=[1, 1, 1]), dict(type='ResizeToMultiple')]:
        text = repr(TRANSFORMS.build(cfg))
        assert text.startswith(cfg['type'] + '(') and len(text) > len(cfg['type']) + 4


def test_photometric_matches_mmseg_float_formulas():
    """The lookup tables give exactly mmseg's ``clip(float32(img) * a + b)`` and HSV steps."""
    def convert(img, alpha=1, beta=0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def reference(img, rng):  # mmseg's PhotoMetricDistortion.transform, with its default ranges
        if rng.randint(2):
            img = convert(img, beta=rng.uniform(-32, 32))
        mode = rng.randint(2)
        if mode == 1 and rng.randint(2):
            img = convert(img, alpha=rng.uniform(0.5, 1.5))
        if rng.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if rng.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.randint(-18, 18)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if mode == 0 and rng.randint(2):
            img = convert(img, alpha=rng.uniform(0.5, 1.5))
        return img

    img = np.random.RandomState(1).randint(0, 256, (24, 32, 3)).astype(np.uint8)
    for seed in range(60):
        out = PhotoMetricDistortion()(results_for(img.copy(), rng=np.random.RandomState(seed)))['img']
        np.testing.assert_array_equal(out, reference(img.copy(), np.random.RandomState(seed)))


# ------------------------------------------------------------- ResizeShortestEdge / RandomChoiceResize

def shortest_edge_target(h, w, short, max_size):
    """mmseg's ResizeShortestEdge target (w, h): short edge to ``short``, long edge capped, rounded half up."""
    factor = short / min(h, w)
    new_h, new_w = (short, factor * w) if h < w else (factor * h, short)
    if max(new_h, new_w) > max_size:
        cap = max_size / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    return int(new_w + 0.5), int(new_h + 0.5)


@pytest.mark.parametrize('h, w, short, max_size, target, expected', [
    (375, 500, 512, 2048, (683, 512), (512, 683)),    # 500 * 512 / 375 = 682.67 -> 683; re-rounding keeps it
    (500, 375, 512, 2048, (512, 683), (683, 512)),    # portrait
    (30, 100, 102, 204, (204, 61), (61, 203)),        # cap: 61.2 x 204 -> (204, 61); keep-ratio factor
                                                      # min(204/100, 61/30) = 2.0333 gives 100 * 2.0333 = 203.3 -> 203
    (300, 1000, 1024, 2048, (2048, 614), (614, 2047)),  # the same at ADE's max_size: 614.4 -> 614, then 2046.7 -> 2047
    (512, 512, 256, 2048, (256, 256), (256, 256)),    # square, downscaled
])
def test_resize_shortest_edge_follows_mmseg_rounding(h, w, short, max_size, target, expected):
    assert shortest_edge_target(h, w, short, max_size) == target          # the rule, checked by hand above
    assert mmcv_keep_ratio_size(h, w, target) == expected                 # then mmcv's keep-ratio resize
    seg = (np.arange(h * w) % 5).reshape(h, w).astype(np.uint8)
    t = TRANSFORMS.build(dict(type='ResizeShortestEdge', scale=short, max_size=max_size))
    assert t.target_size(h, w) == target
    out = t(results_for(np.zeros((h, w, 3), np.uint8), seg))
    assert out['img'].shape == expected + (3,) and out['gt_seg_map'].shape == expected
    assert out['img_shape'] == expected and out['scale'] == target and out['keep_ratio'] is True
    assert out['scale_factor'] == pytest.approx((expected[1] / w, expected[0] / h))
    assert set(np.unique(out['gt_seg_map'])) <= set(range(5))


def test_resize_shortest_edge_tuple_scale_uses_its_minimum_and_checks_arguments():
    img = np.zeros((375, 500, 3), np.uint8)
    out = ResizeShortestEdge(scale=(640, 512), max_size=2048)(results_for(img))
    assert out['img'].shape[:2] == (512, 683)
    with pytest.raises(ValueError, match='scale must be'):
        ResizeShortestEdge(scale=0, max_size=2048)
    with pytest.raises(ValueError, match='max_size'):
        ResizeShortestEdge(scale=512, max_size=None)


M2F_SCALES = [256, 307, 358, 409, 460, 512, 563, 614, 665, 716, 768, 819, 870, 921, 972, 1024]


def test_random_choice_resize_shortest_edge_as_mask2former(scripted_rng):
    t = TRANSFORMS.build(dict(type='RandomChoiceResize', scales=M2F_SCALES, resize_type='ResizeShortestEdge',
                              max_size=2048))
    rng = scripted_rng(randint=[3])
    out = t(results_for(np.zeros((375, 500, 3), np.uint8), rng=rng))
    assert rng.calls == [('randint', (16,))]                             # one uniform index draw
    assert out['scale_idx'] == 3
    expected = mmcv_keep_ratio_size(375, 500, shortest_edge_target(375, 500, 409, 2048))
    assert out['img'].shape[:2] == expected == (409, 545)


def test_random_choice_resize_reaches_every_scale():
    t = RandomChoiceResize(scales=[256, 512, 1024], resize_type='ResizeShortestEdge', max_size=2048)
    seen = set()
    for seed in range(30):
        out = t(results_for(np.zeros((40, 60, 3), np.uint8), rng=np.random.RandomState(seed)))
        seen.add((out['scale_idx'], out['img'].shape[0]))
    assert seen == {(0, 256), (1, 512), (2, 1024)}


def test_random_choice_resize_with_plain_resize(scripted_rng):
    t = RandomChoiceResize(scales=[(2048, 512), (2048, 256)], keep_ratio=True)
    out = t(results_for(np.zeros((375, 500, 3), np.uint8), rng=scripted_rng(randint=[1])))
    assert out['scale'] == (2048, 256) and out['img'].shape[:2] == mmcv_keep_ratio_size(375, 500, (2048, 256))
    t = RandomChoiceResize(scales=16, keep_ratio=False)                  # an int scale s means (s, s)
    out = t(results_for(np.zeros((10, 20, 3), np.uint8)))
    assert out['img'].shape[:2] == (16, 16) and out['scale_idx'] == 0
    with pytest.raises(ValueError, match='scales'):
        RandomChoiceResize(scales=[], resize_type='ResizeShortestEdge', max_size=2048)
