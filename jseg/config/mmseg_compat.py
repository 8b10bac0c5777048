"""mmsegmentation 1.x / mmengine runtime keys, read into the runner's flat keys.

A config ported from mmsegmentation 1.x states its runtime in mmengine's form
(``train_cfg=dict(type='IterBasedTrainLoop', ...)``, ``default_hooks``,
``randomness``, ...); jseg's own configs use flat keys (``max_iters``,
``eval_interval``, ...). :func:`resolve_runtime_keys` reads the mmengine form into
the flat keys, so both forms drive the same runner. Every mmengine key is

* honoured: mapped to a flat key; giving both forms with different values is
  an error naming both;
* accepted with no effect in jseg (``visualizer``, ``env_cfg``, ...): listed in
  the returned notes, which the runner logs once; or
* rejected: a :class:`ConfigError` naming the key, when it asks for something
  jseg does not do (epoch-based loops, mixed precision, deterministic mode, ...).

A top-level key that is neither known nor read by a config file as a helper
variable (``crop_size`` in ``dict(crop_size=crop_size)``) is an error naming the
closest known key, so a misspelt ``max_iter=1000`` cannot pass silently.

============================================  ==========================
mmengine form                                 flat key
============================================  ==========================
``train_cfg.max_iters``                       ``max_iters``
``train_cfg.val_interval`` (1000)             ``eval_interval``
``default_hooks.logger.interval``             ``log_interval``
``default_hooks.checkpoint.interval``         ``checkpoint_interval``
``default_hooks.checkpoint.max_keep_ckpts``   ``max_keep_ckpts``
``default_hooks.checkpoint.save_best``        ``save_best``
``randomness.seed``                           ``seed``
============================================  ==========================

The mmseg form (``train_cfg``) also sets ``batch_size_per_process=True`` unless the
config sets it: ``train_dataloader.batch_size`` is then per process, as in mmseg
(2 images x 8 GPUs = 16), where jseg's own configs state the global batch.
"""
import difflib

from .config import ConfigError

__all__ = ['KNOWN_TOP_LEVEL_KEYS', 'resolve_runtime_keys']

# Keys the runner and the tools read (flat runtime keys, data, model, optimizer).
JSEG_KEYS = frozenset({
    'model', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator',
    'optim_wrapper', 'param_scheduler', 'max_iters', 'eval_interval', 'checkpoint_interval', 'log_interval',
    'max_keep_ckpts', 'save_best', 'custom_hooks', 'load_from', 'load_strict', 'use_fused_ops', 'seed',
    'tta_model', 'tta_pipeline', 'train_pipeline', 'test_pipeline', 'dataset_type', 'data_root', 'crop_size',
    'data_preprocessor', 'norm_cfg', 'batch_size_per_process',
})
# mmengine runtime keys this module reads.
MMENGINE_KEYS = frozenset({
    'train_cfg', 'val_cfg', 'test_cfg', 'default_hooks', 'randomness', 'env_cfg', 'visualizer', 'vis_backends',
    'log_processor', 'custom_imports', 'default_scope', 'log_level', 'resume', 'find_unused_parameters',
    'launcher', 'auto_scale_lr',
})
KNOWN_TOP_LEVEL_KEYS = JSEG_KEYS | MMENGINE_KEYS

# Packages whose modules an mmseg config imports for their registries: jseg has its own.
_OPENMMLAB_PACKAGES = ('mmseg', 'mmdet', 'mmcv', 'mmengine', 'mmpretrain', 'mmcls')
_LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
_MMENGINE_VAL_INTERVAL = 1000  # IterBasedTrainLoop's default val_interval


def _type_of(cfg):
    return cfg.get('type', None) if isinstance(cfg, dict) else None


def _check_keys(where, cfg, allowed):
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f'{where}: {", ".join(unknown)} not supported by jseg '
                          f'(supported: {", ".join(sorted(allowed))})')


