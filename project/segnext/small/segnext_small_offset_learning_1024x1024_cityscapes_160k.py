# SegNeXt-S with offset learning on Cityscapes.
# Official: local_configs/segnext_offset_learning/Small/segnext_mscan-s_offset_learning_160k_cityscapes-1024x1024.py.
_base_ = '../tiny/segnext_tiny_offset_learning_1024x1024_cityscapes_160k.py'
checkpoint = 'pretrained/segnext/mscan_s_20230227-f33ccdf2.pth'
model = dict(
    backbone=dict(arch='s', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=256, ham_channels=256))
# Global batch over all processes (the official recipe: 8 GPUs x 2 images).
train_dataloader = dict(batch_size=16)
