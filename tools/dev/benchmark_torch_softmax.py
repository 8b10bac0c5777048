"""PyTorch's CPU softmax at the shapes of ``tools/benchmark_ops.py --op softmax``, for comparison.

Run with a Python that has PyTorch (never the one jseg's tests use, since Jittor
imports torch when it is importable)::

    <torch-python> tools/dev/benchmark_torch_softmax.py [--threads 1] [--repeats 10] [--rounds 3]

Times ``torch.softmax`` over the last dim of the EfficientFormerV2-S1 attention
logits at 512x512 ((B, 8, 256, 256) and (B, 8, 256, 1024)), FreqFusion's
kernel normaliser as the official code writes it (softmax over dim 2 of
(B, 1, k*k, H, W), times the window of ones, divided by the sum over dim 2) at
H = 32, 64, 128 and k = 3, 5, for batch 1 and 2, and a 2x4096x4096 last-dim
softmax; forward (no grad) and forward+backward (gradient of sum(y * g)).
Prints the median wall-clock and process-CPU milliseconds per call.
Last run with torch 2.13.0+cpu.
"""
import argparse
import time

import numpy as np
import torch


def shapes(batches=(1, 2)):
    """(shape, dim, is the kernel normaliser) per case, as in tools/benchmark_ops.py."""
    cases = []
    for b in batches:
        cases += [((b, 8, 256, 256), -1, False), ((b, 8, 256, 1024), -1, False)]
        cases += [((b, 1, k * k, h, h), 2, True) for h in (32, 64, 128) for k in (3, 5)]
    cases.append(((2, 4096, 4096), -1, False))
    return cases


def kernel_normalizer(x, window):
    """FreqFusion's normaliser over dim 2, the official formulation."""
    x = torch.softmax(x, 2) * window
    return x / x.sum(2, keepdim=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--rounds', type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {args.threads} thread(s)')
    window = torch.ones(1)
    for shape, dim, normaliser in shapes():
        x = (3.0 * torch.randn(shape)).requires_grad_()
        g = torch.randn(shape)
        fn = (lambda v: kernel_normalizer(v, window)) if normaliser else (lambda v: torch.softmax(v, dim))
        for backward in (False, True):
            def call():
                if backward:
                    (fn(x) * g).sum().backward()
                    x.grad = None
                else:
                    with torch.no_grad():
                        fn(x)
            for _ in range(2):
                call()
            wall, cpu = [], []
            for _ in range(args.rounds * args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                call()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            name = 'FreqFusion normaliser' if normaliser else 'softmax'
            print(f'{name:22s} {"x".join(map(str, shape)):16s} dim{dim:<3d} {"fwd+bwd" if backward else "fwd":8s} '
                  f'wall {1e3 * np.median(wall):8.2f} ms  cpu {1e3 * np.median(cpu):8.2f} ms', flush=True)


if __name__ == '__main__':
    main()
