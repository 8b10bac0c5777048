"""The OffSeg base model config with the Tiny settings builds, runs forward and backward at 64x64."""
import os
import warnings

import jittor as jt
import numpy as np

from jseg.config import Config
from jseg.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, 'project', '_base_', 'models', 'offseg.py')


def test_offseg_tiny_from_base_config_forward_backward():
    cfg = Config.fromfile(BASE).model.to_dict()
    assert cfg['type'] == 'EncoderDecoder' and cfg['decode_head']['type'] == 'OffSegHead'
    assert cfg['test_cfg'] == dict(mode='slide', crop_size=(512, 512), stride=(480, 480))
    # OffSeg-T (local_configs/offseg/Tiny); no ImageNet weights in tests
    cfg['backbone'] = dict(type='efficientformerv2_s1_feat', style='pytorch')
    cfg['decode_head'].update(in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128], channels=256)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg)
    rng = np.random.RandomState(0)
    batch = dict(inputs=rng.randint(0, 256, (2, 3, 64, 64)).astype(np.uint8),
                 gt_seg=rng.randint(0, 150, (2, 64, 64)).astype(np.uint8),
                 metas=[dict(ori_shape=(64, 64), img_shape=(64, 64), pad_shape=(64, 64), flip=False)] * 2)
    losses = model(batch, mode='loss')
    assert sorted(losses) == ['decode.acc_seg', 'decode.loss_ce']
    loss = losses['decode.loss_ce']
    assert np.isfinite(loss.item()) and loss.item() > 0
    named = [(n, p) for n, p in model.named_parameters() if not p.is_stop_grad()]
    grads = jt.grad(loss, [p for _, p in named])
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    by_name = {n: g for (n, _), g in zip(named, grads)}
    for name in ('backbone.patch_embed.0.weight', 'decode_head.offset_learning.cls_repr',
                 'decode_head.freqfusions.2.content_encoder.weight'):
        assert np.abs(by_name[name].numpy()).sum() > 0, name
    assert model(batch, mode='tensor').shape == (2, 150, 16, 16)
