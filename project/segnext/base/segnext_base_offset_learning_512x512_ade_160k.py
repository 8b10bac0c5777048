# SegNeXt-B with offset learning on ADE20K.
# Official: local_configs/segnext_offset_learning/Base/segnext_mscan-b_offset_learning_160k_ade20k-512x512.py.
_base_ = '../tiny/segnext_tiny_offset_learning_512x512_ade_160k.py'
checkpoint = 'pretrained/segnext/mscan_b_20230227-3ab7d230.pth'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=512, ham_channels=512))
