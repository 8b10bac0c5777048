"""Training loop, optimizers, schedulers, hooks and checkpoints."""
from . import hooks, lr_scheduler, optim  # noqa: F401  (registration)
from .checkpoint import CheckpointError, load_checkpoint, load_state_dict, read_checkpoint, save_checkpoint
from .runner import Runner

__all__ = ['CheckpointError', 'Runner', 'load_checkpoint', 'load_state_dict', 'read_checkpoint',
           'save_checkpoint']
