# SegFormer-B5 on ADE20K.
# Official: configs/segformer/segformer_mit-b5_8xb2-160k_ade20k-512x512.py.
_base_ = '../b0/segformer_b0_512x512_ade_160k.py'
checkpoint = 'pretrained/segformer/mit_b5_20220624-658746d9.pth'
model = dict(
    backbone=dict(arch='b5', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
