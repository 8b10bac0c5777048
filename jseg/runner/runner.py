"""The runner: iteration-based training, validation and testing from one Config value.

Call flow::

    Runner(cfg, work_dir=...).run('train')
        train():  build model -> init weights / load / resume -> optimizer, schedulers
                  for each iteration: batch -> model(batch, 'loss') -> backward -> clip -> step
                      -> schedulers.step() -> log every log_interval
                      -> validate every eval_interval -> checkpoint every checkpoint_interval
        val():    model + checkpoint -> metrics table (printed and saved as JSON)
        test():   model + checkpoint -> label PNG + colour overlay per image (+ metrics if labelled)

Runtime keys read from the config (defaults in parentheses): ``max_iters``,
``log_interval`` (50), ``eval_interval`` (max_iters), ``checkpoint_interval``
(max_iters), ``max_keep_ckpts`` (-1: keep all), ``save_best`` ('mIoU'),
``custom_hooks`` ([]), ``load_from`` (None), ``batch_size_per_process`` (False: the
training ``batch_size`` is the global batch), ``use_fused_ops`` (True: JIT operators for
CARAFE and the offset attention; False: their pure-Jittor compositions), ``load_strict`` (True:
``val`` and ``test`` stop when the checkpoint lacks a model weight; False: evaluate a partial
load). mmseg 1.x runtime keys (``train_cfg``, ``default_hooks``, ...) are first read into these
flat keys by :mod:`jseg.config.mmseg_compat`.
"""
import collections
import json
import logging
import os
import os.path as osp
import random
import re
import signal
import threading
import time

import jittor as jt
import numpy as np

from jseg.config import ConfigError
from jseg.config.mmseg_compat import resolve_runtime_keys
from jseg.ops import argmax, configure_fused_ops
from jseg.registry import HOOKS, METRICS, MODELS
from jseg.utils.dist import all_reduce_sum, barrier, broadcast_model, get_rank, get_world_size, is_main_process
from jseg.utils.fileio import atomic_write_text
from jseg.utils.logging import get_logger
from jseg.version import __version__

from .checkpoint import (CheckpointError, checkpoint_state_dict, load_checkpoint, load_state_dict, read_checkpoint,
                         save_checkpoint)
from .log_writer import LogWriter
from .lr_scheduler import build_schedulers
from .optim import build_optimizer

__all__ = ['Runner']

LAST_CHECKPOINT = 'last_checkpoint'


