"""Ideal class representation mining (OffSeg paper, Sec. 3.2 and Fig. 3) for a trained model.

    python tools/analyze_ideal_repr.py CONFIG CHECKPOINT [--split val] [--num-images N]
        [--classes sky tree ...] [--images-per-class 10] [--out-dir DIR]

For every image of the split: the decode head's final pixel features E (N x C,
the input of its classifier, before offset learning for offset-learning
heads; see jseg/analysis/features.py), the ground-truth one-hot masks M
(K x N) sampled at the features' resolution (nearest, ignored pixels dropped),
and W* = M (E^T)^+ solved in float64. Prints the reconstruction mIoU of
argmax(W* E^T) over the split (per-class areas accumulated as the validation
metric does) and, for the chosen classes (default: the six classes found in
the most images), the mean cosine similarity between the W* rows of one class
in different images. Writes to --out-dir (default
work_dirs/<config name>/ideal_repr):

* ideal_repr_similarity.png: one heatmap per class of those cosine
  similarities (images in split order; tick labels are dataset indices), with a
  colour bar, as the paper's Fig. 3 (drawn with matplotlib: pip install -e .[tools]);
* ideal_repr.json: the metrics, the per-class IoU, the images and matrices.

Images go through the config's test pipeline and are processed whole (also
for configs that test with sliding windows). Works for baseline heads
(SegformerHead, LightHamHead) and offset-learning heads (OffSegHead,
SegformerHeadOffsetLearning, LightHamHeadOffsetLearning).
"""
import argparse
import difflib
import json
import os.path as osp
import sys

from tool_common import ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)

import numpy as np  # noqa: E402

SPLITS = {'val': 'val_dataloader', 'test': 'test_dataloader', 'train': 'train_dataloader'}
PNG_NAME, JSON_NAME = 'ideal_repr_similarity.png', 'ideal_repr.json'


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='Python config file')
    parser.add_argument('checkpoint', help='trained weights (jseg .npz or PyTorch .pth)')
    parser.add_argument('--split', default='val', choices=sorted(SPLITS),
                        help='which dataloader\'s dataset to analyse; train uses the validation pipeline '
                             '(default: %(default)s)')
    parser.add_argument('--num-images', type=int, default=None,
                        help='analyse the first N images of the split (default: all)')
    parser.add_argument('--classes', nargs='+', default=None, metavar='NAME',
                        help='classes to plot, by name or index (default: the six found in the most images)')
    parser.add_argument('--images-per-class', type=int, default=10,
                        help='images per class in each heatmap, the first ones containing the class '
                             '(default: %(default)s)')
    parser.add_argument('--out-dir', default=None, help='output folder (default: work_dirs/<config name>/ideal_repr)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries, e.g. val_dataloader.dataset.data_root=\'data/ade\'')
    parser.add_argument('--no-cuda', action='store_true', help='run on the CPU even if CUDA works')
    args = parser.parse_args(argv)
    if args.num_images is not None and args.num_images < 1:
        parser.error('--num-images must be at least 1')
    if args.images_per_class < 1:
        parser.error('--images-per-class must be at least 1')
    return args


def split_dataset_cfg(cfg, split):
    """The dataset config of ``split``; the train split gets the validation pipeline (no random crops)."""
    from jseg.config import ConfigError
    key = SPLITS[split]
    loader = cfg.get(key, None)
    if not loader or not loader.get('dataset', None):
        raise ConfigError(f'the config has no {key}.dataset for --split {split}')
    dataset = dict(loader['dataset'])
    if split == 'train':
        for other in ('val_dataloader', 'test_dataloader'):
            pipeline = (cfg.get(other, None) or {}).get('dataset', {}).get('pipeline', None)
            if pipeline:
                dataset['pipeline'] = [dict(t) for t in pipeline]
                break
        else:
            raise ConfigError('--split train needs a val_dataloader or test_dataloader pipeline to load images with')
    return dataset


