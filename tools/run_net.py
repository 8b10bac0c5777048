"""Train, validate or test a jseg model from a Python config.

    python tools/run_net.py --config-file=project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py --task=train
    python tools/run_net.py --config-file=... --task=val --resume=work_dirs/.../iter_160000.npz
    python tools/run_net.py --config-file=... --task=test --load-from=offseg_tiny_ade.pth --save-dir=out/
    mpirun -np 8 python tools/run_net.py --config-file=... --task=train

Bad input (missing config or checkpoint, unknown task or type, a key missing
from the config, unusable data) ends with one ``error: ...`` line and exit
status 1; unexpected failures keep their traceback.
"""
import sys

from tool_common import ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)


def parse_args(argv=None):
    parser = ArgumentParser(description='Train, validate or test a jseg segmentation model.')
    parser.add_argument('--config-file', required=True, help='Python config file')
    parser.add_argument('--task', default='train', choices=['train', 'val', 'test'])
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/<config name>)')
    parser.add_argument('--resume', help='checkpoint to resume training from ("auto": latest in the work dir); '
                                         'for val/test, the weights to evaluate')
    parser.add_argument('--load-from', help='weights to start from or to evaluate (jseg .npz or PyTorch .pth)')
    parser.add_argument('--save-dir', help='test: where to write predicted label maps and overlays')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config entries, e.g. model.decode_head.num_classes=19 '
                             "train_dataloader.batch_size=8 (values are Python literals); "
                             'prefix a key with + to add a new one')
    parser.add_argument('--data-root', help="the dataset folder, set in every dataloader's dataset "
                                            '(overrides the config\'s data_root)')
    parser.add_argument('--seed', type=int, help='global random seed (default: cfg.seed or 0)')
    parser.add_argument('--tta', action='store_true', help='val/test with the config\'s test-time augmentation')
    parser.add_argument('--no-cuda', action='store_true', help='run on the CPU even if CUDA works '
                                                               '(same as JSEG_NO_CUDA=1)')
    return parser.parse_args(argv)


def run(args):
    from jseg.cli import run_from_args
    run_from_args(args)


def main(argv=None):
    args = parse_args(argv)
    return run_tool(run, args, no_cuda=args.no_cuda)


if __name__ == '__main__':
    sys.exit(main())
