"""Make Cityscapes' train-id label maps: ``*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png``.

    python tools/convert_datasets/cityscapes.py datasets/cityscapes --nproc 8

Reads every ``<cityscapes>/gtFine/<split>/<city>/*_gtFine_labelIds.png`` (from the
official ``gtFine_trainvaltest.zip``) and writes, beside it (or under ``--out-dir``),
the map of the 19 training classes (0..18) with every other id set to 255
(ignored), using the official ``cityscapesscripts`` label table. Also writes
``train.txt``, ``val.txt`` and ``test.txt`` listing ``<city>/<name>`` per split, as
mmsegmentation's converter does.

Idempotent (existing outputs are kept unless ``--force``) and safe to interrupt:
each file is written to a temporary name and renamed.
"""
import argparse
import os.path as osp
import sys

import numpy as np

from _common import ConversionError, find_files, read_label, run_parallel, write_label_png
from jseg.utils.fileio import atomic_write_text

LABEL_IDS_SUFFIX = '_gtFine_labelIds.png'
TRAIN_IDS_SUFFIX = '_gtFine_labelTrainIds.png'
SPLITS = ('train', 'val', 'test')

# id -> train id of cityscapesscripts/helpers/labels.py; ids not listed are ignored (255)
ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def train_id_lut():
    """A 256-entry uint8 lookup table: label id -> train id (255 for ignored ids)."""
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


_LUT = train_id_lut()


def convert_file(task):
    """Convert one map; ``task`` is ``(source, target, force)``. Returns True if written."""
    source, target, force = task
    if not force and osp.exists(target):
        return False
    write_label_png(_LUT[read_label(source)], target)
    return True


def convert(cityscapes_root, gt_dir='gtFine', out_dir=None, nproc=1, force=False):
    """Convert every labelIds map under ``<cityscapes_root>/<gt_dir>``; return the number written."""
    gt_root = osp.join(cityscapes_root, gt_dir)
    if not osp.isdir(gt_root):
        raise ConversionError(f'{osp.abspath(gt_root)} not found: pass the Cityscapes folder that contains '
                              f'{gt_dir}/ and leftImg8bit/ (unpacked from gtFine_trainvaltest.zip)')
    sources = find_files(gt_root, LABEL_IDS_SUFFIX)
    if not sources:
        raise ConversionError(f'no *{LABEL_IDS_SUFFIX} files under {osp.abspath(gt_root)}: pass the Cityscapes '
                              f'folder that contains {gt_dir}/<split>/<city>/')
    out_root = out_dir or cityscapes_root
    tasks = []
    for source in sources:
        relative = osp.relpath(source, gt_root)
        target = osp.join(out_root, gt_dir, relative[:-len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
        tasks.append((source, target, force))
    written = sum(run_parallel(convert_file, tasks, nproc, 'Cityscapes train ids'))
    for split in SPLITS:
        split_root = osp.join(gt_root, split)
        if not osp.isdir(split_root):
            continue
        names = [osp.relpath(p, split_root)[:-len(LABEL_IDS_SUFFIX)]
                 for p in find_files(split_root, LABEL_IDS_SUFFIX)]
        atomic_write_text(osp.join(out_root, f'{split}.txt'), ''.join(n + '\n' for n in names))
    return written


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert Cityscapes labelIds maps to train ids.')
    parser.add_argument('cityscapes_path', help='Cityscapes folder (holding gtFine/ and leftImg8bit/)')
    parser.add_argument('--gt-dir', default='gtFine', help='annotation folder inside it')
    parser.add_argument('-o', '--out-dir', help='output folder (default: cityscapes_path)')
    parser.add_argument('--nproc', default=1, type=int, help='number of processes')
    parser.add_argument('--force', action='store_true', help='rewrite existing outputs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        written = convert(args.cityscapes_path, args.gt_dir, args.out_dir, args.nproc, args.force)
    except ConversionError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'done: {written} train-id maps written')
    return 0


if __name__ == '__main__':
    sys.exit(main())
