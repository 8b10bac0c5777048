# OffSeg-L on Cityscapes (official: local_configs/offseg/Large/offseg-l_cityscapes_160k-1024x1024.py).
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
        type='efficientformerv2_l_feat',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/eformer_v2/eformer_l_450.pth')),
    decode_head=dict(in_channels=[40, 80, 192, 384], new_channels=[32, 64, 128, 256], num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
# Global batch over all processes (the official recipe: 8 GPUs x 1 images).
train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1)
