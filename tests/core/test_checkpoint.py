"""jseg checkpoints: atomic, code-free round trip, key reports, clear errors."""
import json
import os

import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.runner.checkpoint import (CheckpointError, load_checkpoint, load_state_dict, read_checkpoint,
                                    save_checkpoint)


class Tiny(nn.Module):
    def __init__(self, out=3):
        self.conv = nn.Conv2d(2, out, 3)
        self.head = nn.Linear(out, 2)

    def execute(self, x):
        return x


def test_round_trip_restores_every_tensor_and_meta(tmp_path):
    src, dst = Tiny(), Tiny()
    path = str(tmp_path / 'ckpt.npz')
    opt_state = {'exp_avg': {'conv.weight': np.ones((3, 2, 3, 3), np.float32)}}
    save_checkpoint(path, src.state_dict(), dict(iteration=7, note='x'), opt_state,
                    {'rng': np.arange(4, dtype=np.uint32)})
    arrays, meta = read_checkpoint(path)
    assert meta['iteration'] == 7 and meta['format'] == 'jseg-checkpoint'
    np.testing.assert_array_equal(arrays['optimizer/exp_avg/conv.weight'], 1)
    np.testing.assert_array_equal(arrays['extra/rng'], np.arange(4))
    report, _ = load_checkpoint(dst, path, strict=True)
    assert report.ok and len(report.loaded) == 4
    for name, value in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[name].numpy(), value.numpy())
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]  # no temporary left


def test_report_names_missing_unexpected_and_mismatched():
    model = Tiny()
    state = {k: v.numpy() for k, v in Tiny(out=4).state_dict().items()}
    state['extra.weight'] = np.zeros(2, np.float32)
    del state['head.bias']
    state['bn.num_batches_tracked'] = np.array(3)  # PyTorch counter: ignored silently
    report = load_state_dict(model, state)
    assert report.missing == ['head.bias']
    assert report.unexpected == ['extra.weight']
    assert {m[0] for m in report.mismatched} == {'conv.weight', 'conv.bias', 'head.weight'}
    assert 'shape mismatch' in report.summary()
    with pytest.raises(CheckpointError, match='head.bias'):
        load_state_dict(model, state, strict=True)


def test_prefix_selects_a_submodule(tmp_path):
    class Whole(nn.Module):
        def __init__(self):
            self.backbone = Tiny()

    whole, part = Whole(), Tiny()
    path = str(tmp_path / 'w.npz')
    save_checkpoint(path, whole.state_dict(), {})
    report, _ = load_checkpoint(part, path, prefix='backbone', strict=True)
    assert report.ok
    np.testing.assert_array_equal(part.conv.weight.numpy(), whole.backbone.conv.weight.numpy())


def test_unreadable_files_give_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        read_checkpoint(str(tmp_path / 'missing.npz'))
    path = tmp_path / 'cut.npz'
    save_checkpoint(str(path), Tiny().state_dict(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='cut.npz'):
        read_checkpoint(str(path))
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='junk.pth'):
        read_checkpoint(str(junk))


