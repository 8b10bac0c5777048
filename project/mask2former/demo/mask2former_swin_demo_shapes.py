# Mask2Former trained from scratch on the generated shapes dataset on a CPU: 100 iterations of batch 4,
# 3-10 s each on two shared cores (about 15 minutes; loss 104 -> 52, mIoU 66 in one run).
# NOT the paper's model: a scaled-down Swin (embed_dims 32, window 4) and head (64 channels, 20 queries,
# 2 encoder layers, 1024 sampled points) so that it runs on a CPU; the structure (MSDeformAttn pixel
# decoder, 9 masked-attention decoder layers, 10 deeply supervised predictions, Hungarian matching)
# and the recipe (AdamW, norm_decay_mult 0, clipping at 0.01, poly without warm-up) are the real ones,
# with lr 5e-4 instead of 1e-4 for the short schedule.
_base_ = [
    '../../_base_/models/mask2former_swin-t.py',
    '../../_base_/datasets/demo_shapes.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/mask2former_adamw_160k.py',
]
crop_size = (128, 128)
num_classes = 7
channels = 64
model = dict(
    # test images keep their aspect ratio: pad them to a multiple of 32 (the backbone's stride)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    backbone=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4,
                  drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        feat_channels=channels,
        out_channels=channels,
        num_classes=num_classes,
        num_queries=20,
        pixel_decoder=dict(positional_encoding=dict(num_feats=channels // 2), encoder=dict(
            num_layers=2,
            layer_cfg=dict(self_attn_cfg=dict(embed_dims=channels, num_heads=4),
                           ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels)))),
        transformer_decoder=dict(layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=channels, num_heads=4),
            cross_attn_cfg=dict(embed_dims=channels, num_heads=4),
            ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels))),
        positional_encoding=dict(num_feats=channels // 2),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
        train_cfg=dict(num_points=1024)))
optim_wrapper = dict(optimizer=dict(lr=0.0005))
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, by_epoch=False, begin=0, end=100)]
max_iters = 100
log_interval = 10
eval_interval = 100
checkpoint_interval = 50
max_keep_ckpts = 2
train_dataloader = dict(batch_size=4)
