"""Hooks: user code called by the runner at fixed points of training.

Add them to a config with ``custom_hooks = [dict(type='MyHook', ...)]`` after
registering the class in ``jseg.registry.HOOKS``. Each method receives the
runner, so a hook can read ``runner.model``, ``runner.iteration``, ``runner.cfg``.
"""
from jseg.registry import HOOKS

__all__ = ['Hook']


@HOOKS.register_module()
class Hook:
    """Base class; every method is a no-op."""

    def before_train(self, runner):
        pass

    def after_train_iter(self, runner, log_vars):
        """After each optimizer step; ``log_vars`` maps loss names to floats."""

    def after_val(self, runner, metrics):
        """After each validation; ``metrics`` as returned by ``IoUMetric.compute``."""

    def after_train(self, runner):
        pass
