"""Parameters and FLOPs of a config's model at a given input size.

    python tools/get_flops.py project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py --shape 512 512

Prints ``Params: <x>M`` (trainable parameters), ``FLOPs (all ops): <y>G`` (every
convolution, matrix product and linear layer) and ``FLOPs (conv only): <z>G``
(convolutions only), counting a multiply-add once, for one image through the
backbone and decode head (as mmsegmentation's get_flops). Papers in this field
usually report the conv-only figure; see jseg/utils/flops.py for what is counted.
"""
import sys

from tool_common import ArgumentParser, run_tool  # noqa: E402  (puts the checkout on sys.path)


def parse_args(argv=None):
    parser = ArgumentParser(description='Count parameters and FLOPs of a model.')
    parser.add_argument('config', help='Python config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512], help='input H W (or one size)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    args.shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if len(args.shape) != 2:
        parser.error('--shape takes H W or one size')
    return args


def measure(cfg, height, width):
    """(params, all-op MACs, conv MACs) of ``cfg.model`` on a (1, 3, height, width) input."""
    import jittor as jt

    from jseg.registry import MODELS
    from jseg.utils.flops import MacCounter, count_parameters
    model = MODELS.build(cfg.model)
    model.eval()
    x = jt.zeros((1, 3, height, width))
    with jt.no_grad(), MacCounter() as counter:  # shapes only: Jittor is lazy, nothing is computed
        model.decode_head(model.extract_feat(x)) if hasattr(model, 'extract_feat') else model(x)
    jt.clean_graph()
    return count_parameters(model), counter.total, counter.conv


def run(args):
    from jseg.cli import load_config
    height, width = args.shape
    params, total, conv = measure(load_config(args.config, args.cfg_options), height, width)
    print(f'Input shape: (1, 3, {height}, {width})')
    print(f'Params: {params / 1e6:.2f}M')
    print(f'FLOPs (all ops): {total / 1e9:.2f}G')
    print(f'FLOPs (conv only): {conv / 1e9:.2f}G')


def main(argv=None):
    return run_tool(run, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
