# SegNeXt-T with offset learning on the synthetic demo shapes (7 classes, generated on first use),
# trained from scratch: a CPU-sized run of the whole train / val / test path, e.g.
#   python tools/run_net.py --config-file project/segnext/demo/segnext_tiny_offset_learning_128x128_demo_shapes_2k.py --task=train
# The recipe is the SegNeXt one (AdamW, head lr x10, warm-up, poly) with a 10x learning rate and a
# schedule shortened to 2k iterations; whole-image inference at the demo's test scale.
_base_ = [
    '../../_base_/models/segnext_offset_learning.py',
    '../../_base_/datasets/demo_shapes.py',
    '../../_base_/default_runtime.py',
    '../../_base_/schedules/offseg_adamw_80k.py',
]
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=7))
optim_wrapper = dict(optimizer=dict(lr=0.0006))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=50, end=2000),
]
max_iters = 2000
eval_interval = 500
checkpoint_interval = 500
log_interval = 20
