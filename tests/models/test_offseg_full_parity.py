"""Whole-model parity of OffSeg-T with the official PyTorch model, through the public loading path.

The official ``EncoderDecoder`` (``efficientformerv2_s1_feat`` + ``OffSegHead``,
150 classes, as ``local_configs/offseg/Tiny/offseg-t_ade20k_160k-512x512.py``
builds it) was run in eval mode with the deterministic weights of
:func:`seeded_tensor`; ``tests/fixtures/offseg_full`` holds its state-dict
layout and outputs (see the README there). Here the same weights are written
to a PyTorch-format checkpoint (``torch_format_writer``, official key order,
``num_batches_tracked`` counters included), loaded with
``jseg.apis.init_model`` from the project config, and the model is run on the
same uint8 BGR image through ``model(batch, mode=...)``: preprocessing,
backbone, head, resizing, and sliding-window inference.
"""
import gzip
import json
import os
import sys
import zlib

import jittor as jt
import numpy as np
import pytest

from jseg.apis import init_model
from jseg.runner import checkpoint as checkpoint_module

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, 'fixtures', 'offseg_full')
CONFIG = os.path.join(ROOT, 'project', 'offseg', 'tiny', 'offset_learning_tiny_512x512_ade_160k.py')
H, W = 64, 96             # ceil(H / 16) and ceil(W / 16) even, as the official backbone needs
SLIDE_CFG = dict(mode='slide', crop_size=(64, 64), stride=(32, 32))   # two overlapping windows
TOL = 1e-4                # max |error| / max |reference|
MARGIN = 1e-3             # argmax must agree wherever the reference top-2 gap is larger

pytestmark = pytest.mark.filterwarnings('ignore:CrossEntropyLoss averages over all pixels')


def seeded_tensor(name, shape):
    """The fixture's weights: ``RandomState(crc32(name))`` draws with a scale chosen by the name.

    Conv/linear weights N(0, 1/fan_in), norm scales 1 + 0.1 N, biases 0.1 N,
    BatchNorm running means 0.1 N and variances U(0.5, 1.5), layer scales
    0.2 + 0.1 N (large enough for every block to matter), attention bias
    tables 0.5 N, anything else (``cls_repr``) N(0, 1).
    """
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    shape = tuple(int(s) for s in shape)
    z = rng.standard_normal(shape)
    leaf = name.rsplit('.', 1)[-1]
    if leaf == 'running_var':
        v = 0.5 + rng.uniform(size=shape)
    elif leaf == 'running_mean':
        v = 0.1 * z
    elif leaf.startswith('layer_scale'):
        v = 0.2 + 0.1 * z
    elif leaf == 'attention_biases_seg':
        v = 0.5 * z
    elif leaf == 'weight' and len(shape) == 1:
        v = 1.0 + 0.1 * z
    elif leaf == 'weight':
        v = z / np.sqrt(np.prod(shape[1:]))
    elif leaf == 'bias':
        v = 0.1 * z
    else:
        v = z
    return v.astype(np.float32)


def seeded_image():
    """The fixture's input: (H, W, 3) uint8 BGR noise."""
    return np.random.RandomState(2025).randint(0, 256, (H, W, 3)).astype(np.uint8)


def batch_of(img):
    shape = img.shape[:2]
    return dict(inputs=img.transpose(2, 0, 1)[None].copy(),
                metas=[dict(ori_shape=shape, img_shape=shape, pad_shape=shape)])


def rel_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


@pytest.fixture(scope='module')
def ref():
    with np.load(os.path.join(FIXTURES, 'offseg_t_64x96.npz')) as data:
        arrays = {k: data[k] for k in data.files}
    with gzip.open(os.path.join(FIXTURES, 'official_state_dict.json.gz'), 'rt') as f:
        arrays['state_dict'] = json.load(f)
    return arrays


def official_checkpoint(ref, int_buffers, path):
    """The official checkpoint layout: ``{'meta', 'state_dict'}`` with every official key, in order.

    Floating-point entries are seeded (float buffers the fixture stores keep
    the official values); integer index tables come from ``int_buffers``.
    """
    sys.path.insert(0, os.path.join(TESTS, 'utils'))
    try:
        import torch_format_writer
    finally:
        sys.path.remove(os.path.join(TESTS, 'utils'))
    state = {}
    for name, shape, dtype in ref['state_dict']:
        if name.endswith('num_batches_tracked'):
            value = np.array(0, np.int64)
        elif dtype != 'float32':
            value = int_buffers[name].astype(dtype)
        elif 'buffer/' + name in ref:
            value = ref['buffer/' + name]
        else:
            value = seeded_tensor(name, shape)
        assert list(value.shape) == shape and str(value.dtype) == dtype, name
        state[name] = value
    torch_format_writer.save_zip({'meta': {'iter': 160000, 'mmseg_version': '1.2.2'}, 'state_dict': state},
                                 str(path))


