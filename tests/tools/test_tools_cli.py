"""The command-line tools end to end on the tiny OffSeg-T demo config (64x64 crops, 3 validation images).

analyze_ideal_repr.py and demo.py use a checkpoint trained for 2 iterations
(conftest.py); benchmark.py and print_config.py need only the config.
"""
import glob
import json
import os
import re

import cv2
import numpy as np
import pytest
from tool_helpers import CONFIG, data_options, load_tool

from jseg.config import Config
from jseg.datasets import DemoShapesDataset
from jseg.visualization import colorize


def _png(path):
    """Decode a PNG with OpenCV (checking it is one) and return the array."""
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n', path
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


# ------------------------------------------------------------------------- analyze_ideal_repr.py

def test_analyze_ideal_repr_end_to_end(trained, demo_data, tmp_path, capsys):
    _, checkpoint = trained
    out_dir = str(tmp_path / 'ideal')
    tool = load_tool('analyze_ideal_repr')
    assert tool.main([CONFIG, checkpoint, '--out-dir', out_dir, '--cfg-options', *data_options(demo_data)]) == 0
    out = capsys.readouterr().out
    match = re.search(r'^reconstruction mIoU: (\d+\.\d+)% .* over 3 images$', out, re.M)
    assert match, out
    miou = float(match.group(1))
    assert 0 <= miou <= 100
    assert 'OffSegHead input of offset_learning, 256 channels' in out

    image = _png(os.path.join(out_dir, tool.PNG_NAME))
    report = json.load(open(os.path.join(out_dir, tool.JSON_NAME)))
    assert report['num_images'] == 3 and report['head'] == 'OffSegHead' and report['channels'] == 256
    assert round(100 * report['reconstruction']['mIoU'], 2) == miou
    assert report['classes'], 'at least one class in two or more of the 3 images'
    for name, entry in report['classes'].items():
        sim = np.array(entry['similarity'])
        n = len(entry['images'])
        assert 2 <= n <= 10 and sim.shape == (n, n) and name in out
        np.testing.assert_allclose(sim, sim.T, atol=1e-6)
        np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    # one 300 px heatmap per class, three per row, and a colour bar (matplotlib writes RGBA)
    panels = len(report['classes'])
    columns, rows = min(3, panels), -(-panels // 3)
    assert image.shape == (300 * rows + 70, 300 * columns + 120, 4)


def test_analyze_ideal_repr_chosen_classes_and_errors(trained, demo_data, tmp_path, capsys):
    _, checkpoint = trained
    tool = load_tool('analyze_ideal_repr')
    out_dir = str(tmp_path / 'chosen')
    assert tool.main([CONFIG, checkpoint, '--out-dir', out_dir, '--num-images', '2', '--images-per-class', '2',
                      '--classes', 'smooth background', '1', '--cfg-options', *data_options(demo_data)]) == 0
    report = json.load(open(os.path.join(out_dir, tool.JSON_NAME)))
    assert report['num_images'] == 2
    assert set(report['classes']) <= {'smooth background', 'grainy background'}
    assert all(len(entry['images']) <= 2 for entry in report['classes'].values())
    capsys.readouterr()
    assert tool.main([CONFIG, checkpoint, '--classes', 'circel', '--cfg-options', *data_options(demo_data)]) == 1
    assert "error: --classes: unknown class 'circel'; did you mean 'circle'" in capsys.readouterr().err
    assert tool.main([CONFIG, str(tmp_path / 'missing.npz'), '--cfg-options', *data_options(demo_data)]) == 1
    assert 'error: checkpoint' in capsys.readouterr().err


def test_analyze_ideal_repr_train_split_uses_the_validation_pipeline():
    tool = load_tool('analyze_ideal_repr')
    cfg = Config.fromfile(CONFIG)
    dataset = tool.split_dataset_cfg(cfg, 'train')
    assert dataset['data_prefix'] == cfg.train_dataloader.dataset.data_prefix
    assert [t['type'] for t in dataset['pipeline']] == [t['type'] for t in cfg.val_dataloader.dataset.pipeline]
    assert tool.split_dataset_cfg(cfg, 'val')['pipeline'] == cfg.val_dataloader.dataset.pipeline


# ------------------------------------------------------------------------- demo.py

def test_demo_writes_overlays_and_label_maps(trained, demo_data, tmp_path, capsys):
    _, checkpoint = trained
    out_dir = str(tmp_path / 'demo')
    folder = os.path.join(demo_data, 'images', 'validation')
    images = sorted(glob.glob(os.path.join(folder, '*.jpg')))
    tool = load_tool('demo')
    # a folder and a glob naming the same images: each is segmented once; opacity 1 shows the colours only
    assert tool.main([CONFIG, checkpoint, folder, os.path.join(folder, '*.jpg'), '--out-dir', out_dir,
                      '--opacity', '1', '--cfg-options', *data_options(demo_data)]) == 0
    assert f'{len(images)} image(s) segmented' in capsys.readouterr().out
    palette = DemoShapesDataset.METAINFO['palette']
    for path in images:
        name = os.path.splitext(os.path.basename(path))[0]
        source = cv2.imread(path)
        label = _png(os.path.join(out_dir, 'labels', name + '.png'))
        overlay = _png(os.path.join(out_dir, 'overlays', name + '.png'))
        assert label.dtype == np.uint8 and label.shape == source.shape[:2] and label.max() < 7
        assert overlay.shape == source.shape
        np.testing.assert_array_equal(overlay, colorize(label, palette)[..., ::-1])


def test_demo_reports_bad_inputs_in_one_line(tmp_path, capsys):
    tool = load_tool('demo')
    assert tool.main([CONFIG, 'unused.npz', str(tmp_path / 'none' / '*.jpg')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: no image matches pattern') and err.count('\n') == 1
    bad = tmp_path / 'notes.jpg'
    bad.write_text('not an image')
    assert tool.main([CONFIG, 'unused.npz', str(bad)]) == 1
    assert capsys.readouterr().err == f'error: {bad}: not a readable image (unknown or unsupported format)\n'
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert tool.main([CONFIG, 'unused.npz', str(empty)]) == 1
    assert 'holds no images' in capsys.readouterr().err


# ------------------------------------------------------------------------- benchmark.py

MEDIAN = r'^{} median: (\d+\.\d+) s'


def test_benchmark_inference(capsys):
    tool = load_tool('benchmark')
    assert tool.main([CONFIG, '--runs', '1', '--warmup', '1']) == 0
    out = capsys.readouterr().out
    assert re.search(MEDIAN.format('inference'), out, re.M), out
    assert not re.search(MEDIAN.format('train iter'), out, re.M)
    # the tiny config tests at Resize scale (256, 64) with keep_ratio: a square 64x64 image
    assert 'inference input: 1 x 3 x 64 x 64 (a square image after the test Resize' in out
    share = float(re.search(r'^backbone median: \d+\.\d+ s\s+\| (\d+\.\d)% of inference', out, re.M).group(1))
    assert share > 0


def test_benchmark_train(capsys, tmp_path):
    tool = load_tool('benchmark')
    result = str(tmp_path / 'bench.json')
    assert tool.main([CONFIG, '--train', '--batch', '2', '--shape', '64', '--runs', '1', '--warmup', '1',
                      '--json', result]) == 0
    out = capsys.readouterr().out
    inference = float(re.search(MEDIAN.format('inference'), out, re.M).group(1))
    train = float(re.search(MEDIAN.format('train iter'), out, re.M).group(1))
    assert inference > 0 and train > 0
    assert 'train input: 2 x 3 x 64 x 64 (the train pipeline\'s RandomCrop); optimizer AdamW' in out
    saved = json.load(open(result))
    assert saved['train']['total']['median'] == pytest.approx(train, abs=1e-4)
    assert saved['train']['shape'] == [2, 3, 64, 64] and saved['inference']['shape'] == [2, 3, 64, 64]
    assert saved['side'] == 'jseg' and saved['batch'] == 2 and 'stages' not in saved['inference']


def test_benchmark_breakdown_of_offseg(capsys, tmp_path):
    """--breakdown names every OffSeg-T stage; a sub-stage's time lies inside its parent's in every run."""
    tool = load_tool('benchmark')
    result = str(tmp_path / 'stages.json')
    assert tool.main([CONFIG, '--train', '--batch', '2', '--shape', '64', '--runs', '2', '--warmup', '1',
                      '--breakdown', '--json', result]) == 0
    out = capsys.readouterr().out
    assert 'inference stages (median s' in out and 'train (each stage forward + backward alone) stages' in out
    saved = json.load(open(result))
    levels = [f'decode_head.freqfusions.{i}' for i in range(3)]
    head = ['decode_head.pre'] + [name for level in levels for name in (level, level + '.carafe',
                                                                          level + '.dysampler')]
    head += ['decode_head.align', 'decode_head.offset_learning']
    inference, train = saved['inference']['stages'], saved['train']['stages']
    assert list(inference) == ['preprocess', 'backbone', *head, 'resize', 'argmax']
    assert list(train) == ['preprocess', 'backbone', *head, 'loss', 'optimizer']
    for level in levels:   # nested intervals: true of every run, so of the medians
        assert inference[level + '.carafe'] + inference[level + '.dysampler'] <= inference[level]
    assert all(value > 0 for value in [*inference.values(), *train.values()])


def test_benchmark_default_shapes():
    tool = load_tool('benchmark')
    cfg = Config.fromfile(os.path.join(os.path.dirname(CONFIG), '..', '..', '..', 'project', 'offseg', 'tiny',
                                       'offset_learning_tiny_512x512_ade_160k.py'))
    assert tool.default_test_shape(cfg)[0] == (512, 512)
    assert tool.default_crop_shape(cfg, None)[0] == (512, 512)
    cfg.test_dataloader.dataset.pipeline[1] = dict(type='Resize', scale=(640, 480), keep_ratio=False)
    cfg.val_dataloader.dataset.pipeline[1] = dict(type='Resize', scale=(640, 480), keep_ratio=False)
    assert tool.default_test_shape(cfg)[0] == (480, 640)   # scale is (w, h)


# ------------------------------------------------------------------------- print_config.py

def test_print_config_reparses_to_the_same_values(tmp_path, capsys):
    tool = load_tool('print_config')
    options = ['train_dataloader.batch_size=3', "model.test_cfg.mode='whole'"]
    assert tool.main([CONFIG, '--cfg-options', *options]) == 0
    text = capsys.readouterr().out
    dumped = tmp_path / 'resolved.py'
    dumped.write_text(text)
    expected = Config.fromfile(CONFIG, options)
    assert text == expected.pretty_text
    again = Config.fromfile(str(dumped))
    assert again.to_dict() == expected.to_dict()
    assert again.train_dataloader.batch_size == 3 and again.model.test_cfg.mode == 'whole'
    assert again.crop_size == (64, 64)                    # tuples stay tuples
    assert tool.main([CONFIG, '--cfg-options', 'model.no_such_key=1']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: --cfg-options model.no_such_key') and err.count('\n') == 1


# ------------------------------------------------------------------------- analyze_logs.py on a real log

def test_analyze_logs_on_a_training_run(trained, tmp_path, capsys):
    work, _ = trained
    out = str(tmp_path / 'curves.png')
    tool = load_tool('analyze_logs')
    assert tool.main([work, '--out', out]) == 0
    printed = capsys.readouterr().out
    assert re.search(r'last loss \d+\.\d+ at iter 2, best mIoU \d+\.\d+ at iter 2', printed), printed
    image = _png(out)
    assert image.shape[:2] == (3 * tool.PANEL_SIZE[1], tool.PANEL_SIZE[0])   # loss, lr and mIoU panels
