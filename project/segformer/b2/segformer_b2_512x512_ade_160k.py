# SegFormer-B2 on ADE20K.
# Official: configs/segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py.
_base_ = '../b0/segformer_b0_512x512_ade_160k.py'
checkpoint = 'pretrained/segformer/mit_b2_20220624-66e8bf70.pth'
model = dict(
    backbone=dict(arch='b2', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
