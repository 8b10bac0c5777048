"""Collation, reproducibility across worker counts, MPI ranks and resumes, epoch handling."""
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jseg.datasets import DataError, DemoShapesDataset, build_dataloader, collate_samples
from jseg.datasets.loader import epoch_order

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 48), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(40, 40), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]


@pytest.fixture(scope='module')
def train_set(demo_root):
    return DemoShapesDataset(data_root=demo_root, pipeline=TRAIN_PIPELINE,
                             data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'))


def fingerprint(batches):
    """Everything a batch holds, hashed per batch."""
    out = []
    for b in batches:
        metas = tuple((m['sample_idx'], m['flip'], m['img_shape'], m['scale_factor']) for m in b['metas'])
        out.append((b['inputs'].shape, hash(b['inputs'].tobytes()), hash(b['gt_seg'].tobytes()), metas))
    return out


def run_epochs(loader, epochs):
    return [fingerprint(loader) for _ in range(epochs)]


# ------------------------------------------------------------------------------------ collate

def sample(h, w, label=True, value=1):
    s = {'inputs': np.full((3, h, w), value, np.uint8), 'meta': {'img_shape': (h, w), 'pad_shape': (h, w)}}
    if label:
        s['gt_seg'] = np.full((h, w), value, np.uint8)
    return s


def test_collate_pads_to_the_largest_sample():
    batch = collate_samples([sample(4, 6, value=7), sample(5, 3, value=9)])
    assert batch['inputs'].shape == (2, 3, 5, 6) and batch['inputs'].dtype == np.uint8
    assert (batch['inputs'][0, :, :4, :6] == 7).all() and (batch['inputs'][0, :, 4:] == 0).all()
    assert (batch['gt_seg'][0, 4:] == 255).all() and (batch['gt_seg'][1, :, 3:] == 255).all()
    assert [m['img_shape'] for m in batch['metas']] == [(4, 6), (5, 3)]
    assert [m['pad_shape'] for m in batch['metas']] == [(5, 6), (5, 6)]


def test_collate_pad_size_and_missing_labels():
    batch = collate_samples([sample(4, 6, label=False)], pad_size=(8, 8))
    assert batch['inputs'].shape == (1, 3, 8, 8) and 'gt_seg' not in batch
    mixed = collate_samples([sample(4, 4, label=False), sample(4, 4)])
    assert (mixed['gt_seg'][0] == 255).all() and (mixed['gt_seg'][1] == 1).all()


def test_collate_views():
    batch = collate_samples([[sample(4, 4), sample(8, 8)]])
    assert [v['inputs'].shape for v in batch['views']] == [(1, 3, 4, 4), (1, 3, 8, 8)]


# ----------------------------------------------------------------------------- determinism

def test_same_batches_with_0_and_2_workers(train_set):
    seen = {}
    for workers in (0, 2):
        loader = build_dataloader(train_set, batch_size=4, num_workers=workers, shuffle=True, seed=7)
        seen[workers] = run_epochs(loader, 2)
        loader.close()
    assert seen[0] == seen[2]
    assert len(seen[0][0]) == 3 and seen[0][0] != seen[0][1]   # 12 samples / 4; epochs differ
    assert all(shape == (4, 3, 40, 40) for shape, *_ in seen[0][0])  # padded to the crop size


@pytest.mark.parametrize('workers', [0, 2])
def test_resume_in_the_middle_of_an_epoch(train_set, workers):
    full = build_dataloader(train_set, batch_size=4, num_workers=0, shuffle=True, seed=1)
    reference = run_epochs(full, 3)
    resumed = build_dataloader(train_set, batch_size=4, num_workers=workers, shuffle=True, seed=1)
    resumed.set_epoch(1)
    resumed.set_start_iter(2)
    first = fingerprint(resumed)
    assert first == reference[1][2:]
    assert resumed.epoch == 2 and fingerprint(resumed) == reference[2]  # then whole epochs again
    resumed.close()


def test_runner_style_set_epoch_with_start_batch(train_set):
    loader = build_dataloader(train_set, batch_size=4, shuffle=True, seed=1)
    reference = run_epochs(loader, 2)
    loader.set_epoch(1, start_batch=1)
    assert fingerprint(loader) == reference[1][1:]
    state = dict(epoch=1, start_iter=2, seed=1)
    loader.load_state_dict(state)
    assert loader.state_dict() == state and fingerprint(loader) == reference[1][2:]


def test_order_depends_on_seed_and_epoch_only():
    a = epoch_order(50, seed=3, epoch=4, shuffle=True)
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=4, shuffle=True))
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=5, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=4, shuffle=True))
    assert np.array_equal(epoch_order(5, 0, 9, shuffle=False), np.arange(5))


