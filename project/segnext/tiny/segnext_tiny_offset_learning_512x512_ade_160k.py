# SegNeXt-T with offset learning on ADE20K.
# Official: local_configs/segnext_offset_learning/Tiny/segnext_mscan-t_offset_learning_160k_ade20k-512x512.py.
_base_ = [
    '../../_base_/models/segnext_offset_learning.py',
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
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
