# SegNeXt-T with offset learning on COCO-Stuff-164K.
# Official: local_configs/segnext_offset_learning/Tiny/segnext_mscan-t_offset_learning_160k_stuff164k-512x512.py.
_base_ = [
    '../../_base_/models/segnext_offset_learning.py',
    '../../_base_/datasets/coco-stuff164k.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (512, 512)
checkpoint = 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=171))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
# As the official config: a 160k-iteration run whose poly decay ends at iteration 80k, so the
# learning rate is 0 for the last 80k iterations (only BatchNorm statistics still change).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=80000),
]
