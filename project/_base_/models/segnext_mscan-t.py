# SegNeXt model settings (official: configs/segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py of
# mmsegmentation 1.x, as shipped with OffSeg): MSCAN-T encoder (BN), LightHamHead on the strides 8-32
# levels (GN, NMF with rank 16, 6 training / 7 evaluation steps), whole-image inference on inputs
# padded to a multiple of 32. Other sizes set backbone.arch ('s', 'b') and the head's channels.
# ImageNet weights: https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_t_20230227-119e8c9f.pth
# (mscan_s/mscan_b likewise); the leaf configs expect them under pretrained/segnext/.
ham_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    test_cfg=dict(size_divisor=32))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='MSCAN',
        arch='t',                       # embed_dims [32, 64, 160, 256], mlp_ratios [8, 8, 4, 4], depths [3, 3, 5, 2]
        drop_rate=0.0,
        drop_path_rate=0.1,
        attention_kernel_sizes=[5, [1, 7], [1, 11], [1, 21]],
        attention_kernel_paddings=[2, [0, 3], [0, 5], [0, 10]],
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(
        type='LightHamHead',
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=256,
        ham_channels=256,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=ham_norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7, inv_t=100, rand_init=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
