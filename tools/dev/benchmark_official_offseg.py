"""Time the official PyTorch OffSeg-T, in total and per stage, as jseg's ``tools/benchmark.py --breakdown``.

Run OUTSIDE jseg's Python (it imports torch) in an environment with PyTorch (CPU), mmengine 0.10.x,
mmcv-lite 2.1.0 and a checkout of HVision-NKU/OffSeg::

    OFFSEG_ROOT=/path/to/OffSeg python tools/dev/benchmark_official_offseg.py --threads 2 --json official.json
    python tools/dev/benchmark_official_offseg.py --self-check      # only check the CPU CARAFE

Written and run with torch 2.13.0+cpu, mmengine 0.10.7, mmcv-lite 2.1.0 and OffSeg commit 1414f6de9f71.
``tools/dev/compare_speed.py`` runs this script and jseg's benchmark in one go.

The model is the official ``EncoderDecoder`` of ``local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py``
(``efficientformerv2_s1_feat`` + ``OffSegHead``, mmseg's data preprocessor, loss and inference),
built from the OffSeg checkout with its constructors' initialisation and no checkpoint. The config's
backbone loads an ImageNet checkpoint, after which the official constructor converts its BatchNorms to
SyncBatchNorm (training mode in training); here the checkpoint is skipped and the conversion done
alike. ``mmcv.ops`` is a run-time stand-in (``mmcv_ops_standin.py``) whose CARAFE is the plain-PyTorch
``torch_carafe.py``: mmcv's CARAFE is CUDA-only, so that is the CPU CARAFE the official code can have.
Nothing of the official code is copied: it is imported from the checkout and the installed packages.

Measurements (the issue-14 speed spec; stage keys in ``speed_common.STAGES``):

* inference, ``model.test_step`` under ``no_grad`` in eval mode on a uint8 (1, 3, 512, 512) batch:
  preprocessing, slide inference (one 512x512 window), resize of the logits, argmax. ``total`` is timed
  without instrumentation; then one instrumented call per run times every stage call (module hooks;
  ``carafe``, the decode head's ``resize`` and ``Tensor.argmax`` wrapped while it runs).
* training, ``model.train_step`` (preprocess, forward, loss, backward, the config's ``optim_wrapper``:
  AdamW with its ``paramwise_cfg``) on two uint8 512x512 crops with random 32x32-block labels (some 255).
  Stages are timed in isolation on inputs captured during one training forward: forward on detached
  copies, then the gradients of ``sum(out_i * g_i)`` (fixed seeded ``g_i``) w.r.t. the inputs and the
  parameters. ``loss``: ``decode_head.loss_by_feat`` (resize to the labels, CrossEntropy) forward and
  backward w.r.t. the logits; ``optimizer``: ``optim_wrapper.step()`` on computed gradients;
  ``preprocess``: the training preprocessing, forward only.

Every measurement runs ``--warmup`` untimed calls, then ``--runs`` timed ones, each run timing the total
and then the stages (so that load changes on a shared machine hit both alike); medians of the wall time
are reported, and of the process CPU time (all threads; less sensitive to other load on a shared
machine) as ``total.cpu_median`` and ``stages_cpu``.
"""
import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed_common  # noqa: E402  (tools/dev)

CONFIG = 'local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py'
IGNORE_INDEX = 255


# ---------------------------------------------------------------------------------------------- model

def setup_official(offseg_root):
    """Stand-in ``mmcv.ops`` (CPU CARAFE), the checkout on ``sys.path``, mmseg's registries filled."""
    import types

    import mmengine.model
    import torch_carafe
    from mmcv_ops_standin import install_mmcv_ops_standin
    carafe_module = types.ModuleType('mmcv.ops.carafe')
    carafe_module.carafe = torch_carafe.carafe
    carafe_module.normal_init = mmengine.model.normal_init
    carafe_module.xavier_init = mmengine.model.xavier_init
    install_mmcv_ops_standin(modules={'carafe': carafe_module})
    from mmengine.logging import MMLogger
    MMLogger.get_instance('official_speed', log_level='WARNING')    # no per-parameter optimizer lines
    sys.path.insert(0, offseg_root)
    from mmseg.utils import register_all_modules
    register_all_modules()


