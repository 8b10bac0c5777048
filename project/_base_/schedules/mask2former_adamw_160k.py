# The Mask2Former training recipe (official: configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py
# of mmsegmentation 1.x, as used by OffSeg): AdamW lr 1e-4, weight decay 0.05, backbone lr x0.1, no weight
# decay on the query/level embeddings nor on any norm layer (norm_decay_mult, mmengine's rule: a matching
# custom key wins, else parameters owned by a norm layer get no decay), gradient clipping at L2 norm 0.01,
# poly decay (power 0.9) over 160k iterations WITHOUT warm-up (the paper's Sec. 4.1 mentions a 1500-iteration
# warm-up for all models; the official Mask2Former configs have none, and the code is followed).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
        },
        norm_decay_mult=0.0))
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, by_epoch=False, begin=0, end=160000),
]
max_iters = 160000
eval_interval = 5000
checkpoint_interval = 5000
