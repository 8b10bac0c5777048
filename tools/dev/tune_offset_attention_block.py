"""Time the fused coupled-attention operators for several position-block sizes (``OA_BLOCK`` in cpu_simd.h).

    python tools/dev/tune_offset_attention_block.py [--blocks 32 64 128] [--hw 16384] [--repeats 5]

Runs the forward and the backward ``jt.code`` operators of
:mod:`jseg.ops.offset_attention_fused_cpu` (channels-first, OffSeg-T's shape:
K = 150 classes, C = 256 channels, HW = 128x128, batch 1) compiled with each
block size given, and prints the median and minimum process CPU time per call
(all threads). Run it with ``OMP_NUM_THREADS=1`` for per-core numbers; each
block size is one compilation per operator. The block must be a multiple of
32 positions (of the padding ``GEMM_PAD`` on every instruction set).
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jseg  # noqa: E402,F401  (configures Jittor before it is imported)
import jittor as jt  # noqa: E402

from jseg.ops.csrc_bundle import bundle_source  # noqa: E402
from jseg.ops.offset_attention_fused_cpu import fused_source  # noqa: E402


def cpu_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        jt.sync(fn())
    times = []
    for _ in range(repeats):
        start = time.process_time()
        jt.sync(fn())
        times.append(time.process_time() - start)
    return 1e3 * float(np.median(times)), 1e3 * min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--blocks', type=int, nargs='+', default=[32, 64, 128])
    parser.add_argument('--hw', type=int, default=128 * 128)
    parser.add_argument('--classes', type=int, default=150)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    if any(nb <= 0 or nb % 32 for nb in args.blocks):
        parser.error('every block size must be a positive multiple of 32')
    n, k, c = args.hw, args.classes, args.channels
    jt.set_global_seed(0)
    e, w = jt.randn(1, c, n), jt.randn(1, k, c) / c ** 0.5
    g_cls, g_pos = jt.randn(1, k, c), jt.randn(1, c, n)
    header = bundle_source('offset_attention_fused_cpu.cc')
    print(f'OMP threads {os.environ.get("OMP_NUM_THREADS", os.cpu_count())}, HW {n}, K {k}, C {c}; CPU ms per call')
    for nb in args.blocks:
        def forward():
            return jt.code([(1, k, c), (1, c, n), (1, k), (1, n)], [e.dtype] * 4, [e, w], cpu_header=header,
                           cpu_src=fused_source('forward', True, nb))
        f_cls, _, lse_cls, lse_pos = forward()

        def backward():
            return jt.code([(1, c, n), (1, k, c)], [e.dtype] * 2, [e, w, g_cls, g_pos, lse_cls, lse_pos, f_cls],
                           cpu_header=header, cpu_src=fused_source('backward', True, nb))
        fwd, bwd = cpu_ms(lambda: list(forward()), args.repeats), cpu_ms(lambda: list(backward()), args.repeats)
        print(f'block {nb:4d}: forward median {fwd[0]:8.2f} min {fwd[1]:8.2f}   '
              f'backward median {bwd[0]:8.2f} min {bwd[1]:8.2f}', flush=True)


if __name__ == '__main__':
    main()
