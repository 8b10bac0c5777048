"""Colour transforms: mmseg's ``PhotoMetricDistortion`` and mmcv's ``Normalize``."""
import cv2
import numpy as np

from jseg.registry import TRANSFORMS

from .functional import get_rng

__all__ = ['PhotoMetricDistortion', 'Normalize']


_IDENTITY = np.arange(256, dtype=np.uint8)


def _affine_lut(alpha, beta):
    """uint8 -> ``uint8(clip(float32(v) * alpha + beta, 0, 255))`` for every v."""
    return np.clip(np.arange(256, dtype=np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """Random brightness, contrast, saturation and hue changes of a uint8 BGR image.

    In mmseg's order, each step applied with probability 1/2:

    1. brightness: add ``U(-brightness_delta, brightness_delta)``;
    2. contrast (if ``mode == 1``, drawn with probability 1/2): multiply by
       ``U(contrast_range)``;
    3. saturation: in HSV, multiply S by ``U(saturation_range)``;
    4. hue: in HSV, add an integer in ``[-hue_delta, hue_delta)`` to H (mod 180);
    5. contrast (if ``mode == 0``).

    After each step values are clipped to [0, 255] and truncated to uint8.

    Args:
        brightness_delta (int): brightness shift bound.
        contrast_range (tuple[float, float]): contrast factor range.
        saturation_range (tuple[float, float]): saturation factor range.
        hue_delta (int): hue shift bound (OpenCV hue units, 0..179).
    """

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def convert(img, alpha=1, beta=0):
        """``clip(img * alpha + beta, 0, 255)`` truncated to uint8, computed in float32 as mmseg does.

        For uint8 images the 256 possible results are computed once and looked up.
        """
        if img.dtype == np.uint8:
            return cv2.LUT(np.ascontiguousarray(img), _affine_lut(alpha, beta))
        out = img.astype(np.float32) * alpha + beta
        return np.clip(out, 0, 255).astype(np.uint8)

    def brightness(self, img, rng):
        if rng.randint(2):
            return self.convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        return img

    def contrast(self, img, rng):
        if rng.randint(2):
            return self.convert(img, alpha=rng.uniform(self.contrast_lower, self.contrast_upper))
        return img

    def saturation(self, img, rng):
        if rng.randint(2):
            alpha = rng.uniform(self.saturation_lower, self.saturation_upper)
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            lut = np.stack([_IDENTITY, _affine_lut(alpha, 0), _IDENTITY], -1)[:, None, :]  # S channel only
            img = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
        return img

    def hue(self, img, rng):
        if rng.randint(2):
            shift = int(rng.randint(-self.hue_delta, self.hue_delta)) if self.hue_delta > 0 else 0
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hue_lut = ((np.arange(256) + shift) % 180).astype(np.uint8)     # H is 0..179 in OpenCV
            lut = np.stack([hue_lut, _IDENTITY, _IDENTITY], -1)[:, None, :]  # H channel only
            img = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
        return img

    def __call__(self, results):
        rng = get_rng(results)
        img = np.ascontiguousarray(results['img'])
        img = self.brightness(img, rng)
        mode = rng.randint(2)
        if mode == 1:
            img = self.contrast(img, rng)
        img = self.saturation(img, rng)
        img = self.hue(img, rng)
        if mode == 0:
            img = self.contrast(img, rng)
        results['img'] = img
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(brightness_delta={self.brightness_delta}, '
                f'contrast_range=({self.contrast_lower}, {self.contrast_upper}), '
                f'saturation_range=({self.saturation_lower}, {self.saturation_upper}), '
                f'hue_delta={self.hue_delta})')


@TRANSFORMS.register_module()
class Normalize:
    """``(img - mean) / std`` in float32, optionally converting BGR to RGB first.

    Not part of the default pipelines: the model's data preprocessor
    normalises batches. Use it only for pipelines that feed a model directly.

    Args:
        mean (sequence[float]): per-channel mean (in RGB order if ``to_rgb``).
        std (sequence[float]): per-channel std.
        to_rgb (bool): convert BGR to RGB before normalising.
    """

    def __init__(self, mean, std, to_rgb=True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results):
        img = results['img'].astype(np.float32)
        if self.to_rgb:
            img = img[..., ::-1]
        mean = self.mean.astype(np.float64).reshape(1, 1, -1)
        std_inv = 1.0 / self.std.astype(np.float64).reshape(1, 1, -1)
        results['img'] = ((img - mean) * std_inv).astype(np.float32)
        results['img_norm_cfg'] = dict(mean=self.mean.tolist(), std=self.std.tolist(), to_rgb=self.to_rgb)
        return results

    def __repr__(self):
        return f'{type(self).__name__}(mean={self.mean.tolist()}, std={self.std.tolist()}, to_rgb={self.to_rgb})'
