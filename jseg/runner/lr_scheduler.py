"""Learning-rate schedulers with mmengine's chainable semantics.

``param_scheduler`` in a config is a list applied in order after every
iteration, each acting on ``[begin, end)``::

    param_scheduler = [
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
        dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=160000)]

As in mmengine, a scheduler spanning ``[begin, end)`` has ``end - begin - 1``
steps, so with the recipe above the learning rate used at iteration ``i`` is::

    i < 1500:            base * (s + (1 - s) * i / 1499)
    1500 <= i < 160000:  (base - eta_min) * (1 - (i - 1500) / 158499) ** power + eta_min

Schedulers are "chainable": each multiplies the current value of every
parameter group, so overlapping schedulers compose.
"""
from jseg.registry import SCHEDULERS

__all__ = ['LinearLR', 'PolyLR', 'ConstantLR', 'SchedulerList', 'build_schedulers']

INF = int(1e9)


class _LRScheduler:
    """Base class: call :meth:`step` once after every optimizer step."""

    def __init__(self, optimizer, begin=0, end=INF, by_epoch=False, verbose=False):
        if by_epoch:
            raise ValueError(f'{type(self).__name__}: jseg trains by iterations; set by_epoch=False')
        if end <= begin:
            raise ValueError(f'{type(self).__name__}: end ({end}) must be larger than begin ({begin})')
        self.optimizer = optimizer
        self.begin, self.end = int(begin), int(end)
        self.total_iters = self.end - self.begin - 1
        self.last_step = -1
        self.global_step = -1
        self.step()

    def _get_value(self, value):
        raise NotImplementedError

    def step(self):
        self.global_step += 1
        if self.begin <= self.global_step < self.end:
            self.last_step += 1
            for group in self.optimizer.param_groups:
                group['lr'] = self._get_value(group['lr'])

    def state_dict(self):
        return dict(last_step=self.last_step, global_step=self.global_step)

    def load_state_dict(self, state):
        self.last_step = int(state['last_step'])
        self.global_step = int(state['global_step'])


@SCHEDULERS.register_module()
class LinearLR(_LRScheduler):
    """Scale the lr linearly from ``start_factor`` to ``end_factor`` over [begin, end)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, **kwargs):
        if not (0 <= start_factor <= 1 and 0 <= end_factor <= 1):
            raise ValueError('LinearLR: start_factor and end_factor must be in [0, 1]')
        self.start_factor, self.end_factor = start_factor, end_factor
        super().__init__(optimizer, **kwargs)

    def _get_value(self, value):
        if self.last_step == 0:
            return value * self.start_factor
        delta = self.end_factor - self.start_factor
        return value * (1.0 + delta / (self.total_iters * self.start_factor + (self.last_step - 1) * delta))


@SCHEDULERS.register_module()
class PolyLR(_LRScheduler):
    """Polynomial decay of the current lr to ``eta_min`` over [begin, end)."""

    def __init__(self, optimizer, eta_min=0.0, power=1.0, **kwargs):
        self.eta_min, self.power = eta_min, power
        super().__init__(optimizer, **kwargs)

    def _get_value(self, value):
        if self.last_step == 0:
            return value
        return (value - self.eta_min) * (1 - 1 / (self.total_iters - self.last_step + 1)) ** self.power \
            + self.eta_min


@SCHEDULERS.register_module()
class ConstantLR(_LRScheduler):
    """Multiply the lr by ``factor`` from ``begin`` and restore it at the last step before ``end``."""

    def __init__(self, optimizer, factor=1.0 / 3, **kwargs):
        if not 0 < factor <= 1:
            raise ValueError('ConstantLR: factor must be in (0, 1]')
        self.factor = factor
        super().__init__(optimizer, **kwargs)

    def _get_value(self, value):
        if self.last_step == 0:
            return value * self.factor
        if self.last_step == self.total_iters:
            return value / self.factor
        return value


class SchedulerList:
    """The schedulers of a config, stepped together after each iteration."""

    def __init__(self, schedulers):
        self.schedulers = list(schedulers)

    def step(self):
        for scheduler in self.schedulers:
            scheduler.step()

    def state_dict(self):
        return [s.state_dict() for s in self.schedulers]

    def load_state_dict(self, states):
        if len(states) != len(self.schedulers):
            raise ValueError(f'checkpoint has {len(states)} schedulers, the config {len(self.schedulers)}')
        for scheduler, state in zip(self.schedulers, states):
            scheduler.load_state_dict(state)


def build_schedulers(optimizer, cfgs):
    """Build ``param_scheduler`` (a dict or a list of dicts) for ``optimizer``."""
    if cfgs is None:
        cfgs = []
    if isinstance(cfgs, dict):
        cfgs = [cfgs]
    return SchedulerList(SCHEDULERS.build(dict(cfg), optimizer=optimizer) for cfg in cfgs)
