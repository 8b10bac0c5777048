"""Time a config's model: inference per image and, with --train, one training iteration.

    python tools/benchmark.py project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py --shape 512 512
    python tools/benchmark.py CONFIG --train --batch 2 --runs 10 --warmup 2
    python tools/benchmark.py CONFIG --shape 512 512 --train --batch 2 --breakdown --json times.json

The model is built from the config with its constructors' initialisation (no
checkpoint is needed: timing does not depend on the weights) and fed a
synthetic uint8 batch of random pixels.

* Inference: ``model(batch, mode='predict')`` under ``no_grad``, exactly what
  validation runs: preprocessing (normalisation, padding), whole or
  sliding-window inference as the config's ``test_cfg`` says, and resizing the
  logits to the image size; then the argmax over classes (the label map, as
  mmseg's ``predict`` ends). The default size is that of a square image after
  the test pipeline's ``Resize`` (its short-side scale when ``keep_ratio``, e.g.
  512x512 for the ``*_512x512_ade`` configs; else the slide crop or the
  preprocessor's size); ``--shape H W`` sets another. The backbone
  (``extract_feat``, on each window of sliding inference) is timed separately
  and reported as a share of inference.
* Training (``--train``): forward with the loss, backward and one step of the
  config's optimizer (``optim_wrapper``, with its gradient clipping), on a batch
  at the training crop size (the train pipeline's ``RandomCrop``) with
  random block labels.
* ``--breakdown``: the time of each stage (preprocessing, backbone, each
  decode-head module, FreqFusion's CARAFE calls and sampler, the final resize,
  argmax; for training each stage's forward+backward alone, the loss and the
  optimizer step), printed with its share of the total; see
  ``tools/benchmark_stages.py`` for how stages are found and timed.

Each measurement runs ``--warmup`` untimed calls (Jittor compiles kernels on
first use), then ``--runs`` timed calls, each between two
``jt.sync_all(True)``; the median is reported, with min/max, images/s and the
process CPU time (all threads; less sensitive to other processes on a shared
machine). The lines ``inference median: <s> s`` and ``train iter median: <s> s``
are meant to be read by scripts, and ``--json`` writes ``{"inference": {"shape",
"runs", "total": {"median", "min", "max", "cpu_median", ...}, "stages": {...}},
"train": {...}, "cpu": {"model", "flags"}, "threads", ...}`` (the layout
``tools/dev/compare_speed.py`` reads, for jseg and for the official model).
Runs on CUDA when Jittor has it (``--no-cuda`` forces the CPU). Other load on
the machine slows every number: the 1-minute load average is printed.
"""
import argparse
import json
import os
import statistics
import sys
import time

from tool_common import ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)

import numpy as np  # noqa: E402


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='Python config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar='SIZE',
                        help='inference input H W (or one size for a square); default: the config\'s test size')
    parser.add_argument('--crop', type=int, nargs='+', default=None, metavar='SIZE',
                        help='training input H W (or one size); default: the train pipeline\'s crop size')
    parser.add_argument('--batch', type=int, default=1, help='images per call (default: %(default)s)')
    parser.add_argument('--runs', type=int, default=10, help='timed calls per measurement (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed calls first, for JIT compilation (default: %(default)s)')
    parser.add_argument('--train', action='store_true',
                        help='also time a training iteration (forward, backward, optimizer step)')
    parser.add_argument('--breakdown', action='store_true',
                        help='also time each stage (backbone, head modules, CARAFE, sampler, resize, loss, ...)')
    parser.add_argument('--no-cuda', action='store_true', help='run on the CPU even if CUDA works')
    parser.add_argument('--json', default=None, metavar='FILE', help='also write the results to FILE')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries, e.g. model.test_cfg.mode=whole')
    args = parser.parse_args(argv)
    for name in ('shape', 'crop'):
        value = getattr(args, name)
        if value is not None:
            if len(value) not in (1, 2) or min(value) < 1:
                parser.error(f'--{name} takes H W or one size, positive')
            setattr(args, name, tuple(value * 2 if len(value) == 1 else value))
    if args.batch < 1 or args.runs < 1 or args.warmup < 0:
        parser.error('--batch and --runs must be at least 1, --warmup at least 0')
    return args


# ---------------------------------------------------------------------------------------------- sizes

