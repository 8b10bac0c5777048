"""The generated demo dataset: deterministic, idempotent, atomic, learnable labels."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from jseg.datasets import DataError, DemoShapesDataset, generate_demo_dataset
from jseg.datasets import demo as demo_module


def files(root):
    return sorted(osp.relpath(osp.join(p, f), root) for p, _, fs in os.walk(root) for f in fs)


def test_layout_and_labels(demo_root):
    listing = files(demo_root)
    assert len([f for f in listing if f.startswith('images/training/')]) == 12
    assert len([f for f in listing if f.startswith('annotations/validation/')]) == 4
    labels = [cv2.imread(osp.join(demo_root, f), cv2.IMREAD_UNCHANGED) for f in listing if f.endswith('.png')]
    assert all(lab.ndim == 2 and 64 <= min(lab.shape) and max(lab.shape) <= 96 for lab in labels)
    values = np.unique(np.concatenate([lab.ravel() for lab in labels]))
    assert set(values) <= set(range(8)) and {0, 1, 2}.issubset(values) and len(values) >= 6


def test_same_seed_same_files_other_seed_other_files(tmp_path, demo_root):
    again = generate_demo_dataset(str(tmp_path / 'a'), num_train=12, num_val=4, size=(64, 96), seed=0)
    name = osp.join('images', 'training', 'demo_00003.jpg')
    assert files(again) == files(demo_root)
    assert open(osp.join(again, name), 'rb').read() == open(osp.join(demo_root, name), 'rb').read()
    other = generate_demo_dataset(str(tmp_path / 'b'), num_train=12, num_val=4, size=(64, 96), seed=1)
    assert open(osp.join(other, name), 'rb').read() != open(osp.join(demo_root, name), 'rb').read()


def test_idempotent_and_refuses_foreign_folders(tmp_path):
    root = str(tmp_path / 'demo')
    generate_demo_dataset(root, num_train=2, num_val=1, size=64)
    stamp = os.stat(osp.join(root, 'images', 'training', 'demo_00000.jpg')).st_mtime_ns
    generate_demo_dataset(root, num_train=2, num_val=1, size=64)
    assert os.stat(osp.join(root, 'images', 'training', 'demo_00000.jpg')).st_mtime_ns == stamp
    with pytest.raises(DataError, match='other settings'):
        generate_demo_dataset(root, num_train=3, num_val=1, size=64)
    (tmp_path / 'mine').mkdir()
    with pytest.raises(DataError, match='not a generated demo dataset'):
        generate_demo_dataset(str(tmp_path / 'mine'))


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {'n': 0}
    real_imwrite = cv2.imwrite

    def failing_imwrite(path, *args):
        calls['n'] += 1
        if calls['n'] == 5:
            raise KeyboardInterrupt
        return real_imwrite(path, *args)

    monkeypatch.setattr(demo_module.cv2, 'imwrite', failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(str(tmp_path / 'demo'), num_train=4, num_val=2, size=64)
    assert os.listdir(tmp_path) == []


def test_dataset_generates_itself_on_first_use(tmp_path):
    root = str(tmp_path / 'datasets' / 'demo_shapes')
    ds = DemoShapesDataset(data_root=root, generate=True, num_train=3, num_val=2, size=64,
                           data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                           pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                     dict(type='PackSegInputs')])
    assert len(ds) == 3 and ds[0]['inputs'].shape == (3, 64, 64)
    assert set(np.unique(ds[0]['gt_seg'])) <= set(range(7)) | {255}
    with pytest.raises(DataError, match='README'):
        DemoShapesDataset(data_root=str(tmp_path / 'absent'), data_prefix=dict(img_path='images/training'))


def test_default_generation_takes_seconds(tmp_path):
    import time
    start = time.perf_counter()
    root = generate_demo_dataset(str(tmp_path / 'full'))
    elapsed = time.perf_counter() - start
    assert len(files(root)) == 2 * (200 + 40) + 1
    assert elapsed < 20, f'generating the default demo dataset took {elapsed:.1f} s'


def test_older_renderer_version_is_regenerated(tmp_path):
    import json
    root = str(tmp_path / 'demo')
    generate_demo_dataset(root, num_train=2, num_val=1, size=64)
    marker = osp.join(root, demo_module.MARKER)
    settings = json.load(open(marker))
    settings['version'] = demo_module.VERSION - 1
    json.dump(settings, open(marker, 'w'))
    image = osp.join(root, 'images', 'training', 'demo_00000.jpg')
    open(image, 'wb').write(b'stale')
    generate_demo_dataset(root, num_train=2, num_val=1, size=64)
    assert json.load(open(marker))['version'] == demo_module.VERSION
    assert cv2.imread(image) is not None  # rendered again
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]  # no temporary left


def test_each_shape_class_has_its_own_texture():
    # one circle (dots), square (checker), triangle (hatch), ring (solid), stripes: texture statistics differ
    rng = np.random.default_rng(0)
    h = w = 48
    flat = {cls: demo_module._TEXTURES[cls](rng, h, w, cls).reshape(-1, 3) for cls in demo_module._TEXTURES}
    assert len(np.unique(flat[demo_module._RING], axis=0)) == 1  # solid
    for cls in (demo_module._CIRCLE, demo_module._SQUARE, demo_module._TRIANGLE, demo_module._STRIPES):
        assert len(np.unique(flat[cls], axis=0)) == 2         # a two-colour pattern
    for cls, pixels in flat.items():                          # the brightest colour is the class's (BGR)
        brightest = pixels[pixels.sum(1).argmax()]
        assert np.abs(brightest - np.array(demo_module.DEMO_PALETTE[cls - 1])[::-1]).max() <= 40