def build_model(offseg_root, config, torch):
    """(cfg, model) of the official config, constructor initialisation, backbone BatchNorms synced."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    cfg = Config.fromfile(os.path.join(offseg_root, config))
    cfg.model.backbone.init_cfg = None          # no checkpoint; the conversion it would trigger follows
    model = MODELS.build(cfg.model)
    model.backbone = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.backbone)
    return cfg, model


def synthetic_data(torch, batch, height, width, seed, num_classes=None):
    """mmseg's loader output: uint8 BGR (3, H, W) images and SegDataSamples (with block labels if asked)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.RandomState(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.from_numpy(rng.randint(0, 256, (3, height, width)).astype(np.uint8)))
        sample = SegDataSample(metainfo=dict(ori_shape=(height, width), img_shape=(height, width),
                                             pad_shape=(height, width), scale_factor=(1.0, 1.0), flip=False))
        if num_classes:
            coarse = rng.randint(0, num_classes + 1, (-(-height // 32), -(-width // 32)))
            coarse[coarse == num_classes] = IGNORE_INDEX
            labels = coarse.repeat(32, 0).repeat(32, 1)[:height, :width]
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels[None].astype(np.int64)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ---------------------------------------------------------------------------------------------- stages

def _detached(value, torch):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v, torch) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v, torch) for k, v in value.items()}
    return value


class StageProbe:
    """Hooks on the stage modules and wrappers of the stage functions of one official model.

    While ``mode == 'time'`` every stage call adds its wall and process CPU seconds to ``times[key]``
    and ``cpu_times[key]``; while ``mode == 'capture'`` it appends ``(callable, args, kwargs, params)``
    with detached copies of its inputs to ``calls[key]``; ``mode = None``: nothing. The output of the
    head is kept as ``head_output`` when capturing. :meth:`close` removes everything.
    """

    def __init__(self, model, torch):
        self.torch, self.mode = torch, None
        self.times, self.cpu_times, self.calls = defaultdict(float), defaultdict(float), defaultdict(list)
        self.head_output = None
        self._active_freqfusion = None
        self._undo = []
        head = model.decode_head
        stages = [('preprocess', model.data_preprocessor), ('backbone', model.backbone)]
        stages += [('decode_head.pre', m) for m in head.pre]
        for i, fusion in enumerate(head.freqfusions):
            stages += [(f'decode_head.freqfusions.{i}', fusion), (f'decode_head.freqfusions.{i}.dysampler',
                                                                  fusion.dysampler)]
        stages += [('decode_head.align', head.align), ('decode_head.offset_learning', head.offset_learning)]
        for key, module in stages:
            self._hook(key, module)
        # the head's output is that of offset learning (mmseg calls ``decode_head.forward`` directly: no hooks)
        handle = head.offset_learning.register_forward_hook(self._record_head_output)
        self._undo.append(handle.remove)
        freqfusion = sys.modules['mmseg.models.decode_heads.freqfusion']
        decode_head = sys.modules['mmseg.models.decode_heads.decode_head']
        self._wrap(freqfusion, 'carafe', None)
        self._wrap(decode_head, 'resize', 'resize')
        self._wrap(torch.Tensor, 'argmax', 'argmax')

    def _hook(self, key, module):
        starts = []
        freqfusion_index = int(key.rsplit('.', 1)[1]) if key.startswith('decode_head.freqfusions.') \
            and key.rsplit('.', 1)[1].isdigit() else None
        params = [p for p in module.parameters() if p.requires_grad]

        def before(mod, args, kwargs):
            if freqfusion_index is not None:
                self._active_freqfusion = freqfusion_index
            if self.mode == 'time':
                starts.append((time.perf_counter(), time.process_time()))
            elif self.mode == 'capture' and key != 'preprocess':
                self.calls[key].append((mod, _detached(args, self.torch), _detached(kwargs, self.torch), params))

        def after(mod, args, kwargs, output):
            if self.mode == 'time':
                self._add(key, *starts.pop())
            if freqfusion_index is not None:
                self._active_freqfusion = None

        for handle in (module.register_forward_pre_hook(before, with_kwargs=True),
                       module.register_forward_hook(after, with_kwargs=True)):
            self._undo.append(handle.remove)

    def _wrap(self, owner, name, key):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            stage = key if key else (None if self._active_freqfusion is None
                                     else f'decode_head.freqfusions.{self._active_freqfusion}.carafe')
            if stage is None or self.mode is None:
                return original(*args, **kwargs)
            if self.mode == 'capture':
                if key is None:
                    self.calls[stage].append((original, _detached(args, self.torch),
                                              _detached(kwargs, self.torch), []))
                return original(*args, **kwargs)
            start, start_cpu = time.perf_counter(), time.process_time()
            out = original(*args, **kwargs)
            self._add(stage, start, start_cpu)
            return out

        setattr(owner, name, wrapped)
        self._undo.append(lambda: setattr(owner, name, original))

    def _add(self, key, start, start_cpu):
        self.times[key] += time.perf_counter() - start
        self.cpu_times[key] += time.process_time() - start_cpu

    def _record_head_output(self, module, args, output):
        if self.mode == 'capture':
            self.head_output = output.detach().clone()

    @contextlib.contextmanager
    def active(self, mode):
        self.mode = mode
        try:
            yield self
        finally:
            self.mode = None

    def close(self):
        for undo in reversed(self._undo):
            undo()
        self._undo = []


