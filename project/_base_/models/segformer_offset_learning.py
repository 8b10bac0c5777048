# SegFormer with offset learning (official: local_configs/_base_/models/segformer_offset_learning.py of
# OffSeg): the SegFormer model with SegformerHeadOffsetLearning (fusion, 2x2 max-pool to 1/8, offset
# learning) and sliding-window inference with 512x512 crops.
_base_ = './segformer_mit-b0.py'
model = dict(
    decode_head=dict(type='SegformerHeadOffsetLearning'),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(480, 480)))