def default_test_shape(cfg):
    """((H, W), reason) of the inference input when --shape is not given; see the module doc."""
    from jseg.apis import test_pipeline_of
    try:
        pipeline = test_pipeline_of(cfg)
    except ValueError:
        pipeline = []
    for transform in pipeline:
        if transform['type'] == 'Resize' and transform.get('scale', None) is not None:
            scale = transform['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            if transform.get('keep_ratio', False):
                side = min(scale)
                return (side, side), f'a square image after the test Resize (scale {scale}, keep_ratio)'
            return (scale[1], scale[0]), f'the test Resize scale (w, h) = {scale}'
    test_cfg = cfg.model.get('test_cfg', None) or {}
    if test_cfg.get('mode', 'whole') == 'slide' and test_cfg.get('crop_size', None):
        return tuple(test_cfg['crop_size']), 'the slide-inference crop size'
    size = (cfg.model.get('data_preprocessor', None) or {}).get('size', None)
    if size:
        return tuple(size), 'the data preprocessor size'
    return (512, 512), 'no test size in the config: 512x512'


def default_crop_shape(cfg, fallback):
    """((H, W), reason) of the training input when --crop is not given."""
    loader = cfg.get('train_dataloader', None) or {}
    for transform in (loader.get('dataset', None) or {}).get('pipeline', None) or []:
        if transform.get('type') == 'RandomCrop':
            crop = transform['crop_size']
            return ((crop, crop) if isinstance(crop, int) else tuple(crop)), 'the train pipeline\'s RandomCrop'
    size = (cfg.model.get('data_preprocessor', None) or {}).get('size', None)
    if size:
        return tuple(size), 'the data preprocessor size'
    return fallback, 'no crop in the config: the inference size'


def synthetic_batch(batch, height, width, num_classes=None, seed=0):
    """A loader-style batch of random uint8 BGR images (and random block labels if ``num_classes``)."""
    rng = np.random.RandomState(seed)
    shape = (height, width)
    out = dict(inputs=rng.randint(0, 256, size=(batch, 3, height, width)).astype(np.uint8),
               metas=[dict(ori_shape=shape, img_shape=shape, pad_shape=shape, scale_factor=(1.0, 1.0),
                           flip=False, img_path=None) for _ in range(batch)])
    if num_classes:
        coarse = rng.randint(0, num_classes, size=(batch, -(-height // 32), -(-width // 32)))
        out['gt_seg'] = coarse.repeat(32, axis=1).repeat(32, axis=2)[:, :height, :width].astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------- timing

class Timing:
    """Wall-clock and process CPU seconds of repeated calls."""

    def __init__(self, wall, cpu):
        self.wall, self.cpu = list(wall), list(cpu)

    @property
    def median(self):
        return statistics.median(self.wall)

    def as_dict(self, batch):
        return dict(median=self.median, min=min(self.wall), max=max(self.wall),
                    cpu_median=statistics.median(self.cpu), images_per_s=batch / self.median, times=self.wall)


def time_calls(fn, runs, warmup):
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls, each between ``jt.sync_all(True)``."""
    import jittor as jt
    for _ in range(warmup):
        fn()
        jt.sync_all(True)
        jt.gc()
    wall, cpu = [], []
    for _ in range(runs):
        jt.sync_all(True)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        jt.sync_all(True)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        jt.gc()
    return Timing(wall, cpu)


def inference_windows(model, height, width):
    """(y1, y2, x1, x2) windows the model's inference runs on an (height, width) input."""
    from jseg.models.segmentors.encoder_decoder import slide_windows
    test_cfg = getattr(model, 'test_cfg', None) or {}
    if test_cfg.get('mode', 'whole') == 'slide':
        return slide_windows(height, width, test_cfg['crop_size'], test_cfg['stride'])
    return [(0, height, 0, width)]


def bench_inference(model, batch, runs, warmup):
    """(inference Timing, backbone Timing, windows) for ``batch``."""
    import jittor as jt

    from jseg.ops import argmax
    model.eval()

    def infer():
        with jt.no_grad():
            jt.sync([argmax(logits, 0)[0] for logits in model(batch, mode='predict')])

    inference = time_calls(infer, runs, warmup)
    inputs, _, _ = model.data_preprocessor(batch, training=False)
    windows = inference_windows(model, inputs.shape[2], inputs.shape[3])

    def backbone():
        with jt.no_grad():
            for y1, y2, x1, x2 in windows:
                jt.sync(list(model.extract_feat(inputs[:, :, y1:y2, x1:x2])))

    return inference, time_calls(backbone, runs, warmup), windows


def bench_train(model, cfg, batch, runs, warmup):
    """Timing of forward + loss + backward + optimizer step on ``batch``; also returns the optimizer name."""
    import jittor as jt

    from jseg.runner.optim import build_optimizer
    model.train()  # before the optimizer: Jittor's eval() marks every parameter as not trainable
    optimizer, clip_grad = build_optimizer(model, cfg.optim_wrapper)
    jt.sync_all(True)

    def step():
        losses = model(batch, mode='loss')
        loss = sum(value for name, value in losses.items() if 'loss' in name)
        optimizer.backward(loss)
        if clip_grad:
            optimizer.clip_grad_norm(clip_grad['max_norm'], clip_grad.get('norm_type', 2))
        optimizer.step()

    timing = time_calls(step, runs, warmup)
    model.eval()
    return timing, type(optimizer).__name__


# ---------------------------------------------------------------------------------------------- report

def _fmt_shape(batch, shape):
    return f'{batch} x 3 x {shape[0]} x {shape[1]}'


def _describe_device():
    import jittor as jt
    if jt.flags.use_cuda:
        return 'cuda'
    return f'cpu ({_threads()} threads)'


def _timing_line(name, timing, batch):
    return (f'{name} median: {timing.median:.4f} s  | min {min(timing.wall):.4f} s  max {max(timing.wall):.4f} s'
            f'  | {batch / timing.median:.2f} images/s  | cpu {statistics.median(timing.cpu):.4f} s')


def _print_stages(title, stages, total):
    from benchmark_stages import stage_table
    print(f'{title} stages (median s, share of the total {total:.4f} s):')
    for line in stage_table(stages, total):
        print(line)


def run(args):
    import jittor as jt

    from benchmark_stages import cpu_info, time_inference_stages, time_train_stages
    from jseg.apis import init_model
    from jseg.cli import load_config, select_device
    from jseg.utils.flops import count_parameters
    device = select_device(args.no_cuda)
    cfg = load_config(args.config, args.cfg_options)
    shape, shape_reason = (args.shape, '--shape') if args.shape else default_test_shape(cfg)
    jt.set_global_seed(0)
    model = init_model(cfg)  # honours the config's use_fused_ops; no checkpoint
    jt.sync_all(True)  # initialise the parameters now, not inside the first (warm-up) call
    params = count_parameters(model)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    cpu = cpu_info()

    head = getattr(model, 'decode_head', None)
    backbone = getattr(model, 'backbone', None)
    print(f'benchmark of {cfg.name}')
    print(f'model: {type(model).__name__} ({type(backbone).__name__} + {type(head).__name__}), '
          f'{params / 1e6:.2f}M parameters, constructor initialisation')
    print(f'device: {_describe_device()}, Jittor {jt.__version__}, load average {load:.2f} at start')
    if not jt.flags.use_cuda:
        print(f'cpu: {cpu["model"] or "unknown"} ({" ".join(cpu["flags"]) or "no vector extensions listed"})')
    print(f'runs: {args.runs} timed after {args.warmup} warm-up, median reported')

    results = dict(side='jseg', config=cfg.name, device=device, cpu=cpu, threads=_threads(),
                   versions=dict(jittor=jt.__version__), load_average=load, params=params, batch=args.batch)
    batch = synthetic_batch(args.batch, *shape)
    inference, backbone_time, windows = bench_inference(model, batch, args.runs, args.warmup)
    mode = (getattr(model, 'test_cfg', None) or {}).get('mode', 'whole')
    window_text = f', {len(windows)} window(s) of {windows[0][1] - windows[0][0]}x{windows[0][3] - windows[0][2]}' \
        if mode == 'slide' else ''
    print(f'inference input: {_fmt_shape(args.batch, shape)} ({shape_reason}); test_cfg mode {mode}{window_text}')
    print(_timing_line('inference', inference, args.batch))
    share = backbone_time.median / inference.median
    print(f'backbone median: {backbone_time.median:.4f} s  | {100 * share:.1f}% of inference '
          f'(extract_feat timed alone)')
    if args.batch > 1:
        print(f'inference per image: {inference.median / args.batch:.4f} s')
    results['inference'] = dict(shape=[args.batch, 3, *shape], runs=args.runs, total=inference.as_dict(args.batch),
                                backbone=backbone_time.as_dict(args.batch), backbone_share=share, test_mode=mode,
                                windows=len(windows))
    if args.breakdown:
        stages = time_inference_stages(model, batch, args.runs, min(args.warmup, 1))
        _print_stages('inference', stages, inference.median)
        results['inference']['stages'] = stages

    if args.train:
        crop, crop_reason = (args.crop, '--crop') if args.crop else default_crop_shape(cfg, shape)
        num_classes = getattr(model, 'num_classes', None) or 2
        train_batch = synthetic_batch(args.batch, *crop, num_classes=min(num_classes, 255), seed=1)
        train, optimizer_name = bench_train(model, cfg, train_batch, args.runs, args.warmup)
        print(f'train input: {_fmt_shape(args.batch, crop)} ({crop_reason}); optimizer {optimizer_name}, '
              f'forward + backward + step')
        print(_timing_line('train iter', train, args.batch))
        results['train'] = dict(shape=[args.batch, 3, *crop], runs=args.runs, total=train.as_dict(args.batch),
                                optimizer=optimizer_name)
        if args.breakdown:
            from jseg.runner.optim import build_optimizer
            model.train()
            optimizer, clip_grad = build_optimizer(model, cfg.optim_wrapper)
            stages = time_train_stages(model, train_batch, optimizer, clip_grad, args.runs, min(args.warmup, 1))
            model.eval()
            _print_stages('train (each stage forward + backward alone)', stages, train.median)
            results['train']['stages'] = stages
    if args.json:
        from jseg.utils.fileio import atomic_write_text
        atomic_write_text(args.json, json.dumps(results, indent=2) + '\n')
        print(f'results written to {args.json}')
    return results


def _threads():
    import jittor as jt
    return None if jt.flags.use_cuda else int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count())


def main(argv=None):
    args = parse_args(argv)
    return run_tool(run, args, no_cuda=args.no_cuda)


if __name__ == '__main__':
    sys.exit(main())
