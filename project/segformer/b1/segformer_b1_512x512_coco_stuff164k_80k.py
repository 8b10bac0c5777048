# SegFormer-B1 on COCO-Stuff-164K. No official config: the recipe of the offset learning variant
# (local_configs/segformer_offset_learning/B1/segformer_mit-b1_offset_learning_8xb2-80k_stuff164k-512x512.py)
# with the plain SegformerHead.
_base_ = '../b0/segformer_b0_512x512_coco_stuff164k_80k.py'
checkpoint = 'pretrained/segformer/mit_b1_20220624-02e5a6a1.pth'
model = dict(
    backbone=dict(arch='b1', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
