"""Measure how many images per second the training data pipeline delivers.

    python tools/benchmark_data.py                                  # ADE20K-sized synthetic data
    python tools/benchmark_data.py --workers 0 2 4 --runs 7
    python tools/benchmark_data.py --config project/_base_/datasets/cityscapes_1024x1024.py \
        --data-root datasets/cityscapes --batch-size 8

Without ``--data-root`` it writes ``--num-images`` synthetic JPEGs of 683x512 with
label maps (ADE20K's typical size and layout) to a temporary folder. It builds the
config's ``train_dataloader`` (pipeline, crop, global batch size), iterates one
warm-up epoch per worker count (worker start-up, caches), then ``--runs`` timed
epochs, and prints the median images/s of the timed epochs. ``--step-time S``
sleeps S seconds per batch, like a training step on a GPU that leaves the CPU
to the workers; ``--profile`` also prints the time of each transform.
"""
import os
import os.path as osp
import shutil
import statistics
import tempfile
import time

from tool_common import ArgumentParser  # noqa: E402  (puts the checkout on sys.path)

DEFAULT_CONFIG = 'project/_base_/datasets/ade20k.py'


def make_ade_like_data(root, num_images, height=512, width=683, seed=0):
    """Write ``num_images`` JPEG/PNG pairs in ADE20K's layout (labels 0..150)."""
    import cv2
    import numpy as np

    from jseg.datasets.demo import render_sample
    img_dir = osp.join(root, 'images', 'training')
    ann_dir = osp.join(root, 'annotations', 'training')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        img, shapes = render_sample(rng, height, width)
        ade_ids = rng.choice(np.arange(1, 151), size=8, replace=False)  # shape classes -> ADE ids
        label = np.where(shapes > 0, ade_ids[np.minimum(shapes, 7)], 0).astype(np.uint8)
        name = f'ADE_train_{i + 1:08d}'
        cv2.imwrite(osp.join(img_dir, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    return root


def measure(loader, runs, step_time=0.0):
    """Images/s of ``runs`` epochs after one warm-up epoch: (median, all).

    ``step_time`` seconds of sleep per batch stand for a training step that
    leaves the CPU free (a GPU step): workers load the next batches meanwhile.
    """
    for _ in loader:  # warm-up: worker start-up, file cache
        pass
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        images = 0
        for batch in loader:
            images += len(batch['metas'])
            if step_time:
                time.sleep(step_time)
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates), rates


def profile_transforms(dataset, samples=32):
    """Mean milliseconds per sample of each transform of ``dataset.pipeline`` (main process, one thread pool)."""
    import numpy as np
    totals = {}
    for i in range(min(samples, len(dataset))):
        results = dataset.get_data_info(i)
        results['rng'] = np.random.RandomState(i)
        for transform in dataset.pipeline:
            start = time.perf_counter()
            results = transform(results)
            name = type(transform).__name__
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
    count = min(samples, len(dataset))
    return {name: 1000 * total / count for name, total in totals.items()}


def parse_args(argv=None):
    parser = ArgumentParser(description='Images/s of the training data pipeline.')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='config with a train_dataloader')
    parser.add_argument('--data-root', help='existing dataset folder (default: synthetic ADE20K-sized data)')
    parser.add_argument('--num-images', type=int, default=64, help='synthetic images to generate')
    parser.add_argument('--batch-size', type=int, default=16, help='global batch size')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2], help='worker counts to compare')
    parser.add_argument('--runs', type=int, default=5, help='timed epochs per worker count')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--profile', action='store_true', help='also time each transform')
    parser.add_argument('--step-time', type=float, default=0.0,
                        help='seconds of simulated (CPU-free, GPU-like) training step per batch')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import cv2

    from jseg.config import Config
    from jseg.datasets import build_dataloader

    tmp = None
    data_root = args.data_root
    if data_root is None:
        tmp = tempfile.mkdtemp(prefix='jseg_bench_')
        start = time.perf_counter()
        data_root = make_ade_like_data(tmp, args.num_images)
        print(f'wrote {args.num_images} synthetic 683x512 JPEGs + labels in {time.perf_counter() - start:.1f} s')
    try:
        cfg = Config.fromfile(args.config, {'train_dataloader.dataset.data_root': data_root,
                                            'train_dataloader.batch_size': args.batch_size})
        print(f'config {args.config}: crop {tuple(cfg.crop_size)}, global batch {args.batch_size}, '
              f'{os.cpu_count()} CPU cores, OpenCV threads {cv2.getNumThreads()}')
        print('pipeline: ' + ' -> '.join(t['type'] for t in cfg.train_dataloader.dataset.pipeline))
        if args.profile:
            from jseg.registry import DATASETS
            times = profile_transforms(DATASETS.build(cfg.train_dataloader.dataset))
            print('ms per sample: ' + ', '.join(f'{k} {v:.1f}' for k, v in times.items())
                  + f' (total {sum(times.values()):.1f})')
        for workers in args.workers:
            loader = build_dataloader(cfg.train_dataloader, num_workers=workers, seed=args.seed, training=True)
            median, rates = measure(loader, args.runs, args.step_time)
            loader.close()
            step = f', {args.step_time:g} s step per batch' if args.step_time else ''
            print(f'num_workers={workers}{step}: {median:6.1f} images/s (median of {args.runs} epochs of '
                  f'{len(loader) * loader.batch_size} images; runs: {", ".join(f"{r:.1f}" for r in rates)})')
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
