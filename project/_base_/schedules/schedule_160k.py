# SGD + poly schedule as mmsegmentation's schedule_160k (the OffSeg configs replace the optimizer).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)
]
max_iters = 160000
eval_interval = 16000
checkpoint_interval = 16000
