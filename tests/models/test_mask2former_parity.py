"""Mask2Former (Swin-T) with and without offset learning: parity with the official PyTorch models.

``tests/fixtures/mask2former`` holds what the official OffSeg/mmdet models
computed with the seeded weights of ``model_helpers.seeded_weight`` (see the
README there and ``tools/dev/make_mask2former_fixtures.py``). Here the same
weights are written to a checkpoint in the official layout, loaded with
``jseg.apis.init_model`` from the project configs, and compared stage by
stage: the MSDeformAttn operator, the Swin outputs, the pixel decoder, the 10
class and mask predictions of the head and its attention masks, the
segmentation scores of ``predict``, the 30 loss terms with the matched queries
(the official random points replayed), the gradients of the head inputs, and
the optimizer's per-parameter multipliers.

Tensors the fixture summarises (``idx``/``val`` samples, per-row mean and rms)
are compared with :func:`summary_error`: max error / max |official| <= TOL.

Near-ties: each decoder layer attends through ``sigmoid(resize(mask logits)) < 0.5``;
a logit within rounding error of 0 could flip between frameworks and change
every later output. The fixture's inputs were chosen so that no such logit lies
within 1e-5 x max |logit| of its call (``*/attn_min_rel_margin``), and
:func:`test_head_attention_masks_match_official` checks that jseg's masks,
derived from its own mask logits, equal the official ones bit for bit, so the
comparisons after them are exact ones, not luck.
"""
import glob
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

from model_helpers import bilinear_resize_matrix, seeded_inputs, seeded_weight

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, 'fixtures', 'mask2former')
H, W = 64, 96
FEAT_SHAPES = [(1, 96, 16, 24), (1, 192, 8, 12), (1, 384, 4, 6), (1, 768, 2, 3)]
LEVEL_SIZES = [(2, 3), (4, 6), (8, 12)]        # memories, coarse to fine
TOL = 1e-4                # max |error| / max |official|
MSDA_TOL = 1e-5
MARGIN = 1e-3             # predict: argmax must agree wherever the official top-2 gap is larger
VARIANTS = ('ol', 'base')
HEAD_TYPES = {'ol': 'Mask2FormerHeadOffsetLearning', 'base': 'Mask2FormerHead'}
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


def project_config(variant):
    """The ADE20K 160k config of ``project/mask2former`` whose head is ``HEAD_TYPES[variant]``."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'project', 'mask2former', '**', '*.py'), recursive=True)):
        text = open(path).read()
        if 'ade' not in os.path.basename(path) or 'demo' in path:
            continue
        is_ol = 'Mask2FormerHeadOffsetLearning' in text
        if is_ol == (variant == 'ol'):
            found.append(path)
    assert len(found) == 1, f'expected one {variant} ADE20K config under project/mask2former, found {found}'
    return found[0]


def summary_error(ref, key, actual):
    """max |actual - official| / max |official| over the fixture's samples, row means and row rms."""
    actual = np.asarray(actual, np.float64)
    assert actual.shape == tuple(ref[key + '/shape']), (key, actual.shape)
    scale = float(ref[key + '/absmax'])
    flat = actual.reshape(-1)
    rows = np.moveaxis(actual, 1, 0).reshape(actual.shape[1], -1)
    errors = [np.abs(flat[ref[key + '/idx']] - ref[key + '/val']).max(),
              np.abs(rows.mean(1) - ref[key + '/row_mean']).max(),
              np.abs(np.sqrt((rows ** 2).mean(1)) - ref[key + '/row_rms']).max(),
              abs(np.abs(flat).max() - scale)]
    return max(errors) / scale


def seeded_image(seed):
    return np.random.RandomState(seed).randint(0, 256, (H, W, 3)).astype(np.uint8)


