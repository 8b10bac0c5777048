# SegNeXt-L on ADE20K (no offset learning variant in the paper or the official code).
# Official: configs/segnext/segnext_mscan-l_1xb16-adamw-160k_ade20k-512x512.py.
_base_ = '../tiny/segnext_tiny_512x512_ade_160k.py'
checkpoint = 'pretrained/segnext/mscan_l_20230227-cef260d4.pth'
model = dict(
    backbone=dict(arch='l', drop_path_rate=0.3, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=1024, ham_channels=1024))
