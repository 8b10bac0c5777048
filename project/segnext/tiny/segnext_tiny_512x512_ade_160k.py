# SegNeXt-T on ADE20K.
# Official: configs/segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py.
_base_ = [
    '../../_base_/models/segnext_mscan-t.py',
    '../../_base_/datasets/ade20k.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (512, 512)
checkpoint = 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=150))
# Global batch over all processes (the official recipe: 1 GPU x 16 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
