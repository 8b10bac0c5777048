"""Helpers of the data tests: tiny datasets in each dataset's real folder layout, a scripted RNG."""
import os
import os.path as osp

import cv2
import numpy as np


def write_image(path, h, w, seed=0):
    """A random-ish BGR image at ``path`` (.jpg or .png); returns the array written."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7 + seed) % 256, (yy * 5) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return img


def write_label(path, label):
    """A single-channel PNG of class ids."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.asarray(label, dtype=np.uint8))
    return label


def random_label(h, w, values, seed=0):
    """Blocks of ``values`` (8x8 pixels) so that crops see several classes."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice(np.asarray(values), size=(-(-h // 8), -(-w // 8)))
    return np.kron(blocks, np.ones((8, 8), dtype=blocks.dtype))[:h, :w].astype(np.uint8)


SIZES = [(48, 64), (56, 40), (40, 40)]  # (h, w) of the samples of each split


def make_ade(root):
    base = osp.join(root, 'ade', 'ADEChallengeData2016')
    for split, prefix in (('training', 'train'), ('validation', 'val')):
        for i, (h, w) in enumerate(SIZES):
            name = f'ADE_{prefix}_{i + 1:08d}'
            write_image(osp.join(base, 'images', split, name + '.jpg'), h, w, seed=i)
            write_label(osp.join(base, 'annotations', split, name + '.png'),
                        random_label(h, w, [0, 1, 2, 5, 150], seed=i))
    return base


def make_cityscapes(root):
    base = osp.join(root, 'cityscapes')
    cities = {'train': ['aachen', 'bochum'], 'val': ['frankfurt']}
    for split, names in cities.items():
        for c, city in enumerate(names):
            for i in range(2):
                stem = f'{city}_{i:06d}_{19 + i:06d}'
                h, w = SIZES[(c + i) % len(SIZES)]
                write_image(osp.join(base, 'leftImg8bit', split, city, stem + '_leftImg8bit.png'), h, w, seed=i)
                write_label(osp.join(base, 'gtFine', split, city, stem + '_gtFine_labelTrainIds.png'),
                            random_label(h, w, [0, 1, 10, 18, 255], seed=c + i))
    return base


def make_coco_stuff(root):
    base = osp.join(root, 'coco_stuff164k')
    for split in ('train2017', 'val2017'):
        for i, (h, w) in enumerate(SIZES):
            name = f'{i + 1:012d}'
            write_image(osp.join(base, 'images', split, name + '.jpg'), h, w, seed=i)
            write_label(osp.join(base, 'annotations', split, name + '_labelTrainIds.png'),
                        random_label(h, w, [0, 7, 90, 170, 255], seed=i))
            # the raw stuffthingmaps sit beside the converted maps in the real layout
            write_label(osp.join(base, 'annotations', split, name + '.png'), random_label(h, w, [0, 181], seed=i))
    return base


def make_pascal_context(root):
    base = osp.join(root, 'VOCdevkit', 'VOC2010')
    names = {'train': ['2008_000002', '2008_000007'], 'val': ['2008_000009']}
    for split, stems in names.items():
        for i, stem in enumerate(stems):
            h, w = SIZES[i]
            write_image(osp.join(base, 'JPEGImages', stem + '.jpg'), h, w, seed=i)
            write_label(osp.join(base, 'SegmentationClassContext', stem + '.png'),
                        random_label(h, w, [0, 1, 30, 59], seed=i))
        split_file = osp.join(base, 'ImageSets', 'SegmentationContext', split + '.txt')
        os.makedirs(osp.dirname(split_file), exist_ok=True)
        with open(split_file, 'w') as f:
            f.write('\n'.join(stems) + '\n')
    # an image that is in no split
    write_image(osp.join(base, 'JPEGImages', '2008_999999.jpg'), 40, 40)
    return base


class ScriptedRNG:
    """A stand-in for ``np.random.RandomState`` that replays given draws.

    ``randint``/``uniform``/``random_sample``/``choice`` pop from their own
    queues; an empty queue falls back to a seeded RandomState.
    """

    def __init__(self, randint=(), uniform=(), random_sample=(), choice=()):
        self.queues = {'randint': list(randint), 'uniform': list(uniform),
                       'random_sample': list(random_sample), 'choice': list(choice)}
        self.calls = []
        self._fallback = np.random.RandomState(0)

    def _next(self, name, *args, **kwargs):
        self.calls.append((name, args))
        if self.queues[name]:
            return self.queues[name].pop(0)
        return getattr(self._fallback, name)(*args, **kwargs)

    def randint(self, *args, **kwargs):
        return self._next('randint', *args, **kwargs)

    def uniform(self, *args, **kwargs):
        return self._next('uniform', *args, **kwargs)

    def random_sample(self, *args, **kwargs):
        return self._next('random_sample', *args, **kwargs)

    def choice(self, *args, **kwargs):
        return self._next('choice', *args, **kwargs)
