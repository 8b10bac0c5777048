"""LoadImageFromFile(imdecode_backend='pillow') returns what mmcv's imfrombytes(backend='pillow') does.

mmcv 2.x (``mmcv/image/io.py``): 'color'/'grayscale' apply the EXIF orientation and
composite an 'LA' image on the RGB colour (124, 117, 104) by its alpha; 'unchanged'
keeps the stored pixels, with the first three channels in BGR order. Expectations
below are written from those rules and the EXIF standard (orientation 6: rotate
90 degrees clockwise to display).
"""
import numpy as np
import pytest
from PIL import Image

from jseg.datasets.transforms import LoadImageFromFile

RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # (H=2, W=3, RGB)


def load(path, color_type):
    return LoadImageFromFile(color_type=color_type, imdecode_backend='pillow')(dict(img_path=str(path)))['img']


def test_exif_orientation_is_applied_for_color_and_grayscale(tmp_path):
    path = tmp_path / 'rotated.png'
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    Image.fromarray(RGB).save(path, exif=exif)
    clockwise = np.rot90(RGB, k=-1)  # (3, 2, 3)
    np.testing.assert_array_equal(load(path, 'color'), clockwise[..., ::-1])
    gray = load(path, 'grayscale')
    assert gray.shape == (3, 2)
    # Pillow's L = (R * 299 + G * 587 + B * 114) / 1000, rounded
    r, g, b = (clockwise[..., i].astype(np.int64) for i in range(3))
    np.testing.assert_allclose(gray, (r * 299 + g * 587 + b * 114) / 1000, atol=1)
    np.testing.assert_array_equal(load(path, 'unchanged'), RGB[..., ::-1])  # as stored, no rotation


def test_la_image_is_composited_on_mmcv_background(tmp_path):
    path = tmp_path / 'la.png'
    grey = np.array([[200, 50]], np.uint8)
    alpha = np.array([[255, 0]], np.uint8)
    Image.fromarray(np.stack([grey, alpha], -1), mode='LA').save(path)
    img = load(path, 'color')
    assert img[0, 0].tolist() == [200, 200, 200]          # opaque: the grey value
    assert img[0, 1].tolist() == [104, 117, 124]          # transparent: (124, 117, 104) RGB, as BGR


def test_unchanged_keeps_alpha_and_swaps_to_bgr(tmp_path):
    path = tmp_path / 'rgba.png'
    rgba = np.concatenate([RGB, np.full((2, 3, 1), 77, np.uint8)], -1)
    Image.fromarray(rgba, mode='RGBA').save(path)
    out = load(path, 'unchanged')
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out[..., :3], RGB[..., ::-1])
    assert (out[..., 3] == 77).all()
    # 'color' drops the alpha (Pillow's RGBA -> RGB), BGR order
    np.testing.assert_array_equal(load(path, 'color'), RGB[..., ::-1])


@pytest.mark.parametrize('color_type', ['color', 'unchanged'])
def test_cv2_and_pillow_agree_on_plain_rgb(tmp_path, color_type):
    path = tmp_path / 'plain.png'
    Image.fromarray(RGB).save(path)
    cv2_img = LoadImageFromFile(color_type=color_type)(dict(img_path=str(path)))['img']
    np.testing.assert_array_equal(load(path, color_type), cv2_img)
