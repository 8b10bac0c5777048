"""What ``tools/run_net.py`` does once its arguments are parsed (importable for tests and tools)."""
import jittor as jt

from jseg.config import Config, ConfigError, ConfigKeyError
from jseg.registry import BuildError, RegistryError
from jseg.runner.checkpoint import CheckpointError
from jseg.utils.plot import MissingDependencyError

__all__ = ['ERRORS', 'load_config', 'run_from_args', 'select_device']


def _data_error():
    try:
        from jseg.datasets.errors import DataError
        return (DataError,)
    except ImportError:  # pragma: no cover - the data package is part of jseg
        return ()


# Failures caused by the user's input or setup: reported as one line, without a traceback.
ERRORS = (ConfigError, ConfigKeyError, RegistryError, BuildError, CheckpointError,
          FileNotFoundError, MissingDependencyError) + _data_error()


def select_device(no_cuda=False):
    """Use CUDA when Jittor has it and it is not switched off; returns the device name."""
    jt.flags.use_cuda = int(bool(jt.has_cuda) and not no_cuda)
    return 'cuda' if jt.flags.use_cuda else 'cpu'


def load_config(path, cfg_options=None, tta=False, data_root=None):
    """The resolved config; with ``tta`` the test pipelines and the model use the TTA settings.

    ``data_root`` replaces the ``data_root`` of every dataloader's dataset (an official
    config computes them from its own ``data_root`` variable, which ``--cfg-options``
    cannot reach once the file is read).
    """
    cfg = Config.fromfile(path, cfg_options)
    if data_root is not None:
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if isinstance(cfg.get(key, None), dict) and isinstance(cfg[key].get('dataset', None), dict):
                cfg[key]['dataset']['data_root'] = data_root
    if tta:
        if not cfg.get('tta_pipeline', None):
            raise ConfigError(f'{path}: --tta needs tta_pipeline in the config')
        for key in ('val_dataloader', 'test_dataloader'):
            if cfg.get(key, None):
                cfg[key]['dataset']['pipeline'] = cfg.tta_pipeline
        cfg.model = dict(type=cfg.get('tta_model', dict(type='SegTTAModel'))['type'], module=cfg.model)
    return cfg


def run_from_args(args):
    """Run ``args.task`` as described by parsed ``tools/run_net.py`` arguments."""
    from jseg.runner.runner import Runner
    if getattr(args, 'tta', False) and args.task == 'train':
        raise ConfigError('--tta applies to --task=val and --task=test, not to training')
    select_device(args.no_cuda)
    cfg = load_config(args.config_file, args.cfg_options, getattr(args, 'tta', False),
                      getattr(args, 'data_root', None))
    runner = Runner(cfg, work_dir=args.work_dir, resume=args.resume, load_from=args.load_from,
                    seed=args.seed, save_dir=args.save_dir)
    return runner.run(args.task)