class Runner:
    """Runs one experiment described by ``cfg``.

    Args:
        cfg (Config): the resolved config.
        work_dir (str | None): output folder (default ``work_dirs/<config name>``).
        resume (str | None): checkpoint to continue from; ``'auto'`` takes the
            latest in ``work_dir``. For ``val``/``test`` it names the weights.
        load_from (str | None): weights only (jseg ``.npz`` or PyTorch ``.pth``).
        seed (int | None): global seed (default: ``cfg.seed`` or 0).
        save_dir (str | None): where ``test`` writes predictions.
    """

    def __init__(self, cfg, work_dir=None, resume=None, load_from=None, seed=None, save_dir=None):
        compat_notes = resolve_runtime_keys(cfg)  # mmengine's train_cfg, default_hooks, ... -> flat keys
        self.cfg = cfg
        self.work_dir = osp.abspath(work_dir or osp.join('work_dirs', cfg.name))
        self.resume_from = resume
        self.load_from = load_from or cfg.get('load_from', None)
        if resume is None and cfg.get('resume', False):  # mmengine: resume=True continues load_from or the latest
            self.resume_from, self.load_from = self.load_from or 'auto', None
        self.seed = int(seed if seed is not None else cfg.get('seed', 0) or 0)
        self.save_dir = save_dir
        self.timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
        self.iteration = 0
        self.model = None
        self.best = None  # dict(metric, value, iteration, path): path relative to work_dir
        log_file = osp.join(self.work_dir, 'logs', f'{self.timestamp}.log')
        if is_main_process():
            os.makedirs(osp.dirname(log_file), exist_ok=True)
        self.logger = get_logger(log_file if is_main_process() else None,
                                 getattr(logging, str(cfg.get('log_level', 'INFO')).upper()))
        for note in compat_notes:
            self.logger.info(note)

    # ------------------------------------------------------------------ entry points

    def run(self, task):
        tasks = {'train': self.train, 'val': self.val, 'test': self.test}
        if task not in tasks:
            raise ValueError(f'unknown task {task!r}; choose one of {sorted(tasks)}')
        return tasks[task]()

    def build_model(self):
        configure_fused_ops(self.cfg)  # a config may switch the JIT operators off (use_fused_ops=False)
        self.model = MODELS.build(self.cfg.model)
        return self.model

    # ------------------------------------------------------------------ training

    def train(self):
        cfg = self.cfg
        max_iters = int(cfg.max_iters)
        plan = _Plan(max_iters=max_iters, log=int(cfg.get('log_interval', 50)),
                     eval=int(cfg.get('eval_interval', max_iters) or max_iters),
                     checkpoint=int(cfg.get('checkpoint_interval', max_iters) or max_iters))
        self._set_seed(self.seed)
        self._dump_config()

        model = self.build_model()
        resume_path = self._resolve_resume()
        if resume_path is None:
            if hasattr(model, 'init_weights'):
                model.init_weights()
            if self.load_from:
                load_checkpoint(model, self.load_from, logger=self.logger)
        optimizer, clip_grad = build_optimizer(model, cfg.optim_wrapper)
        schedulers = build_schedulers(optimizer, cfg.get('param_scheduler', None))
        if resume_path is not None:
            self._resume(resume_path, model, optimizer, schedulers)
        broadcast_model(model)  # under MPI every rank starts from rank 0's weights
        self.optimizer, self.schedulers = optimizer, schedulers

        train_loader = self.build_dataloader('train_dataloader', training=True)
        val_loader = self.build_dataloader('val_dataloader', training=False) \
            if cfg.get('val_dataloader', None) else None
        self._check_save_best(val_loader)
        hooks = [HOOKS.build(h) for h in cfg.get('custom_hooks', [])]
        writer = LogWriter(self.work_dir, self.timestamp, max_iters, self.logger, window=plan.log)
        self.logger.info(f'start training at iteration {self.iteration}/{max_iters} in {self.work_dir} '
                         f'({get_world_size()} process(es), {"CUDA" if jt.flags.use_cuda else "CPU"})')
        for hook in hooks:
            hook.before_train(self)

        batches = self._train_batches(train_loader)
        model.train()
        with _StopRequest() as stop:
            self._train_loop(model, batches, val_loader, hooks, writer, stop, clip_grad, plan)
        for hook in hooks:
            hook.after_train(self)
        if self.iteration < max_iters:
            self.logger.info(f'training stopped at iteration {self.iteration}/{max_iters}; '
                             f'continue with --resume=auto --work-dir={self.work_dir}')
        else:
            self.logger.info(f'training finished: {max_iters} iterations; checkpoints in {self.work_dir}')
        return self.best

    def _train_loop(self, model, batches, val_loader, hooks, writer, stop, clip_grad, plan):
        optimizer, schedulers = self.optimizer, self.schedulers
        while self.iteration < plan.max_iters:
            start = time.perf_counter()
            batch = next(batches)
            data_time = time.perf_counter() - start
            jt.set_seed(self._iter_seed(self.iteration))  # dropout / drop-path, resumable
            losses = model(batch, mode='loss')
            loss, log_vars = self._parse_losses(losses)
            lr_used = self._base_lr(optimizer)
            optimizer.backward(loss)
            if clip_grad:
                optimizer.clip_grad_norm(clip_grad['max_norm'], clip_grad.get('norm_type', 2))
            optimizer.step()
            schedulers.step()
            jt.sync_all()  # finish this iteration's updates: its time is measured, its memory freed
            self.iteration += 1
            writer.update(log_vars, time.perf_counter() - start, data_time)
            for hook in hooks:
                hook.after_train_iter(self, log_vars)
            last = self.iteration == plan.max_iters
            if self.iteration % plan.log == 0 or last:
                writer.write_train(self.iteration, lr_used)
            if val_loader is not None and (self.iteration % plan.eval == 0 or last):
                metrics = self._validate(val_loader, writer)
                for hook in hooks:
                    hook.after_val(self, metrics)
                model.train()
            if self.iteration % plan.checkpoint == 0 or last or stop.requested:
                self.save(osp.join(self.work_dir, f'iter_{self.iteration}.npz'))
            if stop.requested:
                break

    def _train_batches(self, loader):
        """Endless batches, continuing at ``self.iteration`` (epoch and offset derived from it)."""
        per_epoch = len(loader)
        if per_epoch == 0:
            raise ConfigError(f'the training set ({len(loader.dataset)} images) is smaller than one batch '
                              f'(train_dataloader.batch_size={loader.batch_size})')
        epoch, offset = divmod(self.iteration, per_epoch)
        while True:  # noqa: R503 - endless
            loader.set_epoch(epoch, start_batch=offset)
            for batch in loader:
                yield batch
            epoch, offset = epoch + 1, 0

    def _parse_losses(self, losses):
        """Sum the entries whose name contains 'loss'; return (total, floats for logging)."""
        total = None
        for name, value in losses.items():
            if 'loss' in name:
                total = value if total is None else total + value
        if total is None:
            raise ValueError(f'the model returned no loss (keys: {sorted(losses)})')
        names = list(losses) + ['loss']
        values = [losses[n] for n in losses] + [total]
        jt.sync(values)
        numbers = np.array([float(v.numpy().reshape(-1)[0]) for v in values])
        if jt.in_mpi:  # log the mean over all processes, as mmseg does
            numbers = all_reduce_sum(numbers) / get_world_size()
        log_vars = dict(zip(names, numbers.tolist()))
        if not np.isfinite(log_vars['loss']):
            raise FloatingPointError(f'loss became {log_vars["loss"]} at iteration {self.iteration + 1}')
        return total, log_vars

    @staticmethod
    def _base_lr(optimizer):
        """The learning rate of parameters without an lr_mult (what mmseg logs as ``lr``)."""
        for group in optimizer.param_groups:
            if group['lr_mult'] == 1.0:
                return group['lr']
        return optimizer.param_groups[0]['lr'] / optimizer.param_groups[0]['lr_mult']

    def _iter_seed(self, iteration):
        return (self.seed * 1000003 + iteration * 7919 + get_rank() * 104729) % (2 ** 31 - 1)

    def _set_seed(self, seed):
        random.seed(seed)
        np.random.seed(seed)
        jt.set_seed(seed)

    # ------------------------------------------------------------------ checkpoints

    def save(self, path):
        """Write a full training checkpoint (atomically; main process only) and rotate old ones."""
        if is_main_process():
            meta = dict(iteration=self.iteration, seed=self.seed, jseg_version=__version__,
                        config=self.cfg.pretty_text, config_name=self.cfg.name,
                        optimizer=self.optimizer.state_meta(), schedulers=self.schedulers.state_dict(),
                        best=self.best, python_random=_py_rng_state(), numpy_random=_np_rng_meta())
            extra = {'numpy_random_keys': np.random.get_state()[1]}
            save_checkpoint(path, self.model.state_dict(), meta, self.optimizer.state_arrays(), extra)
            atomic_write_text(osp.join(self.work_dir, LAST_CHECKPOINT), path + '\n')
            self._rotate_checkpoints()
            self.logger.info(f'saved checkpoint {path}')
        barrier()

    def _rotate_checkpoints(self):
        keep = int(self.cfg.get('max_keep_ckpts', -1))
        if keep <= 0:
            return
        found = []
        for name in os.listdir(self.work_dir):
            if name.startswith('iter_') and name.endswith('.npz'):
                try:
                    found.append((int(name[5:-4]), name))
                except ValueError:
                    continue
        for _, name in sorted(found)[:-keep]:
            os.remove(osp.join(self.work_dir, name))

    def _resolve_resume(self):
        if not self.resume_from:
            return None
        if self.resume_from != 'auto':
            return self.resume_from
        pointer = osp.join(self.work_dir, LAST_CHECKPOINT)
        if osp.isfile(pointer):
            with open(pointer) as f:
                path = f.read().strip()
            if osp.isfile(path):
                return path
        self.logger.info(f'--resume auto: no checkpoint in {self.work_dir}; starting from scratch')
        return None

    def _resume(self, path, model, optimizer, schedulers):
        arrays, meta = read_checkpoint(path)
        if meta.get('format') != 'jseg-checkpoint':
            raise CheckpointError(f'{path}: only jseg checkpoints (.npz) can resume training; '
                                  f'use --load-from for PyTorch weights')
        if 'optimizer' not in meta:
            raise CheckpointError(f'{path}: holds weights only, no training state to resume')
        load_checkpoint(model, path, strict=True, logger=self.logger)
        slots = {}
        for key, value in arrays.items():
            if key.startswith('optimizer/'):
                _, slot, name = key.split('/', 2)
                slots.setdefault(slot, {})[name] = value
        try:
            optimizer.load_state(meta['optimizer'], slots)
            schedulers.load_state_dict(meta['schedulers'])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f'{path}: training state does not fit this config: {err}') from None
        self.iteration = int(meta['iteration'])
        self.best = _best_from_meta(meta.get('best'), path)
        random.setstate(_py_rng_from_meta(meta['python_random']))
        np.random.set_state(_np_rng_from_meta(meta['numpy_random'], arrays['extra/numpy_random_keys']))
        self.logger.info(f'resumed from {path} at iteration {self.iteration}')

    def _eval_weights(self):
        """(path, state dict) of the weights to evaluate, read before the model is built."""
        path = self._resolve_resume() if self.resume_from else None
        path = path or self.load_from
        if not path:
            raise CheckpointError('no weights given: pass --resume=CHECKPOINT or --load-from=CHECKPOINT')
        state, _ = checkpoint_state_dict(path)
        return path, state

    def _load_strict(self):
        """Evaluation needs every model weight from the checkpoint unless ``load_strict=False``."""
        strict = self.cfg.get('load_strict', True)
        if not isinstance(strict, bool):
            raise ConfigError(f'load_strict must be True or False, got {strict!r}')
        return strict

    # ------------------------------------------------------------------ evaluation

    def build_dataloader(self, key, training):
        """The loader of config entry ``key``; its ``batch_size`` is global unless ``batch_size_per_process``.

        With ``batch_size_per_process=True`` (set for configs in mmseg's runtime form, where
        ``batch_size`` is per GPU) the training batch is ``batch_size`` x the number of processes.
        """
        from jseg.datasets import build_dataloader
        loader_cfg = self.cfg[key]
        if training and self.cfg.get('batch_size_per_process', False):
            loader_cfg = dict(loader_cfg, batch_size=int(loader_cfg.get('batch_size', 1)) * get_world_size())
        return build_dataloader(loader_cfg, seed=self.seed, training=training)

    def _check_save_best(self, val_loader):
        """Stop before training when ``save_best`` names a metric validation never computes."""
        key = self.cfg.get('save_best', 'mIoU')
        if not key or val_loader is None:
            return
        names = getattr(self._build_metric(val_loader.dataset), 'metric_names', None)
        if names is not None and key not in names:
            raise ConfigError(f'save_best={key!r}: validation computes no such metric (it computes '
                              f'{", ".join(names)}; add mDice/mFscore to val_evaluator.iou_metrics)')

    def _build_metric(self, dataset, key='val_evaluator'):
        cfg = dict(self.cfg.get(key, None) or self.cfg.get('val_evaluator', None) or dict(type='IoUMetric'))
        num_classes = len(dataset.metainfo['classes'])
        cfg.setdefault('num_classes', num_classes)
        return METRICS.build(cfg)

    def _validate(self, loader, writer=None):
        metrics = self.evaluate(loader) or {}  # {} with format_only
        if writer is not None:
            writer.write_val(self.iteration, metrics)
        self._track_best(metrics)
        return metrics

    def _track_best(self, metrics):
        key = self.cfg.get('save_best', 'mIoU')
        if not key or key not in metrics or not np.isfinite(metrics[key]):
            return
        if self.best is None or metrics[key] > self.best['value']:
            old = self._owned_best_file(self.best)
            name = best_checkpoint_name(key, self.iteration)
            self.best = dict(metric=key, value=float(metrics[key]), iteration=self.iteration, path=name)
            if is_main_process() and old is not None and osp.isfile(old):
                os.remove(old)
            self.save_weights(osp.join(self.work_dir, name))

    def _owned_best_file(self, best):
        """The file of the previous best checkpoint if the runner wrote it into ``work_dir``, else None.

        A checkpoint's metadata only names the best file (``best_<metric>_iter_<n>.npz``, relative to
        the work dir); a name of another form, a path, or one of an older jseg naming a file outside
        this work dir is never removed.
        """
        if not best:
            return None
        name = best.get('path')
        if isinstance(name, str) and osp.isabs(name) and osp.dirname(name) == self.work_dir:
            name = osp.basename(name)  # an absolute path, as earlier checkpoints recorded it
        if name != best_checkpoint_name(best.get('metric'), best.get('iteration')):
            self.logger.info(f'previous best checkpoint {best.get("path")!r} is not a file of this work dir; '
                             f'left in place')
            return None
        return osp.join(self.work_dir, name)

    def save_weights(self, path):
        if is_main_process():
            meta = dict(iteration=self.iteration, jseg_version=__version__, config=self.cfg.pretty_text,
                        config_name=self.cfg.name)
            save_checkpoint(path, self.model.state_dict(), meta)
        barrier()

    def evaluate(self, loader, save_dir=None, palette=None, evaluator='val_evaluator'):
        """Predict every sample of ``loader``; return IoU metrics (and write predictions to ``save_dir``).

        ``evaluator`` names the config key of the metric (``test_evaluator`` for ``--task=test``).
        """
        from tqdm import tqdm

        from jseg.visualization import save_prediction
        model = self.model
        model.eval()
        dataset = loader.dataset
        metric = self._build_metric(dataset, evaluator)
        labelled = 0
        progress = tqdm(loader, desc='val' if save_dir is None else 'test', disable=not is_main_process(),
                        dynamic_ncols=True)
        with jt.no_grad():
            for batch in progress:
                view = batch['views'][0] if 'views' in batch else batch
                logits = model(batch, mode='predict')
                for i, seg_logits in enumerate(logits):
                    pred = argmax(seg_logits, 0)[0].numpy().astype(np.uint8 if seg_logits.shape[0] <= 256
                                                                     else np.int32)
                    metric.save_prediction(pred, view['metas'][i])  # only with its output_dir
                    if view.get('gt_seg') is not None:
                        h, w = pred.shape
                        metric.process(pred, np.asarray(view['gt_seg'][i])[:h, :w],
                                       view['metas'][i].get('sample_idx'))
                        labelled += 1
                    if save_dir is not None:
                        save_prediction(pred, view['metas'][i], save_dir, palette)
                jt.clean_graph()
        if labelled == 0 and save_dir is not None:
            return None
        metrics = metric.compute()
        if getattr(metric, 'format_only', False):
            self.logger.info(f'format_only: predictions written to {osp.abspath(metric.output_dir)}, no metrics')
            return None
        return metrics

    def val(self):
        self._set_seed(self.seed)
        path, state = self._eval_weights()
        model = self.build_model()
        load_state_dict(model, state, require_all=self._load_strict(), logger=self.logger, source=path)
        loader = self.build_dataloader('val_dataloader', training=False)
        metrics = self.evaluate(loader)
        if metrics is not None:
            self._report(metrics, loader.dataset, path, 'val')
        return metrics

    def test(self):
        self._set_seed(self.seed)
        path, state = self._eval_weights()
        model = self.build_model()
        load_state_dict(model, state, require_all=self._load_strict(), logger=self.logger, source=path)
        key = 'test_dataloader' if self.cfg.get('test_dataloader', None) else 'val_dataloader'
        loader = self.build_dataloader(key, training=False)
        save_dir = osp.abspath(self.save_dir or osp.join(self.work_dir, 'predictions'))
        metrics = self.evaluate(loader, save_dir=save_dir, palette=loader.dataset.metainfo.get('palette'),
                                evaluator='test_evaluator')
        self.logger.info(f'predictions written to {save_dir}')
        if metrics is not None:
            self._report(metrics, loader.dataset, path, 'test')
        return metrics

    def _report(self, metrics, dataset, checkpoint, task):
        from jseg.evaluation import format_metrics_table
        from jseg.evaluation.metrics import SCALAR_METRICS
        table = format_metrics_table(metrics, dataset.metainfo['classes'])
        self.logger.info(f'{task} results of {checkpoint} ({metrics["num_samples"]} images):\n{table}')
        if is_main_process():
            out = dict(task=task, checkpoint=checkpoint, config=self.cfg.name,
                       **{k: metrics[k] for k in SCALAR_METRICS if k in metrics},
                       num_samples=metrics['num_samples'],
                       per_class={name: dict(IoU=_num(i), Acc=_num(a)) for name, i, a in
                                  zip(dataset.metainfo['classes'], metrics['IoU'], metrics['Acc'])})
            path = osp.join(self.work_dir, f'{task}_{self.timestamp}.json')
            atomic_write_text(path, json.dumps(out, indent=2) + '\n')
            self.logger.info(f'metrics saved to {path}')

    def _dump_config(self):
        if is_main_process():
            self.cfg.dump(osp.join(self.work_dir, f'{self.cfg.name}.py'))


