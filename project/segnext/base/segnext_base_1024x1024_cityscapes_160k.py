# SegNeXt-B on Cityscapes. No official config: the recipe of the offset learning variant
# (local_configs/segnext_offset_learning/Base/segnext_mscan-b_offset_learning_160k_cityscapes-1024x1024.py)
# with the plain LightHamHead.
_base_ = '../tiny/segnext_tiny_1024x1024_cityscapes_160k.py'
checkpoint = 'pretrained/segnext/mscan_b_20230227-3ab7d230.pth'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=512, ham_channels=512))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
