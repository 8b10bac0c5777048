# SegNeXt-S with offset learning on Pascal Context 59.
# Official: local_configs/segnext_offset_learning/Small/segnext_mscan-s_offset_learning_80k_pascal-context-59-480x480.py.
_base_ = '../tiny/segnext_tiny_offset_learning_480x480_pascal_context_59_80k.py'
checkpoint = 'pretrained/segnext/mscan_s_20230227-f33ccdf2.pth'
model = dict(
    backbone=dict(arch='s', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=256, ham_channels=256))
