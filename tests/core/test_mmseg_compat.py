"""mmsegmentation 1.x runtime keys: each honoured (mapped to a flat key), accepted with a note, or rejected.

The expectations are mmengine's documented meanings: ``IterBasedTrainLoop(max_iters,
val_interval=1000)``, ``LoggerHook(interval)``, ``CheckpointHook(interval, max_keep_ckpts,
save_best)``, ``randomness=dict(seed)``, ``resume=True`` continuing the latest checkpoint.
"""
import logging
import textwrap

import pytest

from jseg.config import Config, ConfigError
from jseg.config.mmseg_compat import resolve_runtime_keys

# mmseg 1.x's configs/_base_/default_runtime.py and schedules/schedule_160k.py, as written there.
MMSEG_RUNTIME = """
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
"""


def load(tmp_path, text, base=MMSEG_RUNTIME, options=None):
    (tmp_path / 'runtime.py').write_text(textwrap.dedent(base))
    path = tmp_path / 'exp.py'
    path.write_text("_base_ = ['runtime.py']\n" + textwrap.dedent(text))
    return Config.fromfile(str(path), options)


def resolved(tmp_path, text, **kwargs):
    cfg = load(tmp_path, text, **kwargs)
    notes = resolve_runtime_keys(cfg)
    return cfg, notes


def rejected(tmp_path, text, match, **kwargs):
    cfg = load(tmp_path, text, **kwargs)
    with pytest.raises(ConfigError, match=match):
        resolve_runtime_keys(cfg)


def test_mmseg_default_runtime_maps_to_flat_keys(tmp_path):
    cfg, notes = resolved(tmp_path, 'model = dict(type="EncoderDecoder")\n')
    assert (cfg.max_iters, cfg.eval_interval, cfg.log_interval, cfg.checkpoint_interval) == (160000, 16000, 50,
                                                                                             16000)
    # env_cfg and visualizer do nothing in jseg: said once each, nothing else
    assert len(notes) == 2 and notes[0].startswith('env_cfg') and notes[1].startswith('visualizer')


def test_train_cfg_overrides_and_default_val_interval(tmp_path):
    cfg, _ = resolved(tmp_path, "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=40000)\n")
    assert cfg.max_iters == 40000 and cfg.eval_interval == 1000  # mmengine's default val_interval
    cfg, _ = resolved(tmp_path, '', options=['train_cfg.max_iters=8', 'train_cfg.val_interval=4'])
    assert (cfg.max_iters, cfg.eval_interval) == (8, 4)


def test_checkpoint_hook_keys(tmp_path):
    cfg, _ = resolved(tmp_path, "default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=3, "
                                "save_best='mIoU'), logger=dict(interval=10))\n")
    assert (cfg.checkpoint_interval, cfg.max_keep_ckpts, cfg.save_best, cfg.log_interval) == (2000, 3, 'mIoU', 10)


def test_both_forms_agreeing_pass_and_disagreeing_stop(tmp_path):
    cfg, _ = resolved(tmp_path, 'max_iters = 160000\nlog_interval = 50\n')
    assert cfg.max_iters == 160000
    rejected(tmp_path, 'max_iters = 1000\n', r'train_cfg.max_iters=160000 disagrees with max_iters=1000')
    rejected(tmp_path, 'eval_interval = 10\n', r'train_cfg.val_interval=16000 disagrees with eval_interval=10')
    rejected(tmp_path, 'checkpoint_interval = 7\n', r'default_hooks.checkpoint.interval=16000 disagrees')
    rejected(tmp_path, 'log_interval = 7\n', r'default_hooks.logger.interval=50 disagrees with log_interval=7')
    rejected(tmp_path, "default_hooks = dict(checkpoint=dict(save_best='mDice'))\nsave_best = 'mIoU'\n",
             'save_best')


def test_randomness_seed_and_rejections(tmp_path):
    cfg, _ = resolved(tmp_path, 'randomness = dict(seed=7)\n')
    assert cfg.seed == 7
    rejected(tmp_path, 'randomness = dict(seed=7)\nseed = 3\n', 'randomness.seed=7 disagrees with seed=3')
    rejected(tmp_path, 'randomness = dict(seed=1, deterministic=True)\n', 'randomness.deterministic')
    rejected(tmp_path, 'randomness = dict(seed=1, diff_rank_seed=True)\n', 'randomness.diff_rank_seed')