def normalised(img):
    rgb = img[..., ::-1].astype(np.float64)
    return ((rgb - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


@pytest.fixture(scope='module')
def ref():
    with np.load(os.path.join(FIXTURES, 'mask2former_64x96.npz')) as data:
        arrays = {k: data[k] for k in data.files}
    for variant in VARIANTS:
        with gzip.open(os.path.join(FIXTURES, f'official_state_dict_{variant}.json.gz'), 'rt') as f:
            arrays[f'{variant}/state_dict'] = json.load(f)
    with gzip.open(os.path.join(FIXTURES, 'official_optimizer_multipliers.json.gz'), 'rt') as f:
        arrays['optimizer'] = json.load(f)
    return arrays


def write_official_checkpoint(layout, int_buffers, path):
    """``{'meta', 'state_dict'}`` with every official key in order; floats seeded by name."""
    sys.path.insert(0, os.path.join(TESTS, 'utils'))
    try:
        import torch_format_writer
    finally:
        sys.path.remove(os.path.join(TESTS, 'utils'))
    state = {}
    for name, shape, dtype in layout:
        value = seeded_weight(name, shape) if dtype == 'float32' else int_buffers[name].astype(dtype)
        assert list(value.shape) == shape, name
        state[name] = value
    torch_format_writer.save_zip({'meta': {'iter': 160000, 'mmseg_version': '1.2.2'}, 'state_dict': state},
                                 str(path))


_MODELS = {}


@pytest.fixture(scope='module')
def loaded(ref, tmp_path_factory):
    """variant -> (model, load report, state dict as built): init_model(config, official-layout .pth)."""

    def get(variant):
        if variant not in _MODELS:
            config = project_config(variant)
            options = {'model.decode_head.train_cfg.num_points': int(ref['num_points'])}   # as the fixture
            fresh = init_model(config, cfg_options=options).state_dict()
            int_buffers = {k: v.numpy() for k, v in fresh.items() if not str(v.dtype).startswith('float')}
            path = tmp_path_factory.mktemp('mask2former') / f'{variant}_seeded.pth'
            write_official_checkpoint(ref[f'{variant}/state_dict'], int_buffers, path)
            reports = []
            load_state_dict = checkpoint_module.load_state_dict

            def recording(*args, **kwargs):
                report = load_state_dict(*args, **kwargs)
                reports.append(report)
                return report

            checkpoint_module.load_state_dict = recording
            try:
                model = init_model(config, str(path), cfg_options=options)
            finally:
                checkpoint_module.load_state_dict = load_state_dict
            assert len(reports) == 1
            _MODELS[variant] = (model, reports[0], fresh)
        return _MODELS[variant]
    yield get
    _MODELS.clear()


def head_inputs(ref):
    return [jt.array(f) for f in seeded_inputs(FEAT_SHAPES, int(ref['feat_seed']))]


# ---------------------------------------------------------------------------- operator

@pytest.mark.parametrize('fused', [False, True], ids=['reference', 'fused'])
def test_msda_matches_mmcv(ref, fused):
    """jseg's MSDeformAttn (grid_sample reference and the jt.code kernel) = mmcv's CPU path, incl.
    points outside the maps: forward and the gradients of value, locations and weights."""
    from jseg.ops import fused_ops, multi_scale_deformable_attn
    value, loc, weight = (jt.array(ref['msda/' + k]) for k in ('value', 'loc', 'weight'))
    shapes = tuple(tuple(int(s) for s in hw) for hw in ref['msda/spatial_shapes'])
    with fused_ops(fused):
        out = multi_scale_deformable_attn(value, shapes, loc, weight)
        grads = jt.grad((out * jt.array(ref['msda/cotangent'])).sum(), [value, loc, weight])
        errors = {'out': rel_error(out.numpy(), ref['msda/out'])}
        for name, g in zip(('value', 'loc', 'weight'), grads):
            errors['grad_' + name] = rel_error(g.numpy(), ref['msda/grad_' + name])
    print(f'\nMSDA {"fused" if fused else "reference"}: ' + ', '.join(f'{k} {v:.2e}' for k, v in errors.items()))
    assert max(errors.values()) < MSDA_TOL, errors


def rel_error(actual, expected):
    """max |actual - expected| / max |expected| over whole arrays."""
    assert actual.shape == expected.shape
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max())


# ---------------------------------------------------------------------------- layout

@pytest.mark.parametrize('variant', VARIANTS)
def test_state_dict_layout_is_official(ref, loaded, variant):
    """The official checkpoint loads with nothing missing, unexpected or mismatched, and jseg's
    state dict has exactly the official names (483 with offset learning, 481 without)."""
    model, report, fresh = loaded(variant)
    official = [name for name, _, _ in ref[f'{variant}/state_dict']]
    assert len(official) == {'ol': 483, 'base': 481}[variant]
    assert report.ok, report.summary()
    assert not report.missing and not report.unexpected and not report.mismatched
    assert sorted(report.loaded) == sorted(official) == sorted(model.state_dict())
    shapes = {name: shape for name, shape, _ in ref[f'{variant}/state_dict']}
    assert {k: list(v.shape) for k, v in fresh.items()} == shapes


def test_index_buffers_are_official(ref, loaded):
    """Swin's relative_position_index tables as built equal the official ones bit for bit."""
    _, _, fresh = loaded('ol')
    names = [str(n) for n in ref['int_buffer_names']]
    assert len(names) == 12
    crcs = [zlib.crc32(np.ascontiguousarray(fresh[k].numpy().astype(np.int64)).tobytes()) for k in names]
    assert crcs == ref['int_buffer_crc32'].tolist()


# ---------------------------------------------------------------------------- forward

def test_swin_outputs_match_official(ref, loaded):
    model, _, _ = loaded('ol')
    with jt.no_grad():
        outs = model.backbone(jt.array(normalised(seeded_image(int(ref['image_seed'])))))
    assert len(outs) == 4
    errors = [summary_error(ref, f'swin/out{i}', o.numpy()) for i, o in enumerate(outs)]
    print('\nSwin outputs rel. error: ' + ' '.join(f'{e:.2e}' for e in errors))
    assert max(errors) < TOL, errors


def test_pixel_decoder_matches_official(ref, loaded):
    model, _, _ = loaded('base')
    with jt.no_grad():
        mask_feature, memories = model.decode_head.pixel_decoder(head_inputs(ref))
    assert len(memories) == 3
    errors = [summary_error(ref, 'pixel_decoder/mask_feature', mask_feature.numpy())]
    errors += [summary_error(ref, f'pixel_decoder/memory{i}', m.numpy()) for i, m in enumerate(memories)]
    print('\npixel decoder rel. error (mask_feature, memory 1/32, 1/16, 1/8): ' + ' '.join(f'{e:.2e}' for e in errors))
    assert max(errors) < TOL, errors


_HEAD_OUTPUTS = {}


def head_outputs(ref, loaded, variant):
    if variant not in _HEAD_OUTPUTS:
        model, _, _ = loaded(variant)
        assert type(model.decode_head).__name__ == HEAD_TYPES[variant]
        with jt.no_grad():
            cls_preds, mask_preds = model.decode_head(head_inputs(ref))
        _HEAD_OUTPUTS[variant] = ([c.numpy() for c in cls_preds], [m.numpy() for m in mask_preds])
    return _HEAD_OUTPUTS[variant]


@pytest.mark.parametrize('variant', VARIANTS)
def test_head_attention_masks_match_official(ref, loaded, variant):
    """The bool mask each layer attends through, derived from jseg's own mask logits, equals the
    official one everywhere (no near-tie flipped), so the later comparisons are exact."""
    _, mask_preds = head_outputs(ref, loaded, variant)
    assert len(mask_preds) == 10
    assert ref[f'{variant}/attn_min_rel_margin'].min() > 1e-5
    flips = []
    for i, logits in enumerate(mask_preds):
        h, w = LEVEL_SIZES[i % 3]
        resized = np.einsum('yh,bqhw,xw->bqyx', bilinear_resize_matrix(h, logits.shape[2]), logits.astype(np.float64),
                            bilinear_resize_matrix(w, logits.shape[3]))
        blocked = resized[0].reshape(100, h * w) < 0
        official = np.unpackbits(ref[f'{variant}/attn{i}/blocked'])[:100 * h * w].reshape(100, h * w).astype(bool)
        flips.append(int((blocked != official).sum()))
    assert flips == [0] * 10, flips


@pytest.mark.parametrize('variant', VARIANTS)
def test_head_predictions_match_official(ref, loaded, variant):
    """The 10 class logits (1, 100, 151) and mask logits (1, 100, 16, 24) of the head."""
    cls_preds, mask_preds = head_outputs(ref, loaded, variant)
    assert len(cls_preds) == len(mask_preds) == 10
    cls_err = [summary_error(ref, f'{variant}/cls{i}', c) for i, c in enumerate(cls_preds)]
    mask_err = [summary_error(ref, f'{variant}/mask{i}', m) for i, m in enumerate(mask_preds)]
    print(f'\n{variant} cls rel. error: ' + ' '.join(f'{e:.1e}' for e in cls_err))
    print(f'{variant} mask rel. error: ' + ' '.join(f'{e:.1e}' for e in mask_err))
    assert max(cls_err) < TOL and max(mask_err) < TOL, (cls_err, mask_err)


def batch_of(img):
    shape = img.shape[:2]
    return dict(inputs=img.transpose(2, 0, 1)[None].copy(),
                metas=[dict(ori_shape=shape, img_shape=shape, pad_shape=shape)])


@pytest.mark.parametrize('variant', VARIANTS)
def test_predict_matches_official(ref, loaded, variant):
    """Whole model on the uint8 image (preprocessing, Swin, head, ``predict``) vs ``encode_decode``."""
    model, _, _ = loaded(variant)
    with jt.no_grad():
        logits = model(batch_of(seeded_image(int(ref['image_seed']))), mode='predict')
    assert len(logits) == 1
    logits = logits[0].numpy().astype(np.float64)
    prefix = f'{variant}/predict'
    assert logits.shape == (150, H, W)
    scale = np.abs(ref[prefix + '/grid']).max()
    errors = [np.abs(logits[:, 4::16, 4::16] - ref[prefix + '/grid']).max() / scale,
              np.abs(logits.mean((1, 2)) - ref[prefix + '/class_mean']).max() / scale,
              np.abs(np.sqrt((logits ** 2).mean((1, 2))) - ref[prefix + '/class_rms']).max() / scale]
    agree = logits.argmax(0) == ref[prefix + '/argmax']
    clear = ref[prefix + '/margin'].astype(np.float64) > MARGIN
    print(f'\n{variant} predict rel. error (grid, class mean, class rms): '
          + ' '.join(f'{e:.1e}' for e in errors) + f'; argmax agreement {agree.mean():.4%}')
    assert max(errors) < TOL, errors
    assert agree.mean() >= 0.999 and agree[clear].all()


# ---------------------------------------------------------------------------- training

_LOSSES = {}


def replayed_loss(ref, loaded, variant):
    """(losses as floats, matched labels (10, 100), input gradients) with the official random points."""
    if variant in _LOSSES:
        return _LOSSES[variant]
    model, _, _ = loaded(variant)
    head = model.decode_head
    draws = [ref[f'{variant}/rand{i}/{kind}'] for i in range(10) for kind in ('match', 'oversample', 'random')]

    def replay(shape):
        array = draws.pop(0)
        assert array.shape == tuple(shape), (array.shape, shape)
        return array

    calls = []
    assigner = head.criterion.assigner
    assign_batch = assigner.assign_batch

    def recording(cls_scores, pred_points, gt_labels, gt_points, *args, **kwargs):
        result = assign_batch(cls_scores, pred_points, gt_labels, gt_points, *args, **kwargs)
        calls.append((result, gt_labels))
        return result

    inputs = head_inputs(ref)
    head.criterion.point_rand = replay
    assigner.assign_batch = recording
    try:
        losses = head.loss(inputs, ref['gt_label_map'][None])
        total = sum(losses.values())
        grads = jt.grad(total, inputs)
    finally:
        head.criterion.point_rand = None
        del assigner.assign_batch
    assert not draws, f'{len(draws)} recorded random arrays were not used'
    assert len(calls) == 1
    results, gt_labels = calls[0]
    matched = np.full((len(results), 100), -1, np.int64)
    for l, (rows, cols) in enumerate(results):
        matched[l, np.asarray(rows, np.int64)] = np.asarray(gt_labels[l])[np.asarray(cols, np.int64)]
    _LOSSES[variant] = ({k: float(v.item()) for k, v in losses.items()}, matched, [g.numpy() for g in grads])
    return _LOSSES[variant]


@pytest.mark.parametrize('variant', VARIANTS)
def test_matching_matches_official(ref, loaded, variant):
    """Every query of every output is matched to the same GT class (or to none) as in mmdet."""
    _, matched, _ = replayed_loss(ref, loaded, variant)
    official = ref[f'{variant}/matched_labels']
    assert matched.shape == official.shape == (10, 100)
    assert (matched >= 0).sum() == (official >= 0).sum() == 50
    np.testing.assert_array_equal(matched, official)


@pytest.mark.parametrize('variant', VARIANTS)
def test_losses_match_official(ref, loaded, variant):
    """The 30 loss terms (loss_* of the last output, d0..d8.loss_*) with the official random points."""
    losses, _, _ = replayed_loss(ref, loaded, variant)
    prefix = f'{variant}/loss/'
    official = {k[len(prefix):]: float(v) for k, v in ref.items() if k.startswith(prefix)}
    assert len(official) == 30 and set(losses) == set(official)
    errors = {k: abs(losses[k] - official[k]) / abs(official[k]) for k in official}
    worst = max(errors, key=errors.get)
    print(f'\n{variant} losses: max rel. error {errors[worst]:.2e} ({worst}: {losses[worst]:.6f} vs '
          f'{official[worst]:.6f}); sum {sum(losses.values()):.5f} vs {sum(official.values()):.5f}')
    assert errors[worst] < TOL, errors


@pytest.mark.parametrize('variant', VARIANTS)
def test_input_gradients_match_official(ref, loaded, variant):
    """d(sum of the 30 losses)/d(head inputs), official random points replayed.

    The reference is the official model run in float64 on the same points: its own float32 gradients of
    the inputs that pass through the deformable encoder are off by up to 1.0e-4 of their maximum (the
    fixture's ``grad*/float32_rel_error``), too close to TOL to judge jseg's float32 result by."""
    _, _, grads = replayed_loss(ref, loaded, variant)
    errors = [summary_error(ref, f'{variant}/grad{i}', g) for i, g in enumerate(grads)]
    print(f'\n{variant} input gradient rel. error: ' + ' '.join(f'{e:.2e}' for e in errors))
    assert max(errors) < TOL, errors


def test_optimizer_multipliers_match_mmengine(ref, loaded):
    """Per parameter (lr / base lr, weight decay / base weight decay) of the OL config's optimizer,
    and its gradient clipping, as mmengine builds them from the official config."""
    from jseg.runner.optim import build_optimizer
    model, _, _ = loaded('ol')
    official = ref['optimizer']
    cfg = model.cfg.optim_wrapper
    model.train()                     # Jittor's eval() stops the gradients of the parameters
    try:
        optimizer, clip_grad = build_optimizer(model, cfg)
    finally:
        model.eval()
    base_lr, base_wd = cfg.optimizer.lr, cfg.optimizer.weight_decay
    assert (base_lr, base_wd) == (official['base_lr'], official['base_weight_decay'])
    assert dict(clip_grad) == official['clip_grad']
    ours = {}
    for group in optimizer.param_groups:
        for name in group['names']:
            ours[name] = [round(group['lr'] / base_lr, 6), round(group['weight_decay'] / base_wd, 6)]
    assert set(ours) == set(official['multipliers'])
    wrong = {k: (ours[k], v) for k, v in official['multipliers'].items() if ours[k] != v}
    assert not wrong, f'{len(wrong)} parameters differ (jseg, official): {dict(list(wrong.items())[:8])}'
