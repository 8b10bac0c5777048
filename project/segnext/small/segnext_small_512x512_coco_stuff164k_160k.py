# SegNeXt-S on COCO-Stuff-164K. No official config: the recipe of the offset learning variant
# (local_configs/segnext_offset_learning/Small/segnext_mscan-s_offset_learning_160k_stuff164k-512x512.py)
# with the plain LightHamHead.
_base_ = '../tiny/segnext_tiny_512x512_coco_stuff164k_160k.py'
checkpoint = 'pretrained/segnext/mscan_s_20230227-f33ccdf2.pth'
model = dict(
    backbone=dict(arch='s', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=256, ham_channels=256))