class _Resolver:
    """Collects the flat values the mmengine form implies and checks them against the flat form."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.values = {}  # flat key -> (value, where it came from)
        self.notes = []

    def set(self, flat_key, value, source):
        if flat_key in self.cfg and self.cfg[flat_key] != value:
            raise ConfigError(f'{source}={value!r} disagrees with {flat_key}={self.cfg[flat_key]!r}; '
                              f'give one of them, or the same value in both')
        self.values[flat_key] = (value, source)

    def note(self, key, why):
        self.notes.append(f'{key}: accepted, no effect in jseg ({why})')

    def require(self, key, value, expected, why):
        if value != expected:
            raise ConfigError(f'{key}={value!r} is not supported: {why}')

    # -------------------------------------------------------------- loops

    def train_cfg(self, loop):
        if not loop:
            return
        if _type_of(loop) != 'IterBasedTrainLoop':
            raise ConfigError(f"train_cfg.type={loop.get('type')!r} is not supported: jseg trains by "
                              f"iterations (train_cfg=dict(type='IterBasedTrainLoop', max_iters=..., "
                              f"val_interval=...))")
        _check_keys('train_cfg', loop, ('type', 'max_iters', 'val_interval', 'val_begin'))
        self.require('train_cfg.val_begin', loop.get('val_begin', 1), 1,
                     'jseg validates from the first interval on')
        if 'max_iters' not in loop:
            raise ConfigError('train_cfg: IterBasedTrainLoop needs max_iters')
        self.set('max_iters', int(loop['max_iters']), 'train_cfg.max_iters')
        if 'batch_size_per_process' not in self.cfg:  # mmseg's rule: batch_size is per GPU
            self.values['batch_size_per_process'] = (True, 'train_cfg')
        if 'val_interval' in loop or 'eval_interval' not in self.cfg:
            self.set('eval_interval', int(loop.get('val_interval', _MMENGINE_VAL_INTERVAL)),
                     'train_cfg.val_interval')

    def eval_loop(self, key, loop, loop_type):
        if not loop:
            return
        if _type_of(loop) != loop_type:
            raise ConfigError(f"{key}.type={loop.get('type')!r} is not supported (use type='{loop_type}')")
        _check_keys(key, loop, ('type', 'fp16'))
        self.require(f'{key}.fp16', loop.get('fp16', False), False, 'jseg evaluates in float32')

    # -------------------------------------------------------------- hooks

    def default_hooks(self, hooks):
        handlers = dict(timer=self._timer_hook, logger=self._logger_hook,
                        param_scheduler=self._param_scheduler_hook, checkpoint=self._checkpoint_hook,
                        sampler_seed=self._sampler_seed_hook, visualization=self._visualization_hook)
        for name, hook in (hooks or {}).items():
            if name not in handlers:
                raise ConfigError(f'default_hooks.{name} is not supported{_hint(name, handlers)} '
                                  f'(jseg knows {", ".join(handlers)}; add behaviour with custom_hooks)')
            if hook is not None:
                handlers[name](f'default_hooks.{name}', dict(hook))

    def _expect_type(self, where, hook, hook_type):
        if hook.get('type') != hook_type:
            raise ConfigError(f'{where}.type={hook.get("type")!r} is not supported (use {hook_type!r})')

    def _timer_hook(self, where, hook):
        self._expect_type(where, hook, 'IterTimerHook')  # jseg always times iterations
        _check_keys(where, hook, ('type',))

    def _param_scheduler_hook(self, where, hook):
        self._expect_type(where, hook, 'ParamSchedulerHook')  # jseg steps param_scheduler every iteration
        _check_keys(where, hook, ('type',))

    def _sampler_seed_hook(self, where, hook):
        self._expect_type(where, hook, 'DistSamplerSeedHook')  # jseg reshuffles every epoch
        _check_keys(where, hook, ('type',))

    def _logger_hook(self, where, hook):
        self._expect_type(where, hook, 'LoggerHook')
        _check_keys(where, hook, ('type', 'interval', 'log_metric_by_epoch'))
        self.require(f'{where}.log_metric_by_epoch', hook.get('log_metric_by_epoch', False), False,
                     'jseg logs validation metrics by iteration')
        if 'interval' in hook:
            self.set('log_interval', int(hook['interval']), f'{where}.interval')

    def _checkpoint_hook(self, where, hook):
        self._expect_type(where, hook, 'CheckpointHook')
        _check_keys(where, hook, ('type', 'by_epoch', 'interval', 'max_keep_ckpts', 'save_best', 'rule',
                                  'save_last'))
        self.require(f'{where}.by_epoch', hook.get('by_epoch', True), False,
                     'jseg saves checkpoints by iteration (by_epoch=False)')
        self.require(f'{where}.save_last', hook.get('save_last', True), True,
                     'jseg always saves the last iteration')
        if 'interval' in hook:
            self.set('checkpoint_interval', int(hook['interval']), f'{where}.interval')
        if 'max_keep_ckpts' in hook:
            self.set('max_keep_ckpts', int(hook['max_keep_ckpts']), f'{where}.max_keep_ckpts')
        if 'save_best' in hook:
            best = hook['save_best']
            if not (best is None or isinstance(best, str)) or best == 'auto':
                raise ConfigError(f'{where}.save_best={best!r} is not supported: name one metric, '
                                  f"e.g. save_best='mIoU'")
            self.set('save_best', best, f'{where}.save_best')
        rule = hook.get('rule', 'greater')
        self.require(f'{where}.rule', rule, 'greater', 'jseg keeps the checkpoint with the greatest metric')

    def _visualization_hook(self, where, hook):
        self._expect_type(where, hook, 'SegVisualizationHook')
        _check_keys(where, hook, ('type', 'draw', 'interval', 'show', 'wait_time', 'backend_args'))
        self.require(f'{where}.draw', hook.get('draw', False), False,
                     'jseg draws predictions with --task=test (overlays) or tools/demo.py')
        self.require(f'{where}.show', hook.get('show', False), False, 'jseg shows no windows')

    # -------------------------------------------------------------- the rest

    def randomness(self, rnd):
        if not rnd:
            return
        _check_keys('randomness', rnd, ('seed', 'deterministic', 'diff_rank_seed'))
        self.require('randomness.deterministic', rnd.get('deterministic', False), False,
                     'Jittor has no deterministic mode')
        self.require('randomness.diff_rank_seed', rnd.get('diff_rank_seed', False), False,
                     'jseg derives per-process seeds from the one seed')
        if rnd.get('seed', None) is not None:
            self.set('seed', int(rnd['seed']), 'randomness.seed')

    def env_cfg(self, env):
        if not env:
            return
        _check_keys('env_cfg', env, ('cudnn_benchmark', 'mp_cfg', 'dist_cfg'))
        self.note('env_cfg', 'Jittor picks its kernels, data workers and MPI communication itself')

    def log_processor(self, proc):
        if not proc:
            return
        _check_keys('log_processor', proc, ('type', 'by_epoch', 'window_size'))
        self.require('log_processor.by_epoch', proc.get('by_epoch', True), False,
                     'jseg logs by iteration (by_epoch=False)')
        if 'window_size' in proc:
            self.note('log_processor.window_size', 'jseg averages over each log_interval')

    def custom_imports(self, imports):
        if not imports:
            return
        _check_keys('custom_imports', imports, ('imports', 'allow_failed_imports'))
        names = imports.get('imports', [])
        names = [names] if isinstance(names, str) else list(names)
        foreign = [n for n in names if n.split('.')[0] not in _OPENMMLAB_PACKAGES]
        if foreign:
            raise ConfigError(f'custom_imports: {", ".join(foreign)} cannot be imported by jseg; register '
                              f'the module with jseg.registry instead')
        self.note('custom_imports', f'{", ".join(names)} name OpenMMLab modules; jseg registers its own')

    def misc(self, cfg):
        scope = cfg.get('default_scope', None)
        if scope not in (None, 'mmseg'):
            raise ConfigError(f"default_scope={scope!r} is not supported (jseg's registry is mmseg's)")
        if 'visualizer' in cfg or 'vis_backends' in cfg:
            self.note('visualizer/vis_backends', 'jseg writes its own logs and test overlays')
        if cfg.get('find_unused_parameters', None) is not None:
            self.note('find_unused_parameters', 'MPI gradient averaging needs no unused-parameter search')
        launcher = cfg.get('launcher', None)
        if launcher not in (None, 'none', 'mpi'):
            raise ConfigError(f'launcher={launcher!r} is not supported: jseg runs several processes with mpirun')
        level = cfg.get('log_level', None)
        if level is not None and str(level).upper() not in _LOG_LEVELS:
            raise ConfigError(f'log_level={level!r}: use one of {", ".join(_LOG_LEVELS)}')
        scale = cfg.get('auto_scale_lr', None) or {}
        self.require('auto_scale_lr.enable', scale.get('enable', False), False,
                     'train_dataloader.batch_size and the learning rate are used as written')
        resume = cfg.get('resume', False)
        if not isinstance(resume, bool):
            raise ConfigError(f'resume={resume!r}: use True or False (give a checkpoint with --resume=PATH)')

    def optim_wrapper(self, wrapper):
        if not wrapper:
            return
        if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            raise ConfigError("optim_wrapper.type='AmpOptimWrapper' is not supported: jseg trains in "
                              "float32 (use type='OptimWrapper')")
        for key in ('loss_scale', 'dtype'):
            if key in wrapper:
                raise ConfigError(f'optim_wrapper.{key} is not supported: jseg trains in float32 '
                                  f'without loss scaling')
        self.require('optim_wrapper.accumulative_counts', wrapper.get('accumulative_counts', 1), 1,
                     'jseg takes one optimizer step per batch')


def _hint(key, known):
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


def check_top_level_keys(cfg):
    """Stop at a top-level key that is neither known nor read by a config file as a helper variable."""
    helpers = getattr(cfg, 'names_read', frozenset())
    for key in cfg:
        if key not in KNOWN_TOP_LEVEL_KEYS and key not in helpers:
            raise ConfigError(f'config key {key!r} is not used by jseg{_hint(key, KNOWN_TOP_LEVEL_KEYS)} '
                              f'(a helper variable must be read by the config that defines it)')


def resolve_runtime_keys(cfg):
    """Read ``cfg``'s mmengine runtime keys into its flat keys (in place).

    Returns:
        list[str]: notes on keys accepted with no effect (for the log, once).

    Raises:
        ConfigError: an unknown top-level key, an unsupported setting, or an
            mmengine key that disagrees with the flat key it maps to.
    """
    check_top_level_keys(cfg)
    resolver = _Resolver(cfg)
    resolver.train_cfg(cfg.get('train_cfg', None))
    resolver.eval_loop('val_cfg', cfg.get('val_cfg', None), 'ValLoop')
    resolver.eval_loop('test_cfg', cfg.get('test_cfg', None), 'TestLoop')
    resolver.default_hooks(cfg.get('default_hooks', None))
    resolver.randomness(cfg.get('randomness', None))
    resolver.env_cfg(cfg.get('env_cfg', None))
    resolver.log_processor(cfg.get('log_processor', None))
    resolver.custom_imports(cfg.get('custom_imports', None))
    resolver.optim_wrapper(cfg.get('optim_wrapper', None))
    resolver.misc(cfg)
    for key, (value, _) in resolver.values.items():
        cfg[key] = value
    return resolver.notes