def test_stopping_early_then_iterating_again(train_set):
    reference = run_epochs(build_dataloader(train_set, batch_size=4, shuffle=True, seed=2), 2)
    loader = build_dataloader(train_set, batch_size=4, num_workers=2, shuffle=True, seed=2)
    it = iter(loader)
    next(it)
    it.close()                                # abandoned after one batch: workers are reset
    loader.set_epoch(1)
    assert fingerprint(loader) == reference[1]
    loader.close()


def test_lengths_and_drop_last(train_set):
    assert len(build_dataloader(train_set, batch_size=5, shuffle=True)) == 2          # drop_last follows shuffle
    evaluation = build_dataloader(train_set, batch_size=5)
    assert len(evaluation) == 3 and [len(b['metas']) for b in evaluation] == [5, 5, 2]
    with pytest.raises(ValueError):
        evaluation.set_start_iter(4)


def test_eval_batches_keep_native_size_and_tuple_metas(demo_root):
    ds = DemoShapesDataset(data_root=demo_root, data_prefix=dict(img_path='images/validation',
                                                                 seg_map_path='annotations/validation'),
                           pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                     dict(type='PackSegInputs')])
    loader = build_dataloader(dict(batch_size=1, num_workers=2, persistent_workers=True,
                                   sampler=dict(type='DefaultSampler', shuffle=False), dataset=ds))
    batches = list(loader)
    assert len(batches) == 4 and not loader.shuffle
    for i, batch in enumerate(batches):
        meta = batch['metas'][0]
        assert batch['inputs'].shape[2:] == meta['ori_shape'] == meta['img_shape'] == meta['pad_shape']
        assert isinstance(meta['ori_shape'], tuple) and isinstance(meta['scale_factor'], tuple)
        assert meta['sample_idx'] == i and meta['flip'] is False
    loader.close()


MPI_SCRIPT = '''
import hashlib, json, sys
import jseg
import jittor as jt
from jseg.datasets import DemoShapesDataset, build_dataloader
pipeline = json.loads(sys.argv[2])
ds = DemoShapesDataset(data_root=sys.argv[1], pipeline=pipeline,
                       data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'))
loader = build_dataloader(ds, batch_size=4, num_workers=0, shuffle=True, seed=5)
loader.set_epoch(1)
loader.set_start_iter(1)
out = [[(m['sample_idx'], hashlib.md5(b['inputs'][i].tobytes()).hexdigest()) for i, m in enumerate(b['metas'])]
       for b in loader]
with open(sys.argv[3] + str(jt.rank), 'w') as f:  # not stdout: mpirun may interleave long lines
    json.dump(out, f)
'''


@pytest.mark.skipif(shutil.which('mpirun') is None, reason='needs Open MPI (mpirun)')
def test_mpi_ranks_share_each_batch_and_get_the_same_samples(train_set, demo_root, tmp_path):
    reference = build_dataloader(train_set, batch_size=4, shuffle=True, seed=5)
    reference.set_epoch(1)
    reference.set_start_iter(1)
    expected = [[(m['sample_idx'], hashlib.md5(b['inputs'][i].tobytes()).hexdigest())
                 for i, m in enumerate(b['metas'])] for b in reference]
    script = tmp_path / 'rank.py'
    script.write_text(MPI_SCRIPT)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    prefix = str(tmp_path / 'rank')
    done = subprocess.run(['mpirun', '-np', '2', sys.executable, str(script), demo_root, json.dumps(TRAIN_PIPELINE),
                           prefix], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    shares = []
    for rank in (0, 1):
        assert os.path.exists(prefix + str(rank)), \
            f'rank {rank} wrote nothing: ' + done.stdout[-1000:] + done.stderr[-1000:]
        with open(prefix + str(rank)) as f:
            shares.append(json.load(f))
    merged = [[tuple(s) for s in a + b] for a, b in zip(*shares)]
    assert merged == expected and len(merged) == 2  # each rank half of every global batch


def test_buffer_sized_from_the_batch_and_overflow_is_reported(train_set):
    from jseg.datasets.loader import _auto_buffer_size
    assert _auto_buffer_size(16, (512, 512), None) == 64 << 20       # 16 x 512 x 512 x 4 bytes, three times
    assert _auto_buffer_size(8, (1024, 1024), None) == 128 << 20
    assert _auto_buffer_size(1, None, None) == 512 << 20             # unbounded evaluation batches
    loader = build_dataloader(train_set, batch_size=2, num_workers=1, pad_size=(1024, 1024), buffer_size=4 << 20)
    with pytest.raises(DataError, match='buffer_size'):
        next(iter(loader))
    loader.close()