def _tensors(value, torch):
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v, torch)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v, torch)]
    return []


def _with_grad_leaves(value, leaves, torch):
    """Copy of ``value`` whose float tensors are new leaves requiring grad (appended to ``leaves``)."""
    if torch.is_tensor(value):
        if value.is_floating_point():
            leaf = value.detach().clone().requires_grad_()
            leaves.append(leaf)
            return leaf
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_with_grad_leaves(v, leaves, torch) for v in value)
    if isinstance(value, dict):
        return {k: _with_grad_leaves(v, leaves, torch) for k, v in value.items()}
    return value


class IsolatedCall:
    """One captured stage call, re-run alone: forward, then d(sum(out_i * g_i))/d(inputs, parameters)."""

    def __init__(self, fn, args, kwargs, params, torch, seed):
        self.fn, self.args, self.kwargs, self.params, self.torch = fn, args, kwargs, params, torch
        self.cotangents = None
        self.seed = seed

    def run(self):
        """(wall, process CPU) seconds of one forward + backward (inputs prepared before the clock starts)."""
        torch = self.torch
        leaves = []
        args = _with_grad_leaves(self.args, leaves, torch)
        kwargs = _with_grad_leaves(self.kwargs, leaves, torch)
        start, start_cpu = time.perf_counter(), time.process_time()
        outs = [o for o in _tensors(self.fn(*args, **kwargs), torch) if o.requires_grad]
        if self.cotangents is None:
            gen = torch.Generator().manual_seed(self.seed)
            self.cotangents = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
        torch.autograd.grad(outs, leaves + self.params, grad_outputs=self.cotangents, allow_unused=True)
        return time.perf_counter() - start, time.process_time() - start_cpu


# ---------------------------------------------------------------------------------------------- timing

