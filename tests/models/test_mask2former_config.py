"""The Mask2Former configs of project/mask2former: model layout, parameter counts, recipe, and run_net.

Expected names and counts come from the official module code (mmdet 3.x / mmseg 1.x / OffSeg),
as listed in the project's Mask2Former notes: head 292 state-dict entries and 19,918,935
parameters, offset learning +2 entries and +131,072 parameters; with Swin-T 47,439,633 and
47,570,705 parameters (paper, Table 5: 47.4M and 47.6M).
"""
import glob
import json
import os
import sys

import jittor as jt
import numpy as np
import pytest

from jseg.config import Config
from jseg.datasets import generate_demo_dataset
from jseg.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, 'project', 'mask2former', 'mask2former_swin-t_512x512_ade_160k.py')
OL = os.path.join(ROOT, 'project', 'mask2former', 'mask2former_swin-t_offset_learning_512x512_ade_160k.py')
DEMO = os.path.join(ROOT, 'project', 'mask2former', 'demo', 'mask2former_swin_demo_shapes.py')
TINY = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_mask2former_demo.py')

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


def official_head_names():
    """The official head's state-dict names, from the module structure of mmdet's Mask2FormerHead."""
    names = []
    pd, td = 'pixel_decoder.', 'transformer_decoder.'
    for i in range(3):
        names += [f'{pd}input_convs.{i}.conv.weight', f'{pd}input_convs.{i}.conv.bias',
                  f'{pd}input_convs.{i}.gn.weight', f'{pd}input_convs.{i}.gn.bias']
    for j in range(6):
        layer = f'{pd}encoder.layers.{j}.'
        for proj in ('sampling_offsets', 'attention_weights', 'value_proj', 'output_proj'):
            names += [f'{layer}self_attn.{proj}.weight', f'{layer}self_attn.{proj}.bias']
        names += [f'{layer}ffn.layers.0.0.weight', f'{layer}ffn.layers.0.0.bias',
                  f'{layer}ffn.layers.1.weight', f'{layer}ffn.layers.1.bias']
        names += [f'{layer}norms.{n}.{p}' for n in range(2) for p in ('weight', 'bias')]
    names += [f'{pd}level_encoding.weight', f'{pd}lateral_convs.0.conv.weight', f'{pd}lateral_convs.0.gn.weight',
              f'{pd}lateral_convs.0.gn.bias', f'{pd}output_convs.0.conv.weight', f'{pd}output_convs.0.gn.weight',
              f'{pd}output_convs.0.gn.bias', f'{pd}mask_feature.weight', f'{pd}mask_feature.bias']
    for j in range(9):
        layer = f'{td}layers.{j}.'
        for attn in ('self_attn', 'cross_attn'):
            names += [f'{layer}{attn}.attn.in_proj_weight', f'{layer}{attn}.attn.in_proj_bias',
                      f'{layer}{attn}.attn.out_proj.weight', f'{layer}{attn}.attn.out_proj.bias']
        names += [f'{layer}ffn.layers.0.0.weight', f'{layer}ffn.layers.0.0.bias',
                  f'{layer}ffn.layers.1.weight', f'{layer}ffn.layers.1.bias']
        names += [f'{layer}norms.{n}.{p}' for n in range(3) for p in ('weight', 'bias')]
    names += [f'{td}post_norm.weight', f'{td}post_norm.bias', 'query_embed.weight', 'query_feat.weight',
              'level_embed.weight', 'cls_embed.weight', 'cls_embed.bias']
    names += [f'mask_embed.{i}.{p}' for i in (0, 2, 4) for p in ('weight', 'bias')]
    return names


