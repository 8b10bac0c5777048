# SegFormer-B0 on COCO-Stuff-164K. No official config: the recipe of the offset learning variant
# (local_configs/segformer_offset_learning/B0/segformer_mit-b0_offset_learning_8xb2-80k_stuff164k-512x512.py)
# with the plain SegformerHead.
_base_ = [
    '../../_base_/models/segformer_mit-b0.py',
    '../../_base_/datasets/coco-stuff164k.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_80k.py',
]
crop_size = (512, 512)
checkpoint = 'pretrained/segformer/mit_b0_20220624-7e0fe6dd.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=171),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(480, 480)))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=1)
