"""Time Mask2Former's Hungarian matching: the NumPy assignment solver alone, and the batched assigner.

    python tools/dev/benchmark_matching.py [--points 12544] [--predictions 10] [--images 2] [--repeats 5]

Prints (1) the median time of ``linear_sum_assignment`` on (100, k) float32
costs for several k (the number of classes in a crop), and (2) for one loss
call's matching (``predictions x images`` cost matrices of k = 10 classes): the
time to build and fetch all cost matrices (one sync) and the time to solve
them, to decide whether the solver needs a compiled version.
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

from jseg.models.utils.assigner import HungarianAssigner, linear_sum_assignment  # noqa: E402


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--points', type=int, default=12544)
    parser.add_argument('--predictions', type=int, default=10)
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--classes', type=int, default=10, help='GT classes per image in part (2)')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    rng = np.random.RandomState(0)

    print('linear_sum_assignment on (100, k) float32 costs, median ms:')
    for k in (5, 10, 20, 40, 60, 100):
        cost = rng.rand(100, k).astype(np.float32)
        print(f'  k={k:3d}  {median_ms(lambda: linear_sum_assignment(cost), args.repeats):8.2f}')

    n, q, p, k = args.predictions * args.images, 100, args.points, args.classes
    cls = [jt.array(rng.standard_normal((q, 151)).astype(np.float32)) for _ in range(n)]
    masks = [jt.array(rng.standard_normal((q, p)).astype(np.float32)) for _ in range(n)]
    gts = [jt.array((rng.rand(k, p) < 0.2).astype(np.float32)) for _ in range(n)]
    labels = [rng.choice(150, k, replace=False) for _ in range(n)]
    jt.sync_all()
    assigner = HungarianAssigner()

    def costs():
        mats = assigner.cost_matrices(cls, masks, labels, gts)
        return jt.concat([m.reshape(-1) for m in mats]).numpy().reshape(n, q, k)

    costs()                                                    # compile
    fetched = costs()
    t_cost = median_ms(costs, args.repeats)
    t_solve = median_ms(lambda: [linear_sum_assignment(c) for c in fetched], args.repeats)
    print(f'{n} matchings (Q={q}, P={p}, k={k}): cost matrices + one fetch {t_cost:.1f} ms, '
          f'solving {t_solve:.1f} ms ({t_solve / n:.2f} ms each)')


if __name__ == '__main__':
    main()
