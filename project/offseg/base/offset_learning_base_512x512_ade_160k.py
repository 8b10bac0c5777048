# OffSeg-B on ADE20K (official: local_configs/offseg/Base/offseg-b_ade20k_160k-512x512.py).
_base_ = [
    '../../_base_/models/offseg.py',
    '../../_base_/datasets/ade20k.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_160k.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='efficientformerv2_s2_feat',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/eformer_v2/eformer_s2_450.pth')),
    decode_head=dict(in_channels=[32, 64, 144, 288], new_channels=[32, 64, 128, 256], num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(480, 480)))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
