"""Check the ImageNet backbone weights under pretrained/ before a long training run.

    python tools/check_pretrained.py                 # pretrained/ of the current directory
    python tools/check_pretrained.py --root /data/jseg --names MiT-B0 EfficientFormerV2-S1

The configs under project/ start their backbones from the official ImageNet
checkpoints at the paths listed in CATALOGUE (``pretrained/...``, relative to
the directory training runs in). For every catalogued file that is present,
this reads it with jseg's checkpoint reader (no PyTorch, nothing executed from
the file) and checks

* tensors: how many the file holds (any unreadable file is reported as such);
* keys: every parameter and buffer of the backbone, built from the config that
  uses the file, has a tensor of the same name and shape in the file (extra
  tensors, such as an ImageNet classifier head, are allowed and counted;
  EfficientFormerV2's segmentation-only ``*_seg`` position biases are not in
  the ImageNet files and are not asked for);
* sha256: when the file name carries mmseg's 8-hex hash
  (``mit_b0_20220624-7e0fe6dd.pth``), that it equals the first 8 hex digits of
  the file's SHA-256.

Missing files are listed as missing with their download address; other files
found under pretrained/ are read and hash-checked. The exit status is 1 when a
present file fails a check, else 0.
"""
import argparse
import glob
import hashlib
import os.path as osp
import re
import sys

from tool_common import ROOT, ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)

MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain'
EFORMER = 'https://drive.google.com/file/d/{}/view'  # snap-research/EfficientFormer README, "ckpt" column


def _entry(name, path, url, config=None, backbone=None, not_in_file=None):
    return dict(name=name, path=path, url=url, config=config, backbone=backbone, not_in_file=not_in_file)


# The segmentation-only position biases of EfficientFormerV2 (trained from their zero init); the ImageNet
# files do not have them.
EFORMER_SEG_ONLY = r'_seg$'

# name, file (relative to the run directory), official address, where the backbone's definition comes
# from (a project config that starts from the file: its model.backbone; or a backbone dict), and a
# regex of backbone keys the official file does not hold.
CATALOGUE = [
    _entry(f'EfficientFormerV2-{arch.upper()}', f'pretrained/eformer_v2/eformer_{arch}_450.pth',
           EFORMER.format(drive_id), backbone=dict(type=f'efficientformerv2_{arch}_feat'),
           not_in_file=EFORMER_SEG_ONLY)
    for arch, drive_id in [('s0', '1PXb7b9pv9ZB4cfkRkYEdwgWuVwvEiazq'), ('s1', '1EKe1vt-3mG7iceVIMaET_DyISzVTJMn8'),
                           ('s2', '1gjbFyB5T_yAkmzHNuXEljqScYVQZafMQ'), ('l', '1sRXNBHl_ewHBMwwYZVsOJo1k6JpcNJn-')]
] + [
    _entry(f'MiT-B{i}', f'pretrained/segformer/mit_b{i}_20220624-{h}.pth',
           f'{MMSEG}/segformer/mit_b{i}_20220624-{h}.pth',
           config=f'project/segformer/b{i}/segformer_b{i}_512x512_ade_160k.py')
    for i, h in enumerate(['7e0fe6dd', '02e5a6a1', '66e8bf70', '13b1141c', 'd588d980', '658746d9'])
] + [
    _entry(f'MSCAN-{size[0].upper()}', f'pretrained/segnext/mscan_{size[0]}_20230227-{h}.pth',
           f'{MMSEG}/segnext/mscan_{size[0]}_20230227-{h}.pth',
           config=f'project/segnext/{size}/segnext_{size}_512x512_ade_160k.py')
    for size, h in [('tiny', '119e8c9f'), ('small', 'f33ccdf2'), ('base', '3ab7d230'), ('large', 'cef260d4')]
] + [
    _entry('Swin-T', 'pretrained/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth',
           f'{MMSEG}/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth',
           config='project/mask2former/mask2former_swin-t_512x512_ade_160k.py'),
]

HASH_IN_NAME = re.compile(r'-([0-9a-f]{8})\.pth$')
COLUMNS = ('backbone', 'file', 'tensors', 'keys', 'sha256', 'status')


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default='.',
                        help='the directory training runs in, holding pretrained/ (default: the current one)')
    parser.add_argument('--names', nargs='+', default=None, metavar='NAME',
                        help=f'check only these backbones (default: all; {", ".join(e["name"] for e in CATALOGUE)})')
    args = parser.parse_args(argv)
    if not osp.isdir(args.root):
        parser.error(f'--root {args.root} is not a directory')
    known = [e['name'] for e in CATALOGUE]
    unknown = [n for n in args.names or () if n not in known]
    if unknown:
        parser.error(f'--names: unknown backbone {", ".join(unknown)} (known: {", ".join(known)})')
    return args


def sha256_prefix(path, length=8):
    """The first ``length`` hex digits of the file's SHA-256 (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()[:length]


def hash_check(path):
    """(text, ok): the mmseg name hash against the file's SHA-256 prefix; ``'-'`` when the name has none."""
    match = HASH_IN_NAME.search(osp.basename(path))
    if not match:
        return '-', True
    actual = sha256_prefix(path)
    if actual == match.group(1):
        return f'ok {actual}', True
    return f'file {actual} != name {match.group(1)}', False


