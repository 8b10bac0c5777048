"""Make COCO-Stuff 164k's train-id label maps: ``<name>.png`` -> ``<name>_labelTrainIds.png``.

    python tools/convert_datasets/coco_stuff164k.py datasets/coco_stuff164k --nproc 8

Expects the official layout: ``images/{train2017,val2017}/*.jpg`` (from COCO
2017) and ``annotations/{train2017,val2017}/*.png`` (the stuffthingmaps, ids
0..181 with 255 unlabelled). Writes ``annotations/<split>/<name>_labelTrainIds.png``
with the 171 used ids renumbered 0..170, as mmsegmentation's converter does
(the 11 COCO thing ids that have no objects, and anything else, become 255).
With ``--out-dir`` the images are copied there too.

Idempotent (existing outputs are kept unless ``--force``) and safe to interrupt:
each file is written to a temporary name and renamed.
"""
import argparse
import os
import os.path as osp
import shutil
import sys

import numpy as np

from _common import ConversionError, find_files, read_label, run_parallel, write_label_png

SPLITS = ('train2017', 'val2017')
TRAIN_IDS_SUFFIX = '_labelTrainIds.png'
EXPECTED_MAPS = 123287  # 118287 train + 5000 val
# COCO thing ids without objects in COCO 2017 (the stuffthingmaps never use them)
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def train_id_lut():
    """A 256-entry uint8 lookup table: stuffthingmap id (0..181) -> train id (0..170), else 255."""
    lut = np.full(256, 255, np.uint8)
    used = [i for i in range(182) if i not in UNUSED_IDS]
    lut[used] = np.arange(len(used))
    return lut


_LUT = train_id_lut()


def convert_file(task):
    """Convert one map; ``task`` is ``(source, target, force)``. Returns True if written."""
    source, target, force = task
    if not force and osp.exists(target):
        return False
    write_label_png(_LUT[read_label(source)], target)
    return True


def _copy_images(coco_root, out_root):
    """Copy ``images/`` to ``out_root`` (skipping files already there)."""
    def copy_missing(src, dst):
        if not osp.exists(dst):
            tmp = dst + '.tmp'
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        return dst
    shutil.copytree(osp.join(coco_root, 'images'), osp.join(out_root, 'images'), copy_function=copy_missing,
                    dirs_exist_ok=True)


def convert(coco_root, out_dir=None, nproc=1, force=False):
    """Convert the stuffthingmaps of both splits; return the number of maps written."""
    tasks = []
    out_root = out_dir or coco_root
    for split in SPLITS:
        folder = osp.join(coco_root, 'annotations', split)
        if not osp.isdir(folder):
            raise ConversionError(f'{osp.abspath(folder)} not found: pass the COCO-Stuff folder holding '
                                  'images/{train2017,val2017} and annotations/{train2017,val2017} '
                                  '(stuffthingmaps_trainval2017.zip unpacked into annotations/)')
        for source in find_files(folder, '.png', exclude=TRAIN_IDS_SUFFIX):
            name = osp.basename(source)[:-len('.png')]
            tasks.append((source, osp.join(out_root, 'annotations', split, name + TRAIN_IDS_SUFFIX), force))
    if not tasks:
        raise ConversionError(f'no stuffthingmap .png files under {osp.abspath(osp.join(coco_root, "annotations"))}')
    if len(tasks) != EXPECTED_MAPS:
        print(f'warning: found {len(tasks)} label maps; the full COCO-Stuff 164k has {EXPECTED_MAPS}',
              file=sys.stderr)
    if out_dir and osp.abspath(out_dir) != osp.abspath(coco_root):
        _copy_images(coco_root, out_dir)
    return sum(run_parallel(convert_file, tasks, nproc, 'COCO-Stuff train ids'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert COCO-Stuff 164k stuffthingmaps to train ids.')
    parser.add_argument('coco_path', help='COCO-Stuff folder (holding images/ and annotations/)')
    parser.add_argument('-o', '--out-dir', help='output folder (default: coco_path)')
    parser.add_argument('--nproc', default=16, type=int, help='number of processes')
    parser.add_argument('--force', action='store_true', help='rewrite existing outputs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        written = convert(args.coco_path, args.out_dir, args.nproc, args.force)
    except ConversionError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'done: {written} train-id maps written')
    return 0


if __name__ == '__main__':
    sys.exit(main())
