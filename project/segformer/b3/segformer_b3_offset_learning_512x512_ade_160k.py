# SegFormer-B3 with offset learning on ADE20K.
# Official: local_configs/segformer_offset_learning/B3/segformer_mit-b3_offset_learning_8xb2-160k_ade20k-512x512.py.
_base_ = '../b0/segformer_b0_offset_learning_512x512_ade_160k.py'
checkpoint = 'pretrained/segformer/mit_b3_20220624-13b1141c.pth'
model = dict(
    backbone=dict(arch='b3', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
