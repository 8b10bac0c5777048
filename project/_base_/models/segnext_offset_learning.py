# SegNeXt with offset learning (official: local_configs/_base_/models/segnext_offset_learning.py of
# OffSeg): the SegNeXt model with LightHamHeadOffsetLearning (offset learning instead of the 1x1 classifier).
_base_ = './segnext_mscan-t.py'
model = dict(decode_head=dict(type='LightHamHeadOffsetLearning'))
