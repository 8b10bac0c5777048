"""EncoderDecoder with OffSegHead on a tiny stand-in backbone: losses, training, gradients, inference modes."""
import warnings

import jittor as jt
import numpy as np
import pytest
from jittor import nn

from jseg.models.segmentors import slide_windows
from jseg.models.utils import resize
from jseg.registry import MODELS
from jseg.runner.checkpoint import save_checkpoint


@MODELS.register_module(force=True)
class TinyPoolBackbone(nn.Module):
    """Four levels at strides 4..32: average pooling and a 1x1 conv (no dependency on real backbones)."""

    def __init__(self, channels=(16, 16, 16, 16)):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, c, 1) for c in channels])

    def execute(self, x):
        return [conv(nn.avg_pool2d(x, 2 ** (i + 2))) for i, conv in enumerate(self.convs)]


HEAD = dict(type='OffSegHead', in_channels=[16] * 4, new_channels=[16] * 4, in_index=[0, 1, 2, 3], channels=16,
            num_classes=5, norm_cfg=dict(type='GN', num_groups=4), align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', avg_non_ignore=True))
PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                    bgr_to_rgb=True, size=(64, 64))


def build_model(test_cfg=None, **kwargs):
    cfg = dict(type='EncoderDecoder', data_preprocessor=PREPROCESSOR, backbone=dict(type='TinyPoolBackbone'),
               decode_head=HEAD, test_cfg=test_cfg, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg)
    jt.sync_all()
    return model


def make_batch(seed=0, size=(64, 64), batch_size=2):
    rng = np.random.RandomState(seed)
    inputs = rng.randint(0, 256, (batch_size, 3) + size).astype(np.uint8)
    gt = (inputs[:, 2] // 52).astype(np.uint8)            # learnable: quantised red channel (BGR input)
    gt[:, :4, :4] = 255
    metas = [dict(ori_shape=size, img_shape=size, pad_shape=size, flip=False) for _ in range(batch_size)]
    return dict(inputs=inputs, gt_seg=gt, metas=metas)


def test_loss_keys_and_a_few_training_steps_reduce_the_loss():
    jt.set_global_seed(0)
    model = build_model()
    batch = make_batch()
    losses = model(batch, mode='loss')
    assert sorted(losses) == ['decode.acc_seg', 'decode.loss_ce']
    optimizer = jt.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for _ in range(6):
        losses = model(batch, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.step(loss)
        history.append(loss.item())
    assert history[-1] < 0.9 * history[0], history


def test_gradients_reach_every_head_parameter_but_conv_seg():
    model = build_model()
    # 96x96 gives a 3x3 coarsest map: smaller maps have no neighbour at distance 2 for the similarity
    losses = model(make_batch(1, size=(96, 96)), mode='loss')
    unused = {f'decode_head.{n}' for n in model.decode_head.unused_parameter_names()}
    named = [(n, p) for n, p in model.named_parameters() if not p.is_stop_grad()]
    assert len(named) > 50
    grads = jt.grad(losses['decode.loss_ce'], [p for _, p in named])
    missing = [n for (n, _), g in zip(named, grads) if n not in unused and not np.abs(g.numpy()).sum() > 0]
    assert not missing, missing
    assert all(np.abs(g.numpy()).sum() == 0 for (n, _), g in zip(named, grads) if n in unused)
    assert unused == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}


@pytest.mark.parametrize('size', [(64, 64), (100, 70), (512, 683), (40, 30)])
def test_slide_windows_cover_every_pixel(size):
    h, w = size
    boxes = slide_windows(h, w, (64, 64), (48, 48))
    count = np.zeros(size, int)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        assert (y2 - y1, x2 - x1) == (min(64, h), min(64, w))
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    rows = max(h - 64 + 47, 0) // 48 + 1
    cols = max(w - 64 + 47, 0) // 48 + 1
    assert len(boxes) == rows * cols                      # mmseg 1.x grid rule


def test_slide_inference_equals_whole_when_the_crop_covers_the_image():
    model = build_model(test_cfg=dict(mode='slide', crop_size=(96, 96), stride=(64, 64)))
    model.eval()
    inputs, _, metas = model.data_preprocessor(make_batch(2), training=False)
    slide = model.slide_inference(inputs, metas).numpy()
    whole = model.whole_inference(inputs, metas).numpy()
    np.testing.assert_allclose(slide, whole, rtol=1e-5, atol=1e-5)


def test_slide_inference_averages_overlapping_windows():
    model = build_model(test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(48, 48)))
    model.eval()
    inputs = jt.array(np.random.RandomState(3).randn(1, 3, 64, 80).astype(np.float32))
    out = model.slide_inference(inputs).numpy()
    total = np.zeros(out.shape)
    count = np.zeros((64, 80))
    for x1 in (0, 16):                                    # two windows: columns [0, 64) and [16, 80)
        total[..., x1:x1 + 64] += model.encode_decode(inputs[:, :, :, x1:x1 + 64]).numpy()
        count[:, x1:x1 + 64] += 1
    np.testing.assert_allclose(out, total / count, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Image shapes are different")
def test_predict_removes_padding_undoes_flip_and_resizes():
    model = build_model(test_cfg=dict(mode='whole'))
    model.eval()
    batch = make_batch(4, size=(64, 64), batch_size=2)
    batch['metas'][0].update(img_shape=(60, 50), ori_shape=(30, 25), flip=True, flip_direction='horizontal')
    batch['metas'][1].update(img_shape=(64, 64), ori_shape=(64, 64), flip=True, flip_direction='vertical')
    preds = model(batch, mode='predict')
    inputs, _, metas = model.data_preprocessor(batch, training=False)
    logits = model.inference(inputs, metas)
    assert [tuple(p.shape) for p in preds] == [(5, 30, 25), (5, 64, 64)]
    first = resize(logits[0:1, :, :60, :50].flip(3), size=(30, 25), mode='bilinear')[0]
    np.testing.assert_allclose(preds[0].numpy(), first.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(preds[1].numpy(), logits[1].flip(1).numpy(), rtol=1e-6, atol=1e-6)
    assert model(batch, mode='tensor').shape == (2, 5, 16, 16)
    raw = model.predict(inputs)                             # no metas: logits at the input size
    assert [tuple(p.shape) for p in raw] == [(5, 64, 64)] * 2


def test_auxiliary_heads_add_prefixed_losses():
    aux = dict(HEAD, num_classes=5)
    single = build_model(auxiliary_head=aux)
    assert sorted(single(make_batch(), mode='loss')) == ['aux.acc_seg', 'aux.loss_ce', 'decode.acc_seg',
                                                         'decode.loss_ce']
    double = build_model(auxiliary_head=[aux, aux])
    assert {k.split('.')[0] for k in double(make_batch(), mode='loss')} == {'aux_0', 'aux_1', 'decode'}


def test_init_weights_loads_a_pretrained_checkpoint(tmp_path):
    source = build_model()
    state = {k: v.numpy() + 1.0 for k, v in source.state_dict().items()}
    path = str(tmp_path / 'model.npz')
    save_checkpoint(path, state, meta={})
    model = build_model(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    loaded = model.state_dict()
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value, err_msg=name)
    assert model.num_classes == 5 and model.align_corners is False
