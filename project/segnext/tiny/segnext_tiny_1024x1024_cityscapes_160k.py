# SegNeXt-T on Cityscapes. No official config: the recipe of the offset learning variant
# (local_configs/segnext_offset_learning/Tiny/segnext_mscan-t_offset_learning_160k_cityscapes-1024x1024.py)
# with the plain LightHamHead.
_base_ = [
    '../../_base_/models/segnext_mscan-t.py',
    '../../_base_/datasets/cityscapes_1024x1024.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (1024, 1024)
checkpoint = 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
# Global batch over all processes (the official recipe: 8 GPUs x 1 image).
train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1)
