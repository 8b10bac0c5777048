"""Colour maps and overlays of label maps, and writing predictions to disk."""
import os
import os.path as osp

import cv2
import numpy as np

from jseg.utils.fileio import atomic_open

__all__ = ['colorize', 'overlay', 'random_palette', 'save_prediction', 'write_image', 'write_label_map']


def random_palette(num_classes, seed=0):
    """A fixed pseudo-random RGB palette for datasets that define none: (K, 3) uint8."""
    return np.random.RandomState(seed).randint(0, 256, size=(num_classes, 3)).astype(np.uint8)


def colorize(label, palette):
    """(H, W) class indices -> (H, W, 3) RGB image; indices outside the palette are black."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    label = np.asarray(label)
    out = np.zeros(label.shape + (3,), dtype=np.uint8)
    valid = (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def overlay(image_bgr, label, palette, alpha=0.5):
    """Blend the colour map of ``label`` over a (H, W, 3) BGR image; returns BGR uint8."""
    color_bgr = colorize(label, palette)[..., ::-1]
    if image_bgr.shape[:2] != label.shape:
        image_bgr = cv2.resize(image_bgr, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image_bgr, 1 - alpha, color_bgr, alpha, 0)


def write_image(path, image):
    """Write an image (format from the file extension) atomically, creating its folder."""
    ok, encoded = cv2.imencode(osp.splitext(path)[1] or '.png', image)
    if not ok:
        raise OSError(f'could not encode {path}')
    with atomic_open(path, 'wb') as f:
        f.write(encoded.tobytes())


def write_label_map(path, labels):
    """Write (H, W) class indices as a single-channel PNG: uint8, or uint16 beyond 255 classes."""
    write_image(path, labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))


def save_prediction(pred, meta, save_dir, palette=None):
    """Write ``labels/<name>.png`` (class indices) and ``overlays/<name>.jpg`` under ``save_dir``.

    Args:
        pred (np.ndarray): (H, W) predicted class indices at the original image size.
        meta (dict): the sample's meta (``img_path`` names the files and gives the image).
        palette (array-like | None): (K, 3) RGB colours; a fixed random one if None.
    """
    name = osp.splitext(osp.basename(meta.get('img_path') or f'{meta.get("index", 0)}.png'))[0]
    label_dir, vis_dir = osp.join(save_dir, 'labels'), osp.join(save_dir, 'overlays')
    os.makedirs(label_dir, exist_ok=True)
    os.makedirs(vis_dir, exist_ok=True)
    write_label_map(osp.join(label_dir, name + '.png'), pred)
    if palette is None:
        palette = random_palette(int(pred.max(initial=0)) + 1)
    image = cv2.imread(meta['img_path'], cv2.IMREAD_COLOR) if meta.get('img_path') else None
    if image is None:
        image = np.zeros(pred.shape + (3,), np.uint8)
    write_image(osp.join(vis_dir, name + '.jpg'), overlay(image, pred, palette))
