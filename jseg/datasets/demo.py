"""A small synthetic dataset of textured shapes, generated in seconds, for demos and smoke tests.

Images hold two textured backgrounds (a smooth gradient above a wavy
horizon, a grainy texture below it) and 2 to 5 shapes: dotted circles,
checkered squares, cross-hatched triangles, solid rings and striped bars.
Every class has its own kind of texture and geometry and colours drawn around
its palette colour (classes with similar colours differ in texture and
shape), so that a small network trained from scratch learns it in a few
hundred iterations. Pixels on shape outlines and on thin random scribbles
are "other" (label 0), which ``reduce_zero_label`` ignores, as in ADE20K.

The layout is ADE20K's::

    <root>/images/{training,validation}/demo_XXXXX.jpg
    <root>/annotations/{training,validation}/demo_XXXXX.png
    <root>/demo_shapes.json            (the generation settings; marks a complete dataset)
"""
import json
import os
import os.path as osp
import shutil
import uuid

import cv2
import numpy as np

from jseg.registry import DATASETS

from .base import BaseSegDataset
from .errors import DataError

__all__ = ['DemoShapesDataset', 'generate_demo_dataset', 'DEMO_CLASSES']

DEMO_CLASSES = ('smooth background', 'grainy background', 'circle', 'square', 'triangle', 'ring', 'stripes')
DEMO_PALETTE = [[70, 130, 180], [107, 142, 35], [220, 20, 60], [255, 215, 0], [0, 0, 230],
                [255, 127, 80], [138, 43, 226]]
MARKER = 'demo_shapes.json'
SPLITS = (('training', 'train'), ('validation', 'val'))
# label ids in the files (0 = other); the dataset reduces them to 0..6
_SMOOTH, _GRAINY, _CIRCLE, _SQUARE, _TRIANGLE, _RING, _STRIPES = range(1, 8)


def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _class_colour(rng, cls):
    """A BGR colour near the class's palette colour (each channel moved by up to 40).

    Colour is a strong cue, as in real scenes, but the classes whose palette colours are
    close (the smooth background and triangles, circles and rings) need texture or shape.
    """
    rgb = np.array(DEMO_PALETTE[cls - 1], np.float32)
    return np.clip(rgb[::-1] + rng.uniform(-40, 40, size=3), 0, 255).astype(np.float32)


def _two_colours(rng, cls):
    """The class colour and a darker shade of it, for two-colour patterns."""
    first = _class_colour(rng, cls)
    return first, first * rng.uniform(0.3, 0.55)


def _grid(h, w):
    return np.mgrid[0:h, 0:w].astype(np.float32)


def _gradient(rng, h, w, cls):
    """A linear gradient from the class colour to a darker shade, in a random direction."""
    first, second = _class_colour(rng, cls), _class_colour(rng, cls) * rng.uniform(0.5, 0.8)
    angle = rng.uniform(0, np.pi)
    yy, xx = _grid(h, w)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    return first * (1 - t[..., None]) + second * t[..., None]