def build(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.pop('init_cfg', None)
    return cfg, MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def models():
    return {'base': build(BASE), 'ol': build(OL)}


def count(state):
    return sum(int(np.prod(v.shape)) for v in state.values())


def test_head_names_and_parameter_counts(models):
    expected = official_head_names()
    assert len(expected) == 292
    _, base = models['base']
    _, ol = models['ol']
    base_head, ol_head = base.decode_head.state_dict(), ol.decode_head.state_dict()
    assert sorted(base_head) == sorted(expected)
    offset = ['offset_learning.cls_offset_proj.weight', 'offset_learning.feat_offset_proj.weight']
    assert sorted(ol_head) == sorted(expected + offset)
    assert count(base_head) == 19_918_935
    assert count(ol_head) - count(base_head) == 131_072
    assert all(tuple(ol_head[name].shape) == (256, 256) for name in offset)
    shapes = {name: tuple(v.shape) for name, v in base_head.items()}
    assert shapes['pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight'] == (192, 256)
    assert shapes['pixel_decoder.encoder.layers.0.self_attn.attention_weights.weight'] == (96, 256)
    assert shapes['pixel_decoder.input_convs.0.conv.weight'] == (256, 768, 1, 1)     # index 0 = 1/32 level
    assert shapes['pixel_decoder.lateral_convs.0.conv.weight'] == (256, 96, 1, 1)
    assert shapes['transformer_decoder.layers.0.cross_attn.attn.in_proj_weight'] == (768, 256)
    assert shapes['cls_embed.weight'] == (151, 256)


def test_whole_model_parameter_counts_match_table_5(models):
    params = {k: count({n: v for n, v in m.state_dict().items() if 'float' in str(v.dtype)})
              for k, (_, m) in models.items()}
    assert params == {'base': 47_439_633, 'ol': 47_570_705}
    assert abs(params['base'] / 47.4e6 - 1) < 0.03 and abs(params['ol'] / 47.6e6 - 1) < 0.03


def test_offset_learning_config_differs_only_in_the_head_type(models):
    (base_cfg, _), (ol_cfg, _) = models['base'], models['ol']
    assert ol_cfg.model.decode_head.type == 'Mask2FormerHeadOffsetLearning'
    ol_cfg.model.decode_head.type = base_cfg.model.decode_head.type
    assert ol_cfg.model == base_cfg.model and ol_cfg.optim_wrapper == base_cfg.optim_wrapper
    assert ol_cfg.train_dataloader == base_cfg.train_dataloader


def test_recipe_is_the_official_one(models):
    cfg, _ = models['base']
    assert cfg.train_dataloader.batch_size == 16 and cfg.max_iters == 160000
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                                               weight_decay=0.05)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert cfg.param_scheduler == [dict(type='PolyLR', eta_min=0, power=0.9, by_epoch=False, begin=0,
                                        end=160000)]
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert len(keys) == 4 + 4 + 12 + 3 and cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize['type'] == 'RandomChoiceResize' and resize['max_size'] == 2048
    assert resize['scales'] == [int(512 * x * 0.1) for x in range(5, 21)]
    head = cfg.model.decode_head
    assert head.train_cfg.num_points == 12544 and head.loss_cls.class_weight == [1.0] * 150 + [0.1]


def tiny_segmentor():
    cfg = Config.fromfile(TINY)
    jt.set_global_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    return model


