# SegFormer-B1 with offset learning on ADE20K.
# Official: local_configs/segformer_offset_learning/B1/segformer_mit-b1_offset_learning_8xb2-160k_ade20k-512x512.py.
_base_ = '../b0/segformer_b0_offset_learning_512x512_ade_160k.py'
checkpoint = 'pretrained/segformer/mit_b1_20220624-02e5a6a1.pth'
model = dict(
    backbone=dict(arch='b1', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
