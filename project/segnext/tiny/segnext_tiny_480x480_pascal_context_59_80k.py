# SegNeXt-T on Pascal Context 59. No official config: the recipe of the offset learning variant
# (local_configs/segnext_offset_learning/Tiny/segnext_mscan-t_offset_learning_80k_pascal-context-59-480x480.py)
# with the plain LightHamHead.
_base_ = [
    '../../_base_/models/segnext_mscan-t.py',
    '../../_base_/datasets/pascal_context_59.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_80k.py',
]
crop_size = (480, 480)
checkpoint = 'pretrained/segnext/mscan_t_20230227-119e8c9f.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