def _grainy(rng, h, w, cls):
    """A high-frequency texture: blocky noise over the class colour."""
    cell = int(rng.integers(2, 5))
    small = rng.normal(0, 40, size=(h // cell + 1, w // cell + 1, 1)).astype(np.float32)
    grain = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:h, :w]
    return _class_colour(rng, cls) + grain


def _solid(rng, h, w, cls):
    return np.broadcast_to(_class_colour(rng, cls), (h, w, 3)).copy()


def _stripes(rng, h, w, cls):
    """Straight bands of 3-7 pixels at a random angle."""
    period = int(rng.integers(6, 14))
    angle = rng.uniform(0, np.pi)
    yy, xx = _grid(h, w)
    band = ((np.cos(angle) * xx + np.sin(angle) * yy) // (period / 2)) % 2
    first, second = _two_colours(rng, cls)
    return np.where(band[..., None] > 0, first, second)


def _dots(rng, h, w, cls):
    """Polka dots: discs of radius 1-2 on a square grid of 5-8 pixels."""
    first, second = _two_colours(rng, cls)
    step, radius = int(rng.integers(5, 9)), float(rng.uniform(1.0, 2.2))
    yy, xx = _grid(h, w)
    near = ((yy % step) - step / 2) ** 2 + ((xx % step) - step / 2) ** 2 <= radius ** 2
    return np.where(near[..., None], first, second)


def _checker(rng, h, w, cls):
    """A checkerboard of 3-7 pixel cells."""
    first, second = _two_colours(rng, cls)
    cell = int(rng.integers(3, 8))
    yy, xx = _grid(h, w).astype(np.int64)
    return np.where((((yy // cell) + (xx // cell)) % 2 == 0)[..., None], first, second)


def _hatch(rng, h, w, cls):
    """Thin diagonal cross-hatching every 5-8 pixels."""
    first, second = _two_colours(rng, cls)
    step = int(rng.integers(5, 9))
    yy, xx = _grid(h, w).astype(np.int64)
    lines = ((xx + yy) % step == 0) | ((xx - yy) % step == 0)
    return np.where(lines[..., None], first, second)


_TEXTURES = {}  # filled below, once the shape ids are defined


def _shape_mask(rng, cls, h, w):
    """A uint8 mask of one shape and the outline (for label 0) drawn around it."""
    mask = np.zeros((h, w), np.uint8)
    outline = np.zeros((h, w), np.uint8)
    size = int(rng.uniform(0.12, 0.3) * min(h, w))
    cx, cy = int(rng.integers(size // 2, w - size // 2)), int(rng.integers(size // 2, h - size // 2))
    if cls in (_CIRCLE, _RING):
        cv2.circle(mask, (cx, cy), size, 1, -1)
        if cls == _RING:
            cv2.circle(mask, (cx, cy), max(size // 2, 3), 0, -1)
            cv2.circle(outline, (cx, cy), max(size // 2, 3), 1, 2)
        cv2.circle(outline, (cx, cy), size, 1, 2)
        return mask, outline
    if cls == _SQUARE:
        angle = rng.uniform(0, 90)
        box = cv2.boxPoints(((cx, cy), (2 * size, 2 * size), angle))
    elif cls == _TRIANGLE:
        start = rng.uniform(0, 2 * np.pi)
        box = np.array([(cx + size * 1.2 * np.cos(start + k * 2 * np.pi / 3),
                         cy + size * 1.2 * np.sin(start + k * 2 * np.pi / 3)) for k in range(3)])
    else:  # stripes: a long rotated bar
        angle = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (2.6 * size, 1.1 * size), angle))
    pts = np.round(box).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1)
    cv2.polylines(outline, [pts], True, 1, 2)
    return mask, outline


def render_sample(rng, height, width):
    """One image and its label map.

    Args:
        rng (np.random.Generator): the sample's random generator.
        height, width (int): image size.

    Returns:
        (np.ndarray, np.ndarray): (H, W, 3) uint8 BGR image and (H, W) uint8
        labels (0 = other, 1..7 = ``DEMO_CLASSES``).
    """
    h, w = height, width
    img = np.empty((h, w, 3), np.float32)
    label = np.empty((h, w), np.uint8)
    # wavy horizon between the two backgrounds
    base = rng.uniform(0.3, 0.7) * h
    amp, freq, phase = rng.uniform(0, 0.08) * h, rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
    horizon = base + amp * np.sin(freq * 2 * np.pi * np.arange(w) / w + phase)
    below = np.arange(h)[:, None] >= horizon[None, :]
    img[:] = _gradient(rng, h, w, _SMOOTH)
    img[below] = _grainy(rng, h, w, _GRAINY)[below]
    label[:] = _SMOOTH
    label[below] = _GRAINY
    edge = np.abs(np.arange(h)[:, None] - horizon[None, :]) < 1.0
    label[edge] = 0
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.choice([_CIRCLE, _SQUARE, _TRIANGLE, _RING, _STRIPES]))
        mask, outline = _shape_mask(rng, cls, h, w)
        inside = mask.astype(bool)
        texture = _TEXTURES[cls](rng, h, w, cls)
        img[inside] = texture[inside]
        label[inside] = cls
        label[outline.astype(bool)] = 0
    for _ in range(int(rng.integers(0, 3))):  # unlabelled scribbles
        pts = rng.integers(0, [w, h], size=(4, 2)).astype(np.int32)
        scribble = np.zeros((h, w), np.uint8)
        cv2.polylines(scribble, [pts], False, 1, int(rng.integers(1, 3)))
        on = scribble.astype(bool)
        img[on] = _random_colour(rng)
        label[on] = 0
    img += rng.normal(0, 3, size=(h, w, 1)).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8), label


_TEXTURES.update({_CIRCLE: _dots, _SQUARE: _checker, _TRIANGLE: _hatch, _RING: _solid, _STRIPES: _stripes})
VERSION = 3  # of the rendering: datasets made by an older version are regenerated


def _settings(num_train, num_val, size, seed):
    return {'num_train': int(num_train), 'num_val': int(num_val), 'size': [int(s) for s in size],
            'seed': int(seed), 'classes': list(DEMO_CLASSES), 'version': VERSION}


def _read_marker(root):
    try:
        with open(osp.join(root, MARKER), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove_stale_temporaries(parent, prefix):
    for name in os.listdir(parent):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split('-')[0]
        alive = pid.isdigit() and osp.exists(f'/proc/{pid}') if osp.isdir('/proc') else True
        if not alive:
            shutil.rmtree(osp.join(parent, name), ignore_errors=True)


def generate_demo_dataset(root, num_train=200, num_val=40, size=(160, 256), seed=0):
    """Write the demo dataset to ``root`` unless it is already there; return ``root``.

    Deterministic: the same arguments give the same files. Idempotent: a
    complete dataset with the same settings is left alone. Atomic: files are
    written to a hidden temporary folder beside ``root`` which is renamed to
    ``root`` at the end, so an interrupted run leaves no partial dataset.

    Args:
        root (str): dataset folder to create.
        num_train, num_val (int): images per split.
        size (int | tuple[int, int]): image side, or the (min, max) range
            each side is drawn from.
        seed (int): seed of everything.

    A dataset made by an older version of the renderer (same settings) is
    replaced by a new one.

    Raises:
        DataError: ``root`` exists but is not a demo dataset made with these settings.
    """
    if isinstance(size, int):
        size = (size, size)
    settings = _settings(num_train, num_val, size, seed)
    stale = osp.exists(root) and _is_older_version(root, settings)
    if osp.exists(root) and not stale:
        return _check_existing(root, settings)
    parent = osp.dirname(osp.abspath(root)) or '.'
    os.makedirs(parent, exist_ok=True)
    prefix = f'.{osp.basename(osp.abspath(root))}.tmp-'
    _remove_stale_temporaries(parent, prefix)
    tmp = osp.join(parent, f'{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}')
    try:
        for split_id, (folder, _) in enumerate(SPLITS):
            count = num_train if folder == 'training' else num_val
            os.makedirs(osp.join(tmp, 'images', folder))
            os.makedirs(osp.join(tmp, 'annotations', folder))
            for i in range(count):
                rng = np.random.default_rng([int(seed), split_id, i])
                h, w = (int(rng.integers(size[0], size[1] + 1)) for _ in range(2))
                img, label = render_sample(rng, h, w)
                name = f'demo_{i:05d}'
                cv2.imwrite(osp.join(tmp, 'images', folder, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
                cv2.imwrite(osp.join(tmp, 'annotations', folder, name + '.png'), label)
        with open(osp.join(tmp, MARKER), 'w', encoding='utf-8') as f:
            json.dump(settings, f, indent=2)
        if stale:  # move the old version aside (it is generated data), then swap in the new one
            old = f'{tmp}-old'
            os.rename(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if not osp.exists(root):  # not a lost race with another process
                raise
            return _check_existing(root, settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_older_version(root, settings):
    found = _read_marker(root)
    return bool(found) and all(found.get(k) == v for k, v in settings.items() if k != 'version') \
        and int(found.get('version', 0)) < settings['version']


def _check_existing(root, settings):
    found = _read_marker(root)
    if found is None:
        raise DataError(root, f'exists but is not a generated demo dataset (no {MARKER}); '
                              'remove it or choose another data_root')
    if found != settings:
        changed = sorted(k for k in settings if found.get(k) != settings[k])
        raise DataError(root, f'holds a demo dataset generated with other settings ({", ".join(changed)} '
                              'differ); remove the folder to regenerate it')
    return root


@DATASETS.register_module()
class DemoShapesDataset(BaseSegDataset):
    """The synthetic shapes dataset: 7 classes, ADE20K's layout and label convention.

    Args:
        generate (bool): create the data under ``data_root`` first if it is
            missing (see :func:`generate_demo_dataset`).
        num_train, num_val, size, seed: generation settings.
        **kwargs: :class:`BaseSegDataset` arguments.
    """

    METAINFO = dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True, generate=False,
                 num_train=200, num_val=40, size=(160, 256), seed=0, **kwargs):
        data_root = kwargs.get('data_root')
        if generate:
            if data_root is None:
                raise ValueError('DemoShapesDataset(generate=True) needs a data_root to generate into')
            generate_demo_dataset(data_root, num_train=num_train, num_val=num_val, size=size, seed=seed)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
