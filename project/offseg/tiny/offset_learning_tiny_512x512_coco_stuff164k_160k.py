# OffSeg-T on COCO-Stuff-164K (official: local_configs/offseg/Tiny/offseg-t_stuff164k_160k-512x512.py).
_base_ = [
    '../../_base_/models/offseg.py',
    '../../_base_/datasets/coco-stuff164k.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='efficientformerv2_s1_feat',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/eformer_v2/eformer_s1_450.pth')),
    decode_head=dict(in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128], num_classes=171),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(480, 480)))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
# As in the official config: 160k iterations, but the poly decay reaches lr 0 at iteration 80k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=80000),
]