def timed(fn):
    """(wall, process CPU) seconds of one call of ``fn``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _stage_medians(per_run):
    """{stage: median over runs} in spec order (a stage missing from a run counts 0 there)."""
    return {key: statistics.median(run.get(key, 0.0) for run in per_run)
            for key in speed_common.STAGES if any(key in run for run in per_run)}


def bench_inference(model, probe, data, runs, warmup, torch):
    """(total summary, stage medians, stage CPU medians); each run = one plain call, then one instrumented."""
    model.eval()

    def infer():
        with torch.no_grad():
            model.test_step(data)

    for _ in range(warmup):
        infer()
    wall, cpu, per_run, per_run_cpu = [], [], [], []
    for _ in range(runs):
        w, c = timed(infer)
        wall.append(w)
        cpu.append(c)
        probe.times.clear()
        probe.cpu_times.clear()
        with probe.active('time'):
            infer()
        per_run.append(dict(probe.times))
        per_run_cpu.append(dict(probe.cpu_times))
    return speed_common.summarise(wall, cpu), _stage_medians(per_run), _stage_medians(per_run_cpu)


def bench_train(model, cfg, probe, data, runs, warmup, torch):
    """(total summary, stage medians, stage CPU medians, optimizer name); each run = one whole training
    iteration, then every stage in isolation."""
    from mmengine.optim import build_optim_wrapper
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    # one training forward, capturing every stage call's inputs
    preprocessed = model.data_preprocessor(data, True)
    probe.calls.clear()
    with probe.active('capture'):
        losses = model._run_forward(preprocessed, mode='loss')
    head = model.decode_head
    samples = preprocessed['data_samples']

    def head_loss(logits):
        losses = head.loss_by_feat(logits, samples)
        return sum(v for k, v in losses.items() if 'loss' in k)

    isolated = {key: [IsolatedCall(*call, torch=torch, seed=1000 * n + i) for i, call in enumerate(probe.calls[key])]
                for n, key in enumerate(speed_common.STAGES) if probe.calls.get(key)}
    isolated['loss'] = [IsolatedCall(head_loss, (probe.head_output,), {}, [], torch, seed=99)]
    parsed, _ = model.parse_losses(losses)
    optim_wrapper.backward(parsed)
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad.clone() for p in params]       # restored before each timed optimizer step

    def restore_grads():
        for p, g in zip(params, grads):
            p.grad = g.clone()

    for call in (c for calls in isolated.values() for c in calls):
        call.run()                                 # fixes the cotangents

    def stage_run():
        wall, cpu = {}, {}
        for key, calls in isolated.items():
            times = [call.run() for call in calls]
            wall[key], cpu[key] = sum(t[0] for t in times), sum(t[1] for t in times)
        wall['preprocess'], cpu['preprocess'] = timed(lambda: model.data_preprocessor(data, True))
        restore_grads()
        wall['optimizer'], cpu['optimizer'] = timed(optim_wrapper.step)
        return wall, cpu

    def step():
        model.train_step(data, optim_wrapper)

    for _ in range(warmup):
        step()
        stage_run()
    wall, cpu, per_run, per_run_cpu = [], [], [], []
    for _ in range(runs):
        w, c = timed(step)
        wall.append(w)
        cpu.append(c)
        stages, stages_cpu = stage_run()
        per_run.append(stages)
        per_run_cpu.append(stages_cpu)
    return (speed_common.summarise(wall, cpu), _stage_medians(per_run), _stage_medians(per_run_cpu),
            type(optim_wrapper.optimizer).__name__)


# ---------------------------------------------------------------------------------------------- report

def versions(offseg_root, torch):
    import mmcv
    import mmengine
    import mmseg
    out = dict(python=platform.python_version(), torch=torch.__version__, mmengine=mmengine.__version__,
               mmcv=mmcv.__version__, mmseg=mmseg.__version__, numpy=np.__version__)
    commit = os.path.join(offseg_root, 'COMMIT')
    if os.path.isfile(commit):
        with open(commit) as f:
            out['offseg_commit'] = f.read().strip()
    return out


def print_table(title, section):
    total = section['total']['median']
    print(f'\n{title}: {" x ".join(map(str, section["shape"]))}, total median {total:.4f} s '
          f'(min {section["total"]["min"]:.4f}, max {section["total"]["max"]:.4f}, '
          f'cpu {section["total"]["cpu_median"]:.4f}, {section["runs"]} runs)')
    print(f'  {"stage":40s} {"median s":>9s} {"share":>7s} {"cpu s":>9s}')
    top = 0.0
    for key, value in section['stages'].items():
        nested = speed_common.is_nested(key)
        if not nested:
            top += value
        print(f'  {("  " if nested else "") + key:40s} {value:9.4f} {100 * value / total:6.1f}% '
              f'{section["stages_cpu"][key]:9.4f}')
    print(f'  {"other (total - top-level stages)":40s} {total - top:9.4f} {100 * (total - top) / total:6.1f}%')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--offseg-root', default=os.environ.get('OFFSEG_ROOT'),
                        help='checkout of HVision-NKU/OffSeg (default: $OFFSEG_ROOT)')
    parser.add_argument('--config', default=CONFIG, help='official config, relative to the checkout '
                        '(default: %(default)s)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(),
                        help='torch.set_num_threads (default: all CPUs, %(default)s)')
    parser.add_argument('--runs', type=int, default=5, help='timed calls per measurement (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls first (default: %(default)s)')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='inference input size (default: 512 512)')
    parser.add_argument('--batch', type=int, default=1, help='inference images per call (default: 1)')
    parser.add_argument('--crop', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='training crop size (default: 512 512)')
    parser.add_argument('--train-batch', type=int, default=2, help='training images per step (default: 2)')
    parser.add_argument('--no-train', action='store_true', help='only time inference')
    parser.add_argument('--json', default=None, metavar='FILE', help='write the results to FILE')
    parser.add_argument('--self-check', action='store_true',
                        help='only check the CPU CARAFE against a naive loop (values and gradients)')
    args = parser.parse_args(argv)
    if min(args.runs, args.threads, args.batch, args.train_batch, *args.shape, *args.crop) < 1 or args.warmup < 0:
        parser.error('--runs, --threads, --batch, --train-batch and sizes must be positive, --warmup >= 0')
    if not args.self_check and (not args.offseg_root or
                                not os.path.isfile(os.path.join(args.offseg_root, args.config))):
        parser.error(f'--offseg-root (or $OFFSEG_ROOT) must name an OffSeg checkout containing {args.config} '
                     f'(got {args.offseg_root!r})')
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    import torch_carafe
    torch.set_num_threads(args.threads)
    checks = torch_carafe.self_check()
    print('CARAFE self-check (max |difference| to the naive loop, values and gradients, float64): '
          + ', '.join(f'{diff:.1e}' for _, diff in checks))
    if args.self_check:
        return 0
    torch.manual_seed(0)
    setup_official(args.offseg_root)
    cfg, model = build_model(args.offseg_root, args.config, torch)
    probe = StageProbe(model, torch)
    load_start = speed_common.load_average()
    result = dict(side='official', config=args.config, cpu=speed_common.cpu_info(), threads=args.threads,
                  versions=versions(args.offseg_root, torch), load_average=dict(start=load_start))
    print(f'official {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, '
          f'torch {torch.__version__}, {args.threads} threads, CPU {result["cpu"]["model"]} '
          f'({" ".join(result["cpu"]["flags"])}), load average {load_start}')
    shape = [args.batch, 3, *args.shape]
    total, stages, stages_cpu = bench_inference(model, probe, synthetic_data(torch, args.batch, *args.shape, seed=0),
                                                args.runs, args.warmup, torch)
    result['inference'] = dict(shape=shape, runs=args.runs, total=total, stages=stages, stages_cpu=stages_cpu)
    print_table('inference', result['inference'])
    if not args.no_train:
        num_classes = model.decode_head.num_classes
        data = synthetic_data(torch, args.train_batch, *args.crop, seed=1, num_classes=num_classes)
        total, stages, stages_cpu, optimizer = bench_train(model, cfg, probe, data, args.runs, args.warmup, torch)
        result['train'] = dict(shape=[args.train_batch, 3, *args.crop], runs=args.runs, total=total,
                               optimizer=optimizer, stages=stages, stages_cpu=stages_cpu)
        print_table(f'train iteration ({optimizer})', result['train'])
    probe.close()
    result['load_average']['end'] = speed_common.load_average()
    print(f'load average {load_start} at start, {result["load_average"]["end"]} at the end')
    if args.json:
        speed_common.write_json(args.json, result)
        print('results written to', args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
