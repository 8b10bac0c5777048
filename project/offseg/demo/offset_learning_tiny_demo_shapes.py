# OffSeg-T trained from scratch on the generated shapes dataset: the README's first command.
# A few hundred iterations on two CPU cores; no pretrained weights needed (offline).
_base_ = [
    '../../_base_/models/offseg.py',
    '../../_base_/datasets/demo_shapes.py',
    '../../_base_/default_runtime.py',
]
crop_size = (128, 128)
model = dict(
    # test images keep their aspect ratio: pad them to a multiple of 32 (the backbone's stride)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        type='efficientformerv2_s1_feat',
        norm_eval=False,  # from scratch, the backbone's BatchNorms must learn their statistics
        init_cfg=None),
    decode_head=dict(in_channels=[32, 48, 120, 224], new_channels=[32, 32, 64, 128], num_classes=7),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'head': dict(lr_mult=10.)
    }),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=30, end=300),
]
max_iters = 300
log_interval = 20
eval_interval = 300
checkpoint_interval = 100
max_keep_ckpts = 2
train_dataloader = dict(batch_size=8)