def test_object_arrays_are_refused(tmp_path):
    path = str(tmp_path / 'evil.npz')
    meta = np.frombuffer(json.dumps({'format': 'jseg-checkpoint'}).encode(), np.uint8)
    np.savez(path, __meta__=meta, **{'model/x': np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match='evil.npz'):
        read_checkpoint(path)


def test_integer_and_double_buffers_keep_their_dtype(tmp_path):
    class WithTables(nn.Module):
        def __init__(self):
            self.index = jt.zeros((3,), dtype='int64').stop_grad()
            self.table = jt.zeros((2,), dtype='float64')

    src = {'index': np.array([2 ** 40, 1, 2], np.int64), 'table': np.array([1 / 3, 2], np.float64)}
    model = WithTables()
    assert load_state_dict(model, src).ok
    assert str(model.index.dtype) == 'int64' and model.index.numpy()[0] == 2 ** 40
    assert str(model.table.dtype) == 'float64' and model.table.numpy()[0] == 1 / 3


# ---------------------------------------------------------------------------------------------
# the best checkpoint named by a checkpoint's metadata


def _runner_at(tmp_path, work):
    from jseg.config import Config
    from jseg.runner import Runner
    cfg_file = tmp_path / 'best_cfg.py'
    cfg_file.write_text("save_best = 'mIoU'\nmodel = dict(type='Tiny')\n")
    runner = Runner(Config.fromfile(str(cfg_file)), work_dir=str(work))
    runner.model = Tiny()
    return runner


def test_best_record_from_metadata_never_removes_a_file_outside_the_work_dir(tmp_path):
    """Issue 11.1: a crafted (or another run's) best path in the metadata is never deleted."""
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    other_run = tmp_path / 'other_run'
    other_run.mkdir()
    other_best = other_run / 'best_mIoU_iter_2.npz'
    other_best.write_bytes(b'another run')
    work = tmp_path / 'work'
    for recorded in (str(victim), str(other_best), '../victim.txt', 'best_mIoU_iter_2.npz/../../victim.txt'):
        crafted = str(tmp_path / 'crafted.npz')
        save_checkpoint(crafted, Tiny().state_dict(),
                        dict(best=dict(metric='mIoU', value=0.1, iteration=2, path=recorded)))
        runner = _runner_at(tmp_path, work)
        runner.best = read_checkpoint(crafted)[1]['best']  # what resuming from it sets
        runner.iteration = 4
        runner._track_best({'mIoU': 0.5})
        assert victim.read_text() == 'precious' and other_best.read_bytes() == b'another run', recorded
        assert runner.best['path'] == 'best_mIoU_iter_4.npz'  # recorded relative to the work dir
        assert (work / 'best_mIoU_iter_4.npz').is_file()


def test_best_checkpoint_written_by_the_runner_is_replaced(tmp_path):
    work = tmp_path / 'work'
    runner = _runner_at(tmp_path, work)
    runner.iteration = 2
    runner._track_best({'mIoU': 0.2})
    runner.iteration = 4
    runner._track_best({'mIoU': 0.1})  # worse: kept
    assert sorted(os.listdir(work / 'logs')) and (work / 'best_mIoU_iter_2.npz').is_file()
    runner.iteration = 6
    runner._track_best({'mIoU': 0.3})
    assert not (work / 'best_mIoU_iter_2.npz').exists() and (work / 'best_mIoU_iter_6.npz').is_file()
    assert runner.best == dict(metric='mIoU', value=0.3, iteration=6, path='best_mIoU_iter_6.npz')


# ---------------------------------------------------------------------------------------------
# evaluation loads need every model weight


def test_evaluation_load_stops_when_the_checkpoint_lacks_model_weights():
    """Issue 11.4: a checkpoint with none (or only some) of the model's weights is an error, by name."""
    model = Tiny()
    foreign = {'encoder.layer.weight': np.zeros((3, 3), np.float32)}
    with pytest.raises(CheckpointError, match=r'lacks 4 of the model\'s 4 weights.*conv\.bias, conv\.weight, '
                                              r'head\.bias, head\.weight.*load_strict=False'):
        load_state_dict(model, foreign, require_all=True)
    state = {k: v.numpy() for k, v in Tiny().state_dict().items()}
    partial = {k: v for k, v in state.items() if k != 'head.bias'}
    with pytest.raises(CheckpointError, match=r'lacks 1 .*: head\.bias;'):
        load_state_dict(model, partial, require_all=True)
    wrong_shape = dict(state, **{'head.weight': np.zeros((2, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r'lacks 1 .*: head\.weight;'):
        load_state_dict(model, wrong_shape, require_all=True)
    report = load_state_dict(model, partial, require_all=False)  # a partial load, asked for
    assert report.missing == ['head.bias'] and len(report.loaded) == 3
    extra = dict(state, **{'aux_head.weight': np.zeros(2, np.float32), 'bn.num_batches_tracked': np.array(1)})
    assert load_state_dict(model, extra, require_all=True).unexpected == ['aux_head.weight']  # reported only


def test_recomputed_buffers_are_not_required():
    class WithIndexTable(Tiny):
        def __init__(self):
            super().__init__()
            self.attention_bias_idxs = jt.array(np.arange(4).reshape(2, 2)).stop_grad()

    state = {k: v.numpy() for k, v in Tiny().state_dict().items()}
    report = load_state_dict(WithIndexTable(), state, require_all=True)
    assert report.missing == ['attention_bias_idxs'] and len(report.loaded) == 4
