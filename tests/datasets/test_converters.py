"""The dataset converters on small synthetic label maps."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from data_helpers import write_image, write_label

TOOLS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools', 'convert_datasets')


def load_tool(name):
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location(f'convert_{name}', osp.join(TOOLS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the process pool pickles its functions by module name
    spec.loader.exec_module(module)
    return module


def read(path):
    from PIL import Image
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------------------- Cityscapes

def make_label_ids(root):
    # every Cityscapes id 0..33 plus the 'license plate' -1 stored as 255 in some tools
    ids = np.array([list(range(34)) + [255, 7]], np.uint8)
    for split, city in (('train', 'aachen'), ('val', 'lindau')):
        for i in range(2):
            stem = f'{city}_{i:06d}_000019'
            write_label(osp.join(root, 'gtFine', split, city, stem + '_gtFine_labelIds.png'), ids)
            write_label(osp.join(root, 'gtFine', split, city, stem + '_gtFine_instanceIds.png'), ids)
    return ids


def test_cityscapes_maps_ids_to_train_ids(tmp_path):
    tool = load_tool('cityscapes')
    root = str(tmp_path / 'cityscapes')
    make_label_ids(root)
    assert tool.convert(root, nproc=2) == 4
    out = read(osp.join(root, 'gtFine', 'train', 'aachen', 'aachen_000000_000019_gtFine_labelTrainIds.png'))
    expected = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                            255, 255, 16, 17, 18, 255, 0]
    assert out.tolist() == [expected]
    assert open(osp.join(root, 'train.txt')).read().split() == ['aachen/aachen_000000_000019',
                                                                'aachen/aachen_000001_000019']
    assert open(osp.join(root, 'val.txt')).read().split()[0] == 'lindau/lindau_000000_000019'
    assert not osp.exists(osp.join(root, 'test.txt'))
    # idempotent: nothing rewritten, and no temporary files left behind
    assert tool.convert(root) == 0
    leftovers = [f for _, _, files in os.walk(root) for f in files if f.endswith('.tmp')]
    assert leftovers == []


def test_cityscapes_wrong_folder_is_a_clear_error(tmp_path, capsys):
    tool = load_tool('cityscapes')
    assert tool.main([str(tmp_path)]) == 1
    assert 'gtFine' in capsys.readouterr().err
    (tmp_path / 'gtFine').mkdir()
    with pytest.raises(tool.ConversionError, match='labelIds'):
        tool.convert(str(tmp_path))


# ------------------------------------------------------------------------------- COCO-Stuff

def test_coco_stuff_mapping_matches_mmseg(tmp_path):
    tool = load_tool('coco_stuff164k')
    lut = tool.train_id_lut()
    # spot checks against mmseg's clsID_to_trID table
    assert [lut[i] for i in (0, 10, 12, 24, 26, 27, 30, 43, 45, 64, 66, 69, 81, 83, 89, 91, 181, 255)] == \
           [0, 10, 11, 23, 24, 25, 26, 39, 40, 59, 60, 61, 72, 73, 79, 80, 170, 255]
    assert all(lut[i] == 255 for i in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182, 254))
    assert sorted(set(lut.tolist()) - {255}) == list(range(171))


def test_coco_stuff_converts_both_splits(tmp_path, capsys):
    tool = load_tool('coco_stuff164k')
    root = str(tmp_path / 'coco_stuff164k')
    for split in ('train2017', 'val2017'):
        write_image(osp.join(root, 'images', split, '000000000009.jpg'), 4, 3)
        write_label(osp.join(root, 'annotations', split, '000000000009.png'), [[0, 12, 181], [255, 11, 90]])
    assert tool.main([root, '--nproc', '1']) == 0
    assert 'full COCO-Stuff 164k has 123287' in capsys.readouterr().err
    out = read(osp.join(root, 'annotations', 'val2017', '000000000009_labelTrainIds.png'))
    assert out.tolist() == [[0, 11, 170], [255, 255, 255]]
    assert tool.convert(root) == 0                     # idempotent, outputs not taken as inputs
    other = str(tmp_path / 'out')
    assert tool.convert(root, out_dir=other) == 2
    assert osp.isfile(osp.join(other, 'images', 'train2017', '000000000009.jpg'))


def test_coco_stuff_wrong_folder_is_a_clear_error(tmp_path):
    tool = load_tool('coco_stuff164k')
    with pytest.raises(tool.ConversionError, match='annotations'):
        tool.convert(str(tmp_path))


def test_converter_runs_as_a_script(tmp_path):
    root = str(tmp_path / 'cityscapes')
    make_label_ids(root)
    done = subprocess.run([sys.executable, osp.join(TOOLS, 'cityscapes.py'), root, '--nproc', '2'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'done: 4 train-id maps written' in done.stdout
