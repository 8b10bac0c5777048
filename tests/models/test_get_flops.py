"""tools/get_flops.py reproduces the official PyTorch model's counts (paper Table 2).

Reference figures: measured on the official OffSeg code at 512x512 with 150 classes,
a multiply-add counted once; the paper's Table 2 reports the conv-only count
(5.3G / 10.3G / 17.1G).
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tools'))

from get_flops import measure  # noqa: E402

from jseg.cli import load_config  # noqa: E402

OFFICIAL = {  # size: (params M, all-op GMACs, conv-only GMACs)
    'tiny': (6.22, 9.39, 5.29),
    'base': (12.96, 14.66, 10.22),
    'large': (26.41, 21.80, 17.02),
}


@pytest.mark.parametrize('size', sorted(OFFICIAL))
def test_offseg_params_and_flops_match_official(size):
    cfg = load_config(os.path.join(ROOT, 'project', 'offseg', size, f'offset_learning_{size}_512x512_ade_160k.py'))
    params, total, conv = measure(cfg, 512, 512)
    expect_params, expect_total, expect_conv = OFFICIAL[size]
    assert params / 1e6 == pytest.approx(expect_params, rel=0.03)
    assert total / 1e9 == pytest.approx(expect_total, rel=0.03)
    assert conv / 1e9 == pytest.approx(expect_conv, rel=0.03)
