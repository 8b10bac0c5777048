"""Segment images with a trained model: a colour overlay and a label map per image.

    python tools/demo.py CONFIG CHECKPOINT photo.jpg
    python tools/demo.py CONFIG CHECKPOINT images/ 'more/*.png' --out-dir results --opacity 0.6

Each INPUT is an image file, a folder (its images, not recursing) or a glob
pattern (quote it; ``**`` recurses). Every image goes through the config's
test pipeline and the model (``jseg.apis.inference_model``); the prediction,
at the image's own size, is written as

* ``<out-dir>/overlays/<name>.png``: the class colours blended over the image
  (``--opacity`` is the weight of the colours), with the dataset's palette;
* ``<out-dir>/labels/<name>.png``: the class indices (8-bit, 16-bit above 255
  classes), as the ``test`` task of tools/run_net.py writes them.

Two inputs with the same file name get ``_1``, ``_2``, ... appended. An
INPUT that matches no image, or a file OpenCV cannot read as an image, stops
with one ``error: ...`` line: file headers are checked before the model is
built, a corrupt image when it is read.
"""
import argparse
import glob
import os
import os.path as osp
import sys

from tool_common import ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class InputError(Exception):
    """An INPUT that matches no image, or an image that cannot be read."""


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='Python config file')
    parser.add_argument('checkpoint', help='trained weights (jseg .npz or PyTorch .pth)')
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image file, folder or quoted glob pattern')
    parser.add_argument('--out-dir', default=osp.join('work_dirs', 'demo'),
                        help='output folder; overlays/ and labels/ are created in it (default: %(default)s)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='weight of the class colours in the overlay, 0 (image only) to 1 (colours only; '
                             'default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries, e.g. model.test_cfg.mode=whole')
    parser.add_argument('--no-cuda', action='store_true', help='run on the CPU even if CUDA works')
    args = parser.parse_args(argv)
    if not 0.0 <= args.opacity <= 1.0:
        parser.error(f'--opacity must be between 0 and 1, got {args.opacity}')
    return args


def _is_image_name(path):
    return path.lower().endswith(IMAGE_EXTENSIONS)


def expand_inputs(inputs):
    """The image paths named by ``inputs`` (files, folders, glob patterns), in order, without repeats."""
    paths = []
    for item in inputs:
        if osp.isdir(item):
            found = [osp.join(item, name) for name in sorted(os.listdir(item))
                     if _is_image_name(name) and osp.isfile(osp.join(item, name))]
            if not found:
                raise InputError(f'folder {item} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
        elif osp.isfile(item):
            found = [item]
        else:
            found = [p for p in sorted(glob.glob(item, recursive=True)) if osp.isfile(p) and _is_image_name(p)]
            if not found:
                what = 'pattern' if glob.has_magic(item) else 'file'
                raise InputError(f'no image matches {what} {item!r}')
        paths.extend(found)
    unique, seen = [], set()
    for path in paths:
        key = osp.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def check_readable(paths):
    """Raise InputError for the first path OpenCV cannot decode (checked from the file header)."""
    import cv2
    for path in paths:
        if not cv2.haveImageReader(path):
            raise InputError(f'{path}: not a readable image (unknown or unsupported format)')


def output_names(paths):
    """File stems for ``paths``; repeated stems get ``_1``, ``_2``, ... appended."""
    names, used = [], {}
    for path in paths:
        stem = osp.splitext(osp.basename(path))[0]
        count = used.get(stem, 0)
        used[stem] = count + 1
        names.append(stem if count == 0 else f'{stem}_{count}')
    return names


def run(args):
    import cv2
    from tqdm import tqdm

    from jseg.apis import inference_model, init_model
    from jseg.cli import load_config, select_device
    from jseg.visualization import overlay, random_palette, write_image, write_label_map
    paths = expand_inputs(args.inputs)
    check_readable(paths)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    device = select_device(args.no_cuda)
    model = init_model(load_config(args.config, args.cfg_options), args.checkpoint)
    num_classes = model.decode_head.num_classes if hasattr(model, 'decode_head') else 256
    palette = model.dataset_meta.get('palette', None)
    palette = random_palette(num_classes) if palette is None or len(palette) == 0 else palette
    overlay_dir, label_dir = osp.join(args.out_dir, 'overlays'), osp.join(args.out_dir, 'labels')
    os.makedirs(overlay_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for path, name in zip(tqdm(paths, desc=f'demo ({device})', dynamic_ncols=True), output_names(paths)):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f'{path}: not a readable image (corrupt or truncated)')
        label = inference_model(model, image)
        write_label_map(osp.join(label_dir, name + '.png'), label)
        write_image(osp.join(overlay_dir, name + '.png'), overlay(image, label, palette, alpha=args.opacity))
    print(f'{len(paths)} image(s) segmented: overlays in {overlay_dir}, label maps in {label_dir}')
    return paths


def main(argv=None):
    args = parse_args(argv)
    return run_tool(run, args, no_cuda=args.no_cuda, extra_errors=(InputError,))


if __name__ == '__main__':
    sys.exit(main())
