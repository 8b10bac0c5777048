# SGD + poly schedule as mmsegmentation's schedule_80k (the OffSeg configs replace the optimizer).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)
]
max_iters = 80000
eval_interval = 8000
checkpoint_interval = 8000
