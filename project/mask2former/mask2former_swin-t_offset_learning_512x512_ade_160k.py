# Mask2Former Swin-T with offset learning on ADE20K, 512x512 crops, 160k iterations
# (Table 5 of the OffSeg paper: 47.6M params, 50.3 mIoU).
# Official: local_configs/mask2former_offset_learning/mask2former_offset_learning_swin-t_8xb2-160k_ade20k-512x512.py.
# It differs from the baseline only in the head type (and in its batch_size=8, see the baseline config).
_base_ = './mask2former_swin-t_512x512_ade_160k.py'
model = dict(decode_head=dict(type='Mask2FormerHeadOffsetLearning'))
