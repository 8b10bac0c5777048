# SegFormer-B5 on COCO-Stuff-164K. No official config: the recipe of the offset learning variant
# (local_configs/segformer_offset_learning/B5/segformer_mit-b5_offset_learning_8xb2-80k_stuff164k-512x512.py)
# with the plain SegformerHead.
_base_ = '../b0/segformer_b0_512x512_coco_stuff164k_80k.py'
checkpoint = 'pretrained/segformer/mit_b5_20220624-658746d9.pth'
model = dict(
    backbone=dict(arch='b5', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