def backbone_cfg(entry):
    """The backbone dict of a catalogue entry without its pretrained weights, or None (config not here)."""
    if entry['backbone'] is not None:
        return dict(entry['backbone'])
    path = osp.join(ROOT, entry['config'])
    if not osp.isfile(path):
        return None
    from jseg.config import Config
    cfg = dict(Config.fromfile(path).model.backbone)
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


def backbone_shapes(cfg):
    """{name: shape} of every parameter and buffer of the backbone built from ``cfg``."""
    from jseg.registry import MODELS
    return {name: tuple(value.shape) for name, value in MODELS.build(cfg).state_dict().items()}


def expected_shapes(entry):
    """(shapes, None) of the entry's backbone, or (None, reason) when this checkout cannot build it."""
    from jseg.registry import RegistryError
    cfg = backbone_cfg(entry)
    if cfg is None:
        return None, f'{entry["config"]} not in this checkout'
    try:
        return backbone_shapes(cfg), None
    except RegistryError:
        return None, f'no {cfg.get("type")} backbone in this checkout'


def compare_keys(expected, state):
    """A LoadReport of ``state`` (name -> array) against ``expected`` (name -> shape), as loading would see it."""
    from jseg.runner.checkpoint import LoadReport
    state = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
    mismatched = [(k, tuple(state[k].shape), shape) for k, shape in expected.items()
                  if k in state and tuple(state[k].shape) != shape]
    bad = {k for k, _, _ in mismatched}
    loaded = [k for k in expected if k in state and k not in bad]
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    return LoadReport(loaded, missing, unexpected, mismatched)


def check_file(path, shapes):
    """One table row (dict of COLUMNS, plus ``ok`` and ``details``) for a present file.

    Args:
        path (str): the checkpoint file.
        shapes (dict | None): the backbone's {name: shape}; None when unknown (keys not checked).
    """
    from jseg.runner.checkpoint import CheckpointError, checkpoint_state_dict
    row = dict(tensors='-', keys='-', sha256='-', ok=True, details=[])
    row['sha256'], hash_ok = hash_check(path)
    if not hash_ok:
        row['ok'] = False
        row['details'].append('the SHA-256 does not match the hash in the file name: a different or damaged '
                              'file; download it again')
    try:
        state, _ = checkpoint_state_dict(path)
    except CheckpointError as err:
        row.update(ok=False, status='unreadable')
        row['details'].append(str(err))
        return row
    row['tensors'] = str(len(state))
    if shapes is not None:
        report = compare_keys(shapes, state)
        row['keys'] = f'{len(report.loaded)}/{len(shapes)}'
        if report.unexpected:
            row['keys'] += f' (+{len(report.unexpected)} extra)'
        if report.missing or report.mismatched:
            row['ok'] = False
            row['details'].append(f'does not fit the backbone: {report.summary(limit=5)}')
    row['status'] = 'ok' if row['ok'] else 'FAILED'
    return row


def check(root, names=None):
    """Rows for the catalogue (filtered by ``names``) and for uncatalogued files under ``root``/pretrained."""
    rows = []
    entries = [e for e in CATALOGUE if names is None or e['name'] in names]
    for entry in entries:
        path = osp.join(root, entry['path'])
        row = dict(backbone=entry['name'], file=entry['path'], url=entry['url'])
        if not osp.isfile(path):
            row.update(tensors='-', keys='-', sha256='-', status='missing', ok=True, details=[])
        else:
            shapes, why_not = expected_shapes(entry)
            if shapes is not None and entry['not_in_file']:
                shapes = {k: v for k, v in shapes.items() if not re.search(entry['not_in_file'], k)}
            row.update(check_file(path, shapes))
            if shapes is None:
                row['keys'] = f'n/a ({why_not})'
        rows.append(row)
    if names is None:
        catalogued = {osp.normpath(e['path']) for e in CATALOGUE}
        for path in sorted(glob.glob(osp.join(root, 'pretrained', '**', '*'), recursive=True)):
            rel = osp.relpath(path, root)
            if osp.isfile(path) and rel not in catalogued and path.endswith(('.pth', '.pt', '.npz')):
                row = dict(backbone='(not catalogued)', file=rel)
                row.update(check_file(path, None))
                rows.append(row)
    return rows


def format_table(rows):
    """The rows as an aligned text table, then one line per problem and per missing file's address."""
    cells = [COLUMNS] + [tuple(str(row[c]) for c in COLUMNS) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    for row in rows:
        lines.extend(f'{row["file"]}: {detail}' for detail in row['details'])
    missing = [row for row in rows if row['status'] == 'missing']
    if missing:
        lines.append('missing files (download, then copy to the path shown):')
        lines.extend(f'  {row["file"]}  <-  {row["url"]}' for row in missing)
    return '\n'.join(lines)


def run(args):
    rows = check(args.root, args.names)
    print(format_table(rows))
    failed = [row['file'] for row in rows if not row['ok']]
    present = sum(row['status'] != 'missing' for row in rows)
    print(f'{present} present, {len(rows) - present} missing, {len(failed)} failed')
    if failed:
        raise CheckFailed(f'{len(failed)} pretrained file(s) failed the check: {", ".join(failed)}')


class CheckFailed(Exception):
    """A present pretrained file failed a check (reported as the tool's one error line)."""


def main(argv=None):
    args = parse_args(argv)
    # building a backbone for its key names needs no GPU
    return run_tool(run, args, no_cuda=True, extra_errors=(CheckFailed,))


if __name__ == '__main__':
    sys.exit(main())