@pytest.fixture(scope='module')
def fresh_state():
    """State dict of the config's OffSeg-T as built (no checkpoint)."""
    return init_model(CONFIG, cfg_options={'model.backbone.init_cfg': None}).state_dict()


@pytest.fixture(scope='module')
def loaded(ref, fresh_state, tmp_path_factory):
    """(model, load report): the config's OffSeg-T from ``init_model`` with the official-layout .pth."""
    own = fresh_state
    int_buffers = {k: v.numpy() for k, v in own.items() if not str(v.dtype).startswith('float')}
    path = tmp_path_factory.mktemp('offseg_full') / 'offseg_t_seeded.pth'
    official_checkpoint(ref, int_buffers, path)

    reports = []

    def recording(*args, **kwargs):
        report = load_state_dict(*args, **kwargs)
        reports.append(report)
        return report

    load_state_dict = checkpoint_module.load_state_dict
    checkpoint_module.load_state_dict = recording
    try:
        model = init_model(CONFIG, str(path), cfg_options={'model.backbone.init_cfg': None})
    finally:
        checkpoint_module.load_state_dict = load_state_dict
    assert len(reports) == 1
    return model, reports[0]


def test_buffers_are_the_official_ones(ref, fresh_state):
    """Buffers jseg builds itself equal the official ones: index tables bit for bit, float buffers closely."""
    own = fresh_state
    names = [str(n) for n in ref['int_buffer_names']]
    assert names and all(k in own for k in names)
    crcs = [zlib.crc32(np.ascontiguousarray(own[k].numpy().astype(np.int64)).tobytes()) for k in names]
    assert crcs == ref['int_buffer_crc32'].tolist()
    for key in [k[len('buffer/'):] for k in ref if k.startswith('buffer/')]:
        np.testing.assert_allclose(own[key].numpy(), ref['buffer/' + key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_load_report_is_clean(ref, loaded):
    model, report = loaded
    official = [name for name, _, _ in ref['state_dict']]
    counters = [k for k in official if k.endswith('num_batches_tracked')]
    assert len(official) == 819 and len(counters) == 95         # PyTorch BatchNorm counters: ignored
    assert report.ok, report.summary()
    assert not report.missing and not report.unexpected and not report.mismatched
    assert sorted(report.loaded) == sorted(set(official) - set(counters)) == sorted(model.state_dict())


def test_head_logits_match_official(ref, loaded):
    model, _ = loaded
    with jt.no_grad():
        logits = model(batch_of(seeded_image()), mode='tensor').numpy()
    assert logits.shape == ref['head_logits'].shape == (1, 150, H // 4, W // 4)
    assert rel_error(logits, ref['head_logits']) < TOL


def check_full(logits, ref, prefix):
    """Compare (K, H, W) logits with the fixture's summary of the official ones."""
    assert logits.shape == (150, H, W)
    logits = logits.astype(np.float64)
    scale = np.abs(ref[f'{prefix}/grid']).max()
    assert np.abs(logits[:, 4::16, 4::16] - ref[f'{prefix}/grid']).max() < TOL * scale
    assert np.abs(logits.mean((1, 2)) - ref[f'{prefix}/class_mean']).max() < TOL * scale
    assert np.abs(np.sqrt((logits ** 2).mean((1, 2))) - ref[f'{prefix}/class_rms']).max() < TOL * scale
    clear = ref[f'{prefix}/margin'].astype(np.float64) > MARGIN
    assert clear.mean() > 0.99
    assert (logits.argmax(0) == ref[f'{prefix}/argmax'])[clear].all()


def test_predict_matches_official(ref, loaded):
    """The config's test_cfg (slide, 512 crops): one window clipped to the image = whole inference."""
    model, _ = loaded
    with jt.no_grad():
        logits = model(batch_of(seeded_image()), mode='predict')
    assert len(logits) == 1
    check_full(logits[0].numpy(), ref, 'whole')


def test_slide_inference_matches_official(ref, loaded):
    """mmseg 1.x sliding windows (64x64 crops, stride 32 on 64x96: two overlapping windows)."""
    model, _ = loaded
    saved = model.test_cfg
    model.test_cfg = dict(SLIDE_CFG)
    try:
        with jt.no_grad():
            logits = model(batch_of(seeded_image()), mode='predict')[0].numpy()
    finally:
        model.test_cfg = saved
    check_full(logits, ref, 'slide')
    with jt.no_grad():
        whole = model(batch_of(seeded_image()), mode='predict')[0].numpy()
    assert np.abs(whole - logits).max() > 0.1                  # the windows see different context