def resolve_classes(names, class_names):
    """Class indices for ``--classes`` given by name or index."""
    from jseg.config import ConfigError
    indices = []
    for name in names:
        if name in class_names:
            indices.append(class_names.index(name))
        elif name.isdigit() and int(name) < len(class_names):
            indices.append(int(name))
        else:
            near = difflib.get_close_matches(name, class_names, n=3)
            hint = f'; did you mean {", ".join(map(repr, near))}?' if near else ''
            raise ConfigError(f'--classes: unknown class {name!r}{hint}')
    return indices


def analyse(model, dataset, num_images, images_per_class, progress=True):
    """Run the analysis over the first ``num_images`` samples of ``dataset``; returns (analysis, info)."""
    import jittor as jt
    from tqdm import tqdm

    from jseg.analysis import IdealReprAnalysis, labels_at_feature_resolution
    from jseg.analysis.features import classifier_of, final_features
    from jseg.config import ConfigError
    from jseg.datasets import DataError, collate_samples
    head = model.decode_head
    classifier_name, _ = classifier_of(head)  # fail early on an unknown head
    analysis = IdealReprAnalysis(head.num_classes, ignore_index=head.ignore_index,
                                 images_per_class=images_per_class)
    info = dict(head=type(head).__name__, classifier=classifier_name, channels=None, feature_shapes=[])
    model.eval()
    with jt.no_grad():
        for index in tqdm(range(num_images), desc='ideal repr', disable=not progress, dynamic_ncols=True):
            sample = dataset[index]
            if isinstance(sample, list):
                raise ConfigError('the split\'s pipeline produces test-time-augmentation views; '
                                  'use one without TestTimeAug')
            batch = collate_samples([sample])
            if 'gt_seg' not in batch:
                raise DataError(batch['metas'][0].get('img_path'),
                                'no ground truth loaded (the pipeline needs LoadAnnotations)')
            inputs, _, metas = model.data_preprocessor(batch, training=False)
            feats = final_features(head, model.extract_feat(inputs)).numpy()[0]   # (C, h, w)
            channels, h, w = feats.shape
            label = labels_at_feature_resolution(batch['gt_seg'][0], metas[0]['img_shape'], metas[0]['pad_shape'],
                                                 (h, w), head.ignore_index)
            analysis.add(feats.reshape(channels, h * w).T, label.reshape(-1), image_id=index)
            info['channels'] = channels
            if len(info['feature_shapes']) < 3:
                info['feature_shapes'].append([h, w])
            jt.clean_graph()
    return analysis, info


def draw_figure(panels, title, columns=3):
    """Fig. 3: one cosine-similarity heatmap per class, ``columns`` per row, one shared colour bar.

    Args:
        panels (list[tuple[str, list[int], np.ndarray]]): (class name, dataset indices of its images,
            (n, n) cosine similarities of the class's W* rows in those images).
        title (str): the figure title.

    Returns:
        matplotlib.figure.Figure: about 300 x 300 px per panel, colours from -1 (blue) to 1 (red).
    """
    from matplotlib.colors import Normalize

    from jseg.utils.plot import new_figure
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    figure = new_figure(300 * columns + 120, 300 * rows + 70)
    grid = figure.subplots(rows, columns, squeeze=False)
    norm = Normalize(vmin=-1.0, vmax=1.0)
    image = None
    for ax, (name, ids, matrix) in zip(grid.flat, panels):
        image = ax.imshow(np.asarray(matrix, dtype=np.float64), cmap='coolwarm', norm=norm, interpolation='nearest')
        ticks = np.arange(len(ids))
        step = max(1, -(-len(ids) // 10))  # at most ten tick labels per axis
        ax.set_xticks(ticks[::step], [str(i) for i in ids][::step], fontsize=7, rotation=90)
        ax.set_yticks(ticks[::step], [str(i) for i in ids][::step], fontsize=7)
        ax.set_title(f'{name} ({len(ids)} images)', fontsize=10)
        ax.set_xlabel('image index', fontsize=8)
        ax.set_ylabel('image index', fontsize=8)
    for ax in grid.flat[len(panels):]:
        ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 0.9, 1))
    bar = figure.add_axes((0.91, 0.15, 0.02, 0.7))
    figure.colorbar(image, cax=bar, label='cosine similarity')
    return figure


