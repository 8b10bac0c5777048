"""Time the JIT-compiled operators against their pure-Jittor compositions.

At OffSeg-T's real shapes for a 512x512 input:

* CARAFE, every call of the three FreqFusion stages of the OffSeg-T head
  (new_channels [32, 32, 64, 128] at strides 4/8/16/32, FreqFusion with
  compressed_channels (C_lr + C_hr) // 4, low-pass k=5, high-pass k=3, one
  group): per stage the k=3 scale-1 high-pass calls (compressed and full
  high-resolution features) and the k=5 scale-2 low-pass calls (the two
  initial mask upsamplings and the low-resolution features);
* the coupled attention of offset learning at 1/4 resolution,
  HW = 128x128, K = 150 (ADE20K), C = 256, batch 1 and 2, channels-first
  as OffsetLearning calls it, for each strategy of the JIT operator;
* multi-scale deformable attention as Mask2Former's pixel decoder calls it
  (``--op msda``): 3 levels at 1/8, 1/16, 1/32 of 512x512 ((64,64), (32,32),
  (16,16)), Lq = S = 5376 queries, 8 heads, 32 channels per head, 4 points,
  batch 1 and 2; each query samples around its own pixel (offsets of about
  2 pixels per level, a few outside the map), as the trained model does;
* bilinear resize (``--op resize``, align_corners=False): OffSeg-T's final
  resize of the logits, (B, 150, 128, 128) -> 512x512, batch 1 and 2 (in
  inference and in the loss), and a SegFormer-like feature upsampling,
  (1, 256, 16, 16) -> 128x128; the composition is Jittor's nn.interpolate.
  CPU only (skipped under CUDA, where resize() runs nn.interpolate).
* bilinear ``grid_sample`` as FreqFusion's LocalSimGuidedSampler calls it
  in OffSeg-T (``--op grid_sample``): border padding, align_corners=False,
  4 groups, the upsampled low-resolution features (128, 192, 224 channels)
  sampled at 32x32, 64x64 and 128x128 (1/16, 1/8, 1/4), batch 1 and 2;
  each output pixel reads near its own position (offsets of about half a
  pixel, a few beyond the border), as the sampler does. CPU only (on CUDA
  ``jseg.ops.grid_sample`` is Jittor's own op, so the case is skipped).
* softmax (``--op softmax``) against ``jittor.nn.softmax``: EfficientFormerV2-S1's
  attention over the keys (last dim) at 512x512, (B, 8, 256, 256) in stage 4
  and the stride-2 attentions, (B, 8, 256, 1024) in the downsampling attention;
  FreqFusion's kernel normaliser (softmax over the k*k taps, dim 2 of
  (B, 1, k*k, H, W), with its window of ones) at the three levels, H = 32, 64,
  128, k = 3 and 5; batch 1 and 2; and one 2x4096x4096 last-dim softmax.
  CPU only (skipped under CUDA, where ``jseg.ops.softmax`` is ``nn.softmax``);
* the prediction of OffSeg-T at 512x512 (``--op argmax``): ``jseg.ops.argmax``
  over the 150 classes of one image's (150, 512, 512) logits against
  ``jt.argmax`` (forward only: an index has no gradient). CPU only;
* the per-pixel loss of OffSeg-T's training at 512x512 (``--op loss``): the
  (B, 150, 128, 128) logits resized (bilinear operator, both sides) to the
  512x512 labels (10% ignored), then softmax cross-entropy averaged over the
  pixels, ``jseg.ops.softmax_nll`` against the composition of
  ``cross_entropy``; batch 1 and 2, as ``loss_by_feat`` runs it. The resize
  and the mean belong to the case: how Jittor fuses the composition depends on
  them (alone, on a plain input and with a per-pixel gradient, the two are
  about as fast). Without gradients (``jt.no_grad``) ``softmax_nll`` is the
  composition, which fuses the resize into its reduction, so the forward
  case times the same code twice. CPU only;
* normalisation (``--op norm``): training-mode BatchNorm of EfficientFormerV2-S1's
  stage 1 at 512x512 (B, 32, 128, 128) and of its FFN's hidden width
  (B, 128, 128, 128), and the decode head's GroupNorm(32) after ``align``
  (B, 256, 128, 128); batch 1 and 2; ``jseg.ops.norm`` against its
  compositions. CPU only;
* GELU (``--op gelu``) on the largest EfficientFormerV2-S1 FFN activation at
  512x512, (B, 128, 128, 128), batch 1 and 2, against the erf composition.
  Alone the composition fuses well; the operator's gain is inside the model,
  where Jittor fused the composition into the BatchNorm backward. CPU only.
* the packed GEMM (``--op gemm``) at OffSeg-T's shapes against Jittor's
  products (``jt.matmul`` per 2-D slice, oneDNN's sgemm on the CPU) or
  convolution: 256x256 @ 256x32768; the backbone's 1x1 convolutions of
  stages 1 and 2 at batch 2, 512x512 (shared weight @ (2, Cin, HW), against
  PointwiseConv's permute + one ``jt.matmul``; and the talking heads of the
  stage-4 attention, 8 -> 8 channels on (2, 8, 256x256)); the attention products of
  stages 3/4 (16 = B*h products of 1024x32 @ 32x1024 and 1024x1024 @
  1024x32, and those of the model at 512x512: 256 tokens in the attentions
  of stages 3 and 4, 256 queries over 1024 keys in the downsampling one;
  against ``batched_matmul``'s per-head products); the offset
  learning's 150x256 @ 256x16384 per image (batch 2); and the head's 1x1
  ConvModule, 256 -> 256 channels on (2, 256, 128, 128), against
  ``nn.conv2d``. CPU only.

Timing: each case runs forward (under ``jt.no_grad()``, as inference does;
outputs synced) and forward+backward
(outputs and the gradients of sum(out * g) for every input, synced: in
training the forward's outputs are used too, and a composition that Jittor
would otherwise fuse into its backward must compute them); after ``--warmup`` calls
(which also JIT-compile), ``--rounds`` rounds of ``--repeats`` calls each,
composition and operator interleaved round by round so that load changes on
a shared machine hit both. Reported: the median wall-clock time over all
timed calls, and the median process CPU time per call (all threads), which
is less sensitive to other processes than wall-clock time.

Memory (``--memory``, on by default for the coupled and the deformable
attention, ``--memory all`` for CARAFE too): every measurement runs
forward+backward once in a fresh process (kernels already compiled), so
nothing cached by an earlier call hides the peak. Two numbers, inputs excluded:

* ``vars``: Jittor's memory profiler (``jt.flags.profile_memory_enable``),
  the live variable memory at the moment the allocator's use peaked
  (``jt.get_max_memory_info()``). It does not see scratch memory that a
  ``jt.code`` kernel allocates itself (the fused coupled attention's
  per-thread blocks, about 2 MB here), which the second number includes;
* ``rss``: growth of the process's peak resident set (``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``, Linux only) over its size
  before the call.

Usage::

    python tools/benchmark_ops.py                       # everything
    python tools/benchmark_ops.py --op offset --batch 1 2 --repeats 10
    python tools/benchmark_ops.py --op carafe --memory none
    python tools/benchmark_ops.py --op msda --batch 1 --repeats 3
    python tools/benchmark_ops.py --op resize
    python tools/benchmark_ops.py --op grid_sample
    python tools/benchmark_ops.py --op softmax --batch 1 2
    python tools/benchmark_ops.py --op argmax
    python tools/benchmark_ops.py --op loss
    python tools/benchmark_ops.py --op norm
    python tools/benchmark_ops.py --op gelu
    python tools/benchmark_ops.py --op gemm --repeats 3
    python tools/benchmark_ops.py --threads 1           # sets OMP_NUM_THREADS
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from tool_common import ROOT, ArgumentParser  # noqa: E402  (puts the checkout on sys.path)

from benchmark_ops_cases import make_call, make_inputs, select_cases  # noqa: E402


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--op', choices=['carafe', 'offset', 'msda', 'resize', 'grid_sample', 'softmax', 'argmax', 'loss',
                                    'norm', 'gelu', 'gemm', 'all'],
                   default='all')
    p.add_argument('--batch', type=int, nargs='+', default=None,
                   help='batch sizes (default: 1 for CARAFE, 1 and 2 for the others)')
    p.add_argument('--strategy', nargs='+', default=['fused', 'gemm'], choices=['fused', 'gemm'],
                   help='coupled-attention strategies to time')
    p.add_argument('--layout', choices=['channels_first', 'token_major'], default='channels_first',
                   help='coupled-attention feature layout (OffsetLearning uses channels_first)')
    p.add_argument('--repeats', type=int, default=10, help='timed calls per round')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls first (JIT compilation)')
    p.add_argument('--memory', choices=['default', 'offset', 'msda', 'all', 'none'], default='default',
                   help='which cases get a memory measurement (default: offset and msda)')
    p.add_argument('--threads', type=int, default=None, help='OpenMP threads (sets OMP_NUM_THREADS)')
    p.add_argument('--json', default=None, help='also write the results to this file')
    p.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

def time_interleaved(calls, repeats, rounds, warmup):
    """calls: {key: callable returning Vars}. Returns {key: (median wall ms, median cpu ms)}."""
    import jittor as jt
    import numpy as np
    for call in calls.values():
        for _ in range(warmup):
            jt.sync(call())
    wall = {key: [] for key in calls}
    cpu = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                jt.sync(call())
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
    return {key: (1e3 * float(np.median(wall[key])), 1e3 * float(np.median(cpu[key]))) for key in calls}


# ---------------------------------------------------------------------------
# memory (one fresh process per measurement)
# ---------------------------------------------------------------------------

def _proc_status(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    return None


def memory_child(spec):
    """Run forward+backward once and print the peak memory as JSON (see the module docstring)."""
    import jittor as jt
    case, impl = spec['case'], spec['impl']
    inputs, grads = make_inputs(case)
    input_bytes = sum(int(v.numel()) * (8 if v.dtype == jt.float64 else 4) for v in inputs + grads)
    call = make_call(case, impl, True, inputs, grads)
    jt.gc()
    rss_before = _proc_status('VmRSS')
    hwm_reset = False
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        hwm_reset = True
    except OSError:
        pass
    jt.flags.profile_memory_enable = 1
    jt.sync(call())
    var_peak = int(jt.get_max_memory_info().split('[!@#div1!@#]')[0])
    jt.flags.profile_memory_enable = 0
    rss_peak = _proc_status('VmHWM') if hwm_reset else None
    print(json.dumps(dict(vars=var_peak - input_bytes,
                          rss=(rss_peak - rss_before) if rss_peak is not None and rss_before else None)))


def measure_memory(case, impl):
    spec = json.dumps(dict(case=case, impl=impl))
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, osp.abspath(__file__), '--memory-child', spec], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode != 0 or not lines:
        print(f'  memory measurement failed for {case["name"]} / {impl}:\n{proc.stderr[-1500:]}', file=sys.stderr)
        return None
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def _mb(nbytes):
    return '-' if nbytes is None else f'{nbytes / 2 ** 20:.1f}'


def run(args):
    import jittor as jt
    cases = select_cases(args, jt.flags.use_cuda)
    threads = os.environ.get('OMP_NUM_THREADS', str(os.cpu_count()))
    print(f'jittor {jt.__version__}, {"CUDA" if jt.flags.use_cuda else "CPU"}, OMP threads {threads}, '
          f'load average at start {os.getloadavg()[0]:.1f}')
    print(f'median of {args.rounds} x {args.repeats} calls after {args.warmup} warm-up calls; '
          f'composition and operator interleaved\n')
    header = (f'{"op / call":34s} {"input shape":24s} {"pass":8s} {"impl":7s} {"wall ms":>9s} {"cpu ms":>9s} '
              f'{"speed-up":>8s} {"vars MB":>8s} {"rss MB":>8s}')
    print(header)
    print('-' * len(header))
    results = []
    for case, impls in cases:
        inputs, grads = make_inputs(case)
        for backward in (False,) if case.get('forward_only') else (False, True):
            calls = {impl: make_call(case, impl, backward, inputs, grads) for impl in ['composition'] + impls}
            timing = time_interleaved(calls, args.repeats, args.rounds, args.warmup)
            measured = {'all': ('carafe', 'offset', 'msda', 'resize', 'grid_sample'), 'default': ('offset', 'msda'),
                        'none': ()}
            want_memory = backward and case['op'] in measured.get(args.memory, (args.memory,))
            base = timing['composition'][0]
            for impl in ['composition'] + impls:
                wall, cpu = timing[impl]
                mem = measure_memory(case, impl) if want_memory else None
                row = dict(op=case['op'], name=case['name'], shape=case['shape'],
                           passes='fwd+bwd' if backward else 'fwd', impl=impl, wall_ms=wall, cpu_ms=cpu,
                           speedup=base / wall, vars_bytes=mem and mem['vars'], rss_bytes=mem and mem['rss'])
                results.append(row)
                speed = '' if impl == 'composition' else f'{row["speedup"]:.2f}x'
                print(f'{case["name"]:34s} {case["shape"]:24s} {row["passes"]:8s} {impl:7s} {wall:9.2f} '
                      f'{cpu:9.2f} {speed:>8s} {_mb(row["vars_bytes"]):>8s} {_mb(row["rss_bytes"]):>8s}',
                      flush=True)
        print()
    print(f'load average at end {os.getloadavg()[0]:.1f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
    import jseg  # noqa: F401  (configures Jittor before it is imported)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    run(args)


if __name__ == '__main__':
    main()
