"""Print a config as the runner resolves it: bases merged, ``--cfg-options`` applied.

    python tools/print_config.py project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py
    python tools/print_config.py CONFIG --cfg-options train_dataloader.batch_size=8 model.test_cfg.mode=whole

The output is Python source (yapf-formatted), exactly what training writes to
``<work_dir>/<config name>.py``, and can be loaded again as a config. A
missing config, a bad base or an override of a key the config lacks stops
with one ``error: ...`` line.
"""
import argparse
import sys

from tool_common import ArgumentParser  # noqa: E402  (puts the checkout on sys.path)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='Python config file')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries, e.g. model.decode_head.num_classes=19 (values are '
                             'Python literals); prefix a key with + to add a new one')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from jseg.cli import ERRORS, load_config
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ERRORS as err:
        sys.stderr.write(f'error: {err}\n')
        return 1
    sys.stdout.write(cfg.pretty_text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
