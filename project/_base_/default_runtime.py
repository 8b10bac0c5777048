# Runtime settings read by jseg.runner.Runner (see its docstring for every key).
seed = 0
log_interval = 50          # iterations between training log records
max_keep_ckpts = -1        # iter_*.npz checkpoints kept in the work dir (-1: all)
save_best = 'mIoU'         # keep best_mIoU_iter_*.npz from validation
load_from = None           # weights to start from (jseg .npz or PyTorch .pth)
custom_hooks = []
tta_model = dict(type='SegTTAModel')
load_strict = True         # val/test/init_model stop when the checkpoint lacks a model weight
