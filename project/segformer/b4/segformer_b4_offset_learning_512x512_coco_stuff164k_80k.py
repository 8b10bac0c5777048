# SegFormer-B4 with offset learning on COCO-Stuff-164K.
# Official: local_configs/segformer_offset_learning/B4/segformer_mit-b4_offset_learning_8xb2-80k_stuff164k-512x512.py.
_base_ = '../b0/segformer_b0_offset_learning_512x512_coco_stuff164k_80k.py'
checkpoint = 'pretrained/segformer/mit_b4_20220624-d588d980.pth'
model = dict(
    backbone=dict(arch='b4', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
