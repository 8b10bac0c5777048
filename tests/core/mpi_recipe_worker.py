"""Worker for tests/core/test_mpi_recipe.py: train the shipped OffSeg-T recipe for two steps.

Run as ``python mpi_recipe_worker.py OUT DATA_ROOT RUN...`` (one process) or under
``mpirun -np 2``; each RUN is done in turn in the same process (Jittor is imported and
its kernels compiled once), with the work directory ``OUT/<RUN>``:

* ``natural``: two training steps from scratch, a checkpoint after each;
* ``reversed``: the same, but every batch is fed with its samples in reverse order, which
  changes only the order of the sums over the batch (loss mean, BatchNorm statistics,
  weight gradients), i.e. what a second process changes;
* ``resume``: resume from ``OUT/natural/iter_1.npz`` and do the second step again.

The config is the shipped ``project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py``
(SyncBN trained, norm_eval=False; AdamW with the official parameter groups) with only what a
test needs changed; see ``OVERRIDES``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

CONFIG = os.path.join(ROOT, 'project', 'offseg', 'tiny', 'offset_learning_tiny_512x512_ade_160k.py')
CROP = (64, 64)
GLOBAL_BATCH = 4
TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=CROP, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]


def overrides(data_root):
    """What differs from the shipped config, and why.

    * data: the generated shapes dataset (ADE20K's layout, so the shipped ADE20KDataset and its 150
      classes stay) on 64x64 crops, the global batch ``GLOBAL_BATCH``, no worker processes, no
      validation;
    * no pretrained backbone (offline; the recipe is the same from any starting point), with
      ``norm_eval=False`` stated, since the backbone's default follows the official code and trains
      its BatchNorms only when it starts from pretrained weights;
    * head dropout 0: each rank draws its own dropout masks, so no run with another process count
      could match (the backbone of OffSeg-T has no drop path);
    * a constant learning rate: the shipped warm-up starts at 6e-11, too small for two steps to
      move a float32 weight; the base lr, the head's x10 and the decay groups stay.
    """
    return {
        'train_dataloader.batch_size': GLOBAL_BATCH,
        'train_dataloader.num_workers': 0,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.pipeline': TRAIN_PIPELINE,
        'val_dataloader': None,
        'model.data_preprocessor.size': CROP,
        'model.backbone.init_cfg': None,
        '+model.backbone.norm_eval': False,   # what the shipped config gets from its init_cfg
        'model.decode_head.dropout_ratio': 0.0,
        'param_scheduler': [],
        'max_iters': 2, 'checkpoint_interval': 1, 'log_interval': 1,
    }


def main(out, data_root, runs):
    from jseg.cli import load_config, select_device
    from jseg.runner.runner import Runner

    select_device(no_cuda=True)
    original_batches = Runner._train_batches

    def reversed_batches(self, loader):
        for batch in original_batches(self, loader):
            yield {k: v[::-1].copy() if k in ('inputs', 'gt_seg') else v[::-1] for k, v in batch.items()}

    for name in runs:
        cfg = load_config(CONFIG, overrides(data_root))
        resume = os.path.join(out, 'natural', 'iter_1.npz') if name == 'resume' else None
        Runner._train_batches = reversed_batches if name == 'reversed' else original_batches
        Runner(cfg, work_dir=os.path.join(out, name), resume=resume, seed=0).run('train')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