@pytest.mark.parametrize('text, match', [
    ("train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=12)\n", 'EpochBasedTrainLoop'),
    ("train_cfg = dict(val_begin=5)\n", 'train_cfg.val_begin'),
    ("train_cfg = dict(dynamic_intervals=[(10, 2)])\n", 'train_cfg: dynamic_intervals'),
    ("val_cfg = dict(fp16=True)\n", 'val_cfg.fp16'),
    ("test_cfg = dict(type='MyLoop')\n", "test_cfg.type='MyLoop'"),
    ("default_hooks = dict(checkpoint=dict(by_epoch=True))\n", 'by_epoch'),
    ("default_hooks = dict(checkpoint=dict(save_best='auto'))\n", "save_best='auto'"),
    ("default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='less'))\n", 'rule'),
    ("default_hooks = dict(checkpoint=dict(out_dir='/x'))\n", 'default_hooks.checkpoint: out_dir'),
    ("default_hooks = dict(loger=dict(type='LoggerHook'))\n", "default_hooks.loger.*did you mean 'logger'"),
    ("default_hooks = dict(visualization=dict(draw=True))\n", 'visualization.draw'),
    ("log_processor = dict(by_epoch=True)\n", 'log_processor.by_epoch'),
    ("env_cfg = dict(cudnn_benchmark=True, cuda_graph=True)\n", 'env_cfg: cuda_graph'),
    ("custom_imports = dict(imports=['my_project.models'])\n", 'my_project.models'),
    ("default_scope = 'mmdet'\n", 'default_scope'),
    ("log_level = 'LOUD'\n", 'log_level'),
    ("auto_scale_lr = dict(enable=True, base_batch_size=16)\n", 'auto_scale_lr.enable'),
    ("optim_wrapper = dict(type='AmpOptimWrapper')\n", 'AmpOptimWrapper.*float32'),
    ("optim_wrapper = dict(loss_scale='dynamic')\n", 'optim_wrapper.loss_scale'),
    ("optim_wrapper = dict(dtype='bfloat16')\n", 'optim_wrapper.dtype'),
    ("optim_wrapper = dict(accumulative_counts=4)\n", 'accumulative_counts'),
])
def test_unsupported_settings_name_the_key(tmp_path, text, match):
    rejected(tmp_path, text, match)


def test_custom_imports_of_openmmlab_modules_are_noted(tmp_path):
    _, notes = resolved(tmp_path, "custom_imports = dict(imports=['mmseg.models', 'mmdet.models'], "
                                  "allow_failed_imports=False)\n")
    assert any(n.startswith('custom_imports') and 'mmdet.models' in n for n in notes)


def test_unknown_top_level_key_names_the_closest(tmp_path):
    rejected(tmp_path, 'max_iter = 1000\n', "'max_iter' is not used by jseg; did you mean 'max_iters'")
    rejected(tmp_path, 'randomnes = dict(seed=0)\n', "did you mean 'randomness'")
    rejected(tmp_path, '', "'extra_key'", options=['+extra_key=1'])


def test_helper_variables_read_by_a_config_pass(tmp_path):
    cfg, _ = resolved(tmp_path, 'img_scale = (2048, 512)\nmodel = dict(test_cfg=dict(size=img_scale))\n')
    assert cfg.img_scale == (2048, 512)
    # 'optimizer' of mmseg's schedule files is read by optim_wrapper there
    assert cfg.optimizer['type'] == 'SGD'


def test_runner_honours_keys_and_logs_notes_once(tmp_path, caplog):
    from jseg.runner.runner import Runner
    cfg = load(tmp_path, "resume = True\nlog_level = 'WARNING'\n")
    runner = Runner(cfg, work_dir=str(tmp_path / 'work'))
    assert runner.resume_from == 'auto' and runner.load_from is None  # mmengine: continue the latest
    assert runner.logger.level == logging.WARNING
    cfg = load(tmp_path, "resume = True\nload_from = 'a.npz'\n")
    with caplog.at_level(logging.INFO, logger='jseg'):
        logger = logging.getLogger('jseg')
        logger.propagate = True
        try:
            runner = Runner(cfg, work_dir=str(tmp_path / 'work'))
        finally:
            logger.propagate = False
    assert runner.resume_from == 'a.npz' and runner.load_from is None
    assert sum('env_cfg: accepted, no effect' in r.message for r in caplog.records) == 1


def test_batch_size_is_per_process_in_the_mmseg_form(tmp_path, monkeypatch):
    import jseg.datasets
    import jseg.runner.runner as runner_module
    monkeypatch.setattr(jseg.datasets, 'build_dataloader', lambda cfg, **kw: cfg)  # the loader config it gets
    monkeypatch.setattr(runner_module, 'get_world_size', lambda: 8)
    loaders = "train_dataloader = dict(batch_size=2, dataset=dict())\nval_dataloader = dict(batch_size=1)\n"
    cfg = load(tmp_path, loaders)
    runner = runner_module.Runner(cfg, work_dir=str(tmp_path / 'work'))
    assert cfg.batch_size_per_process is True
    assert runner.build_dataloader('train_dataloader', training=True)['batch_size'] == 16  # 2 x 8 processes
    assert runner.build_dataloader('val_dataloader', training=False)['batch_size'] == 1
    # jseg's flat form: the global batch as written
    cfg = load(tmp_path, loaders + 'max_iters = 10\n', base='')
    runner = runner_module.Runner(cfg, work_dir=str(tmp_path / 'work'))
    assert runner.build_dataloader('train_dataloader', training=True)['batch_size'] == 2


def test_data_root_option_reaches_every_dataloader(tmp_path):
    from jseg.cli import load_config
    (tmp_path / 'runtime.py').write_text('')
    path = tmp_path / 'exp.py'
    path.write_text("data_root = 'data/ade'\nds = dict(type='X', data_root=data_root)\n"
                    "train_dataloader = dict(dataset=ds)\nval_dataloader = dict(dataset=ds)\n"
                    "test_dataloader = val_dataloader\n")
    cfg = load_config(str(path), data_root='/data/ADE')
    assert [cfg[k]['dataset']['data_root'] for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')] \
        == ['/data/ADE'] * 3