def tiny_batch():
    """Two 64x64 images whose labels are learnable (quantised blue channel) with ignored pixels."""
    rng = np.random.RandomState(0)
    inputs = rng.randint(0, 256, (2, 3, 64, 64)).astype(np.uint8)
    inputs[:, :, :, 32:] //= 2                                  # two regions of different statistics
    gt = (inputs[:, 0] // 64).astype(np.uint8)                  # classes 0..3
    gt[:, :4, :4] = 255
    metas = [dict(ori_shape=(64, 64), img_shape=(64, 64), pad_shape=(64, 64), flip=False) for _ in range(2)]
    return dict(inputs=inputs, gt_seg=gt, metas=metas)


def test_every_parameter_gets_a_gradient():
    """Tiny demo segmentor, one loss: every parameter (backbone and head) receives a non-zero gradient."""
    model = tiny_segmentor()
    losses = model(tiny_batch(), mode='loss')
    assert len([k for k in losses if 'loss' in k]) == 30
    named = [(n, p) for n, p in model.named_parameters() if not p.is_stop_grad()]
    grads = jt.grad(sum(v for k, v in losses.items() if 'loss' in k), [p for _, p in named])
    zero = [n for (n, _), g in zip(named, grads) if not np.abs(g.numpy()).max() > 0]
    assert model.decode_head.unused_parameter_names() == []
    # mmcv's deformable-attention init zeroes the weights of sampling_offsets and attention_weights,
    # so at step 0 the encoder's positional encodings (and the level embedding in them) change nothing
    assert zero == ['decode_head.pixel_decoder.level_encoding.weight'], '\n'.join(zero)


def test_one_batch_overfit_reduces_the_loss():
    model = tiny_segmentor()
    batch = tiny_batch()
    optimizer = jt.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(10):
        losses = model(batch, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.step(loss)
        history.append(loss.item())
    assert np.all(np.isfinite(history)) and history[-1] < 0.85 * history[0], history


# ---------------------------------------------------------------------------- run_net

sys.path.insert(0, os.path.join(ROOT, 'tools'))
import run_net  # noqa: E402


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    return generate_demo_dataset(root, num_train=4, num_val=2, size=(64, 96), seed=3)


def options(data_root, head_type):
    return ['--cfg-options', f"train_dataloader.dataset.data_root='{data_root}'",
            f"val_dataloader.dataset.data_root='{data_root}'", f"test_dataloader.dataset.data_root='{data_root}'",
            f"model.decode_head.type='{head_type}'"]


@pytest.fixture(scope='module', params=['Mask2FormerHead', 'Mask2FormerHeadOffsetLearning'])
def head_type(request):
    """Both systems of Table 5 go through run_net: the baseline head and the offset-learning one."""
    return request.param


@pytest.fixture(scope='module')
def trained(data_root, head_type, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('work'))
    assert run_net.main(['--config-file', TINY, '--task=train', '--work-dir', work,
                         *options(data_root, head_type)]) == 0
    return work


def test_run_net_trains_and_logs_the_30_loss_terms(trained, head_type):
    assert os.path.isfile(os.path.join(trained, 'iter_2.npz'))
    with np.load(os.path.join(trained, 'iter_2.npz')) as ckpt:
        has_offset_learning = any('offset_learning.cls_offset_proj' in name for name in ckpt.files)
    assert has_offset_learning == (head_type == 'Mask2FormerHeadOffsetLearning')
    records = [json.loads(line) for path in glob.glob(os.path.join(trained, 'logs', '*.jsonl'))
               for line in open(path)]
    train = [r for r in records if r['mode'] == 'train']
    assert [r['iter'] for r in train] == [1, 2]
    terms = [k for k in train[0] if k.startswith('decode.') and 'loss' in k]
    assert len(terms) == 30 and 'decode.loss_cls' in terms and 'decode.d8.loss_dice' in terms
    assert all(np.isfinite(r['loss']) for r in train)
    assert [r for r in records if r['mode'] == 'val'][0]['iter'] == 2


def test_run_net_val_and_test(trained, data_root, head_type, tmp_path):
    ckpt = os.path.join(trained, 'iter_2.npz')
    assert run_net.main(['--config-file', TINY, '--task=val', f'--resume={ckpt}', '--work-dir', trained,
                         *options(data_root, head_type)]) == 0
    result = json.load(open(sorted(glob.glob(os.path.join(trained, 'val_*.json')))[-1]))
    assert result['num_samples'] == 2 and 0 <= result['mIoU'] <= 1
    save = str(tmp_path / 'pred')
    assert run_net.main(['--config-file', TINY, '--task=test', f'--load-from={ckpt}', '--work-dir', trained,
                         f'--save-dir={save}', *options(data_root, head_type)]) == 0
    assert len(glob.glob(os.path.join(save, 'labels', '*.png'))) == 2
