"""Make the linear-sum-assignment fixture: cost matrices and SciPy's (rows, cols) for them.

jseg's ``linear_sum_assignment`` (``jseg/models/utils/assigner.py``) must return
exactly what ``scipy.optimize.linear_sum_assignment`` returns, ties included,
because mmdet's Mask2Former matcher calls SciPy. jseg does not depend on SciPy,
so this script runs SciPy once, OUTSIDE jseg's environment (any Python with
NumPy and SciPy; made with SciPy 1.17.1, NumPy 1.26.4)::

    python tools/dev/make_lsap_fixture.py [--out tests/fixtures/lsap/lsap_scipy.npz]

The matrices (all drawn from ``RandomState(2026)``):

* ``small``: 120 matrices of 1..9 rows x 1..9 columns (wide, tall, square),
  a third float64 normals, a third integers 0..2 (many ties), a third
  multiples of 0.1 in [-0.2, 0.1] (ties after float rounding);
* ``m2f``: Mask2Former-shaped (100, k) float32 costs for k in 1, 7, 30, 100, 150,
  (k = 150 > Q gives a wide one) built from the official weights (2 x class + 5 x sigmoid-CE + 5 x dice) of
  random probabilities, so they look like real matching costs;
* ``const``: constant and all-integer (100, k) / (k, 100) matrices (SciPy's
  identity rule for constant costs, mmdet's tall shape and its transpose).

Keys: ``{group}{i}_cost``, ``{group}{i}_rows``, ``{group}{i}_cols``.
"""
import argparse
import os

import numpy as np
from scipy.optimize import linear_sum_assignment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, 'tests', 'fixtures', 'lsap', 'lsap_scipy.npz')


def small_matrices(rng):
    out = []
    for t in range(120):
        shape = (rng.randint(1, 10), rng.randint(1, 10))
        if t % 3 == 0:
            out.append(rng.standard_normal(shape))
        elif t % 3 == 1:
            out.append(rng.randint(0, 3, shape).astype(np.float64))
        else:
            out.append(rng.randint(-2, 2, shape) * 0.1)
    return out


def m2f_matrices(rng, num_queries=100, num_points=64):
    out = []
    for k in (1, 7, 30, 100, 150):
        probs = rng.dirichlet(np.ones(151), size=num_queries)[:, rng.choice(150, k, replace=False)]
        sig = 1 / (1 + np.exp(-rng.standard_normal((num_queries, num_points))))
        gt = (rng.rand(k, num_points) < 0.3).astype(np.float64)
        bce = -(np.log(sig) @ gt.T + np.log(1 - sig) @ (1 - gt).T) / num_points
        dice = 1 - (2 * sig @ gt.T + 1) / (sig.sum(1)[:, None] + gt.sum(1)[None] + 1)
        out.append((-2 * probs + 5 * bce + 5 * dice).astype(np.float32))
    return out


def const_matrices(rng):
    return [np.ones((100, 7)), np.ones((7, 100)), np.zeros((5, 5)),
            rng.randint(0, 2, (100, 12)).astype(np.float64), rng.randint(0, 2, (12, 100)).astype(np.float64)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=DEFAULT_OUT)
    args = parser.parse_args()
    rng = np.random.RandomState(2026)
    arrays = {}
    for group, mats in (('small', small_matrices(rng)), ('m2f', m2f_matrices(rng)), ('const', const_matrices(rng))):
        for i, cost in enumerate(mats):
            rows, cols = linear_sum_assignment(cost)
            arrays[f'{group}{i}_cost'] = cost
            arrays[f'{group}{i}_rows'] = rows.astype(np.int64)
            arrays[f'{group}{i}_cols'] = cols.astype(np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, args.out)
    print(f'wrote {len(arrays) // 3} matrices to {args.out} ({os.path.getsize(args.out)} bytes)')


if __name__ == '__main__':
    main()