_Plan = collections.namedtuple('_Plan', 'max_iters log eval checkpoint')


class _StopRequest:
    """Turns SIGINT/SIGTERM during training into a request to stop after the current iteration.

    The runner then saves a checkpoint and returns, so an interrupted run (Ctrl-C, a cluster
    scheduler's SIGTERM) loses no finished iteration. A second signal stops at once. Only in
    a single process: under MPI the ranks could not agree on the iteration to stop at.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}
        self._pid = os.getpid()

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            # A data-loading worker forked while the handler was installed: Ctrl-C reaches the
            # whole process group and the main process decides; the loader's SIGTERM ends it.
            if signum == signal.SIGTERM:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        get_logger().warning(f'received signal {signum}: stopping after this iteration and saving a '
                             f'checkpoint (signal again to stop at once)')

    def __enter__(self):
        if get_world_size() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def best_checkpoint_name(metric, iteration):
    """``best_<metric>_iter_<iteration>.npz``, or None when the parts cannot form such a name."""
    if not (isinstance(metric, str) and re.fullmatch(r'[A-Za-z0-9_.-]+', metric) and metric not in ('.', '..')
            and isinstance(iteration, int) and not isinstance(iteration, bool) and iteration >= 0):
        return None
    return f'best_{metric}_iter_{iteration}.npz'


def _best_from_meta(best, path):
    """The ``best`` record of a checkpoint's metadata, checked (its file name is checked when used)."""
    if best is None:
        return None
    if not (isinstance(best, dict) and isinstance(best.get('value'), (int, float))
            and not isinstance(best.get('value'), bool) and isinstance(best.get('metric'), str)):
        raise CheckpointError(f'{path}: invalid "best" record in the metadata: {best!r:.200}')
    return dict(best, value=float(best['value']))


def _num(value):
    return float(value) if np.isfinite(value) else None


def _py_rng_state():
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def _py_rng_from_meta(meta):
    version, state, gauss = meta
    return version, tuple(state), gauss


def _np_rng_meta():
    name, _, pos, has_gauss, cached = np.random.get_state()
    return [name, int(pos), int(has_gauss), float(cached)]


def _np_rng_from_meta(meta, keys):
    name, pos, has_gauss, cached = meta
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached
