# OffSeg-T on Cityscapes (official: local_configs/offseg/Tiny/offseg-t_cityscapes_160k-1024x1024.py).
_base_ = [
    '../../_base_/models/offseg.py',
    '../../_base_/datasets/cityscapes_1024x1024.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='efficientformerv2_s1_feat',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/eformer_v2/eformer_s1_450.pth')),
    decode_head=dict(in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128], num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
# Global batch over all processes (the official recipe: 8 GPUs x 1 images).
train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1)