def main(argv=None):
    args = parse_args(argv)
    # UnsupportedHeadError is a ConfigError; a missing matplotlib is a MissingDependencyError (jseg.cli.ERRORS)
    return run_tool(run, args, no_cuda=args.no_cuda)


def run(args):
    from jseg.cli import load_config, select_device
    from jseg.analysis import mean_off_diagonal
    from jseg.apis import init_model
    from jseg.datasets import DataError
    from jseg.evaluation import format_metrics_table
    from jseg.registry import DATASETS
    from jseg.utils.fileio import atomic_write_text
    from jseg.utils.plot import require_matplotlib, save_figure
    require_matplotlib()  # before the analysis, not after it
    device = select_device(args.no_cuda)
    cfg = load_config(args.config, args.cfg_options)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    dataset = DATASETS.build(split_dataset_cfg(cfg, args.split))
    total = len(dataset)
    if total == 0:
        raise DataError(None, f'the {args.split} split has no images')
    num_images = min(total, args.num_images or total)
    num_classes = cfg.model.decode_head.num_classes
    class_names = list(dataset.metainfo.get('classes') or [])
    if len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    wanted = resolve_classes(args.classes, class_names) if args.classes else None
    model = init_model(cfg, args.checkpoint)

    print(f'ideal class representations of {cfg.name} ({args.checkpoint}) on {num_images} of {total} '
          f'{args.split} images, {device}')
    analysis, info = analyse(model, dataset, num_images, args.images_per_class)
    metrics = analysis.metrics()
    print(format_metrics_table(metrics, class_names))
    print(f'features: {info["head"]} input of {info["classifier"]}, {info["channels"]} channels '
          f'(e.g. {" ".join("x".join(map(str, s)) for s in info["feature_shapes"])})')
    print(f'reconstruction mIoU: {100 * metrics["mIoU"]:.2f}% (aAcc {100 * metrics["aAcc"]:.2f}%, '
          f'mAcc {100 * metrics["mAcc"]:.2f}%) over {metrics["num_images"]} images')

    chosen = wanted if wanted is not None else analysis.frequent_classes(6)
    panels, per_class = [], {}
    for k in chosen:
        ids, matrix = analysis.similarity(k)
        if not ids:
            print(f'  {class_names[k]}: in none of the analysed images, not plotted')
            continue
        mean = mean_off_diagonal(matrix)
        per_class[class_names[k]] = dict(index=int(k), images=[int(i) for i in ids],
                                         mean_cosine_similarity=None if np.isnan(mean) else mean,
                                         similarity=np.round(matrix, 6).tolist())
        print(f'  {class_names[k]}: {len(ids)} images, mean cosine similarity of W* between images: '
              + ('n/a (one image)' if np.isnan(mean) else f'{mean:.3f}'))
        panels.append((class_names[k], ids, matrix))
    if not panels:
        raise DataError(None, 'no class to plot: none of the chosen classes occurs in the analysed images')

    out_dir = args.out_dir or osp.join('work_dirs', cfg.name, 'ideal_repr')
    title = (f'Cosine similarity of ideal class representations W* = M (E^T)^+ across images - {cfg.name}, '
             f'reconstruction mIoU {100 * metrics["mIoU"]:.1f}%')
    png = save_figure(draw_figure(panels, title), osp.join(out_dir, PNG_NAME))
    report = dict(config=cfg.name, checkpoint=args.checkpoint, split=args.split, num_images=metrics['num_images'],
                  head=info['head'], classifier=info['classifier'], channels=info['channels'],
                  reconstruction=dict(aAcc=metrics['aAcc'], mIoU=metrics['mIoU'], mAcc=metrics['mAcc'],
                                      IoU={n: (None if np.isnan(v) else float(v))
                                           for n, v in zip(class_names, metrics['IoU'])}),
                  classes=per_class)
    atomic_write_text(osp.join(out_dir, JSON_NAME), json.dumps(report, indent=2) + '\n')
    print(f'wrote {png} and {osp.join(out_dir, JSON_NAME)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
