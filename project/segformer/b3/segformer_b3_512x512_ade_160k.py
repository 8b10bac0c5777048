# SegFormer-B3 on ADE20K.
# Official: configs/segformer/segformer_mit-b3_8xb2-160k_ade20k-512x512.py.
_base_ = '../b0/segformer_b0_512x512_ade_160k.py'
checkpoint = 'pretrained/segformer/mit_b3_20220624-13b1141c.pth'
model = dict(
    backbone=dict(arch='b3', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
