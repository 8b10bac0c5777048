"""Optimizers with PyTorch's update rules and mmseg's per-parameter settings.

``optim_wrapper`` in a config reads as in mmsegmentation 1.x::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
        paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.),
                                        'norm': dict(decay_mult=0.),
                                        'head': dict(lr_mult=10.)}),
        clip_grad=None)

``custom_keys`` follow mmengine's rule: keys are tried longest first (ties in
alphabetical order) and the first key contained in a parameter's full name
sets its ``lr_mult`` and ``decay_mult``. A parameter no key matches gets
mmengine's module rules (``DefaultOptimWrapperConstructor.add_params``):
``norm_decay_mult`` scales the decay of parameters owned directly by a
BatchNorm/GroupNorm/LayerNorm/InstanceNorm layer; otherwise
``bias_decay_mult`` scales that of parameters named ``bias``; ``bias_lr_mult``
scales the lr of ``bias`` parameters outside norm layers. A matching key
suppresses all three. Parameters with the same multipliers share one group.
The update rules are PyTorch's (``torch.optim.AdamW``/``SGD``), so results and
checkpoints carry over; gradient averaging under MPI comes from Jittor's base
optimizer.
"""
import jittor as jt
from jittor import nn

from jseg.models.utils.norm import BatchNorm2d, GroupNorm, LayerNorm
from jseg.registry import OPTIMIZERS

__all__ = ['AdamW', 'SGD', 'build_optimizer', 'param_groups']


def _match_key(name, sorted_keys):
    for key in sorted_keys:
        if key in name:
            return key
    return None


#: modules whose own parameters ``norm_decay_mult`` applies to
#: (mmengine: _BatchNorm, _InstanceNorm, GroupNorm, LayerNorm)
NORM_LAYERS = (BatchNorm2d, GroupNorm, LayerNorm, nn.BatchNorm, nn.InstanceNorm, nn.GroupNorm, nn.LayerNorm)

_MODULE_RULES = ('norm_decay_mult', 'bias_decay_mult', 'bias_lr_mult')


def _owners(model):
    """``{full parameter name: the module holding it directly}``."""
    owners = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            owners[f'{module_name}.{name}' if module_name else name] = module
    return owners


def _multipliers(name, owner, custom_keys, sorted_keys, rules):
    """(lr_mult, decay_mult) of the parameter ``name`` by mmengine's rule."""
    key = _match_key(name, sorted_keys)
    if key is not None:
        opts = custom_keys[key]
        return float(opts.get('lr_mult', 1.0)), float(opts.get('decay_mult', 1.0))
    lr_mult = decay_mult = 1.0
    is_norm = isinstance(owner, NORM_LAYERS)
    is_bias = name.rsplit('.', 1)[-1] == 'bias'
    if is_bias and not is_norm and rules.get('bias_lr_mult') is not None:
        lr_mult = float(rules['bias_lr_mult'])
    if is_norm and rules.get('norm_decay_mult') is not None:
        decay_mult = float(rules['norm_decay_mult'])
    elif is_bias and rules.get('bias_decay_mult') is not None:
        decay_mult = float(rules['bias_decay_mult'])
    return lr_mult, decay_mult


def unused_parameter_names(model):
    """Full names of the parameters ``model``'s forward never uses (from its modules' ``unused_parameter_names``).

    PyTorch's optimizers skip parameters whose gradient is None, so these get no
    update at all, weight decay included (``decode_head.conv_seg`` of the
    offset-learning heads stays as initialised or loaded).
    """
    names = []
    for prefix, module in model.named_modules():
        if module is not model and callable(getattr(module, 'unused_parameter_names', None)):
            names += [f'{prefix}.{name}' if prefix else name for name in module.unused_parameter_names()]
    return names


def param_groups(model, base_lr, base_wd, paramwise_cfg=None):
    """Group ``model``'s trainable parameters by their (lr, weight_decay).

    Args:
        paramwise_cfg (dict | None): ``custom_keys`` ({key: dict(lr_mult,
            decay_mult)}), ``norm_decay_mult``, ``bias_decay_mult``,
            ``bias_lr_mult`` (see the module docstring).

    Parameters the forward never uses (:func:`unused_parameter_names`) are left out.

    Returns:
        list[dict]: ``{'params', 'names', 'lr', 'initial_lr', 'weight_decay',
        'lr_mult', 'decay_mult'}`` per group, in order of first appearance.
    """
    paramwise_cfg = dict(paramwise_cfg or {})
    custom_keys = dict(paramwise_cfg.pop('custom_keys', {}) or {})
    rules = {k: paramwise_cfg.pop(k) for k in _MODULE_RULES if k in paramwise_cfg}
    if paramwise_cfg:
        raise ValueError(f'paramwise_cfg options not supported: {sorted(paramwise_cfg)} '
                         f'(jseg supports custom_keys with lr_mult/decay_mult, {", ".join(_MODULE_RULES)})')
    for key, opts in custom_keys.items():
        unknown = set(opts) - {'lr_mult', 'decay_mult'}
        if unknown:
            raise ValueError(f'paramwise_cfg.custom_keys[{key!r}]: unknown options {sorted(unknown)}')
    sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
    owners = _owners(model) if rules else {}
    groups = {}
    unused = set(unused_parameter_names(model))
    for name, param in model.named_parameters():
        if param.is_stop_grad() or name in unused:
            continue
        lr_mult, decay_mult = _multipliers(name, owners.get(name), custom_keys, sorted_keys, rules)
        group = groups.setdefault((lr_mult, decay_mult), dict(
            params=[], names=[], lr=base_lr * lr_mult, initial_lr=base_lr * lr_mult,
            weight_decay=base_wd * decay_mult, lr_mult=lr_mult, decay_mult=decay_mult))
        group['params'].append(param)
        group['names'].append(name)
    if not groups:
        raise ValueError('the model has no trainable parameters')
    return list(groups.values())


class _TorchRuleOptimizer(jt.optim.Optimizer):
    """Base: Jittor's gradient handling (MPI averaging, accumulation) + our state handling.

    Subclasses define ``_SLOTS`` (per-parameter state names) and ``_update``.
    """

    _SLOTS = ()

    def __init__(self, groups, lr):
        super().__init__(groups, lr)
        self.step_count = 0
        for group in self.param_groups:
            for slot in self._SLOTS:
                group[slot] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in group['params']]

    def step(self, loss=None):
        """Backpropagate ``loss`` (if given) and apply one update."""
        self.pre_step(loss)
        self.step_count += 1
        for group in self.param_groups:
            for i, (p, g) in enumerate(zip(group['params'], group['grads'])):
                if p.is_stop_grad():
                    continue
                self._update(group, i, p, g)
        self.post_step()

    def current_lrs(self):
        return [group['lr'] for group in self.param_groups]

    def state_arrays(self):
        """``{slot: {param name: array}}`` for checkpoints."""
        return {slot: {name: var for group in self.param_groups
                       for name, var in zip(group['names'], group[slot])}
                for slot in self._SLOTS}

    def state_meta(self):
        return dict(type=type(self).__name__, step_count=self.step_count,
                    lrs=self.current_lrs(),
                    groups=[dict(lr_mult=g['lr_mult'], decay_mult=g['decay_mult'], size=len(g['names']))
                            for g in self.param_groups])

    def load_state(self, meta, arrays):
        """Restore what :meth:`state_meta` and :meth:`state_arrays` produced."""
        if meta.get('type') != type(self).__name__:
            raise ValueError(f'optimizer state is for {meta.get("type")}, not {type(self).__name__}')
        if len(meta['lrs']) != len(self.param_groups):
            raise ValueError(f'optimizer state has {len(meta["lrs"])} parameter groups, '
                             f'the optimizer has {len(self.param_groups)}')
        self.step_count = int(meta['step_count'])
        self.n_step = self.step_count
        for group, lr in zip(self.param_groups, meta['lrs']):
            group['lr'] = lr
        for slot in self._SLOTS:
            values = arrays.get(slot, {})
            for group in self.param_groups:
                for name, var in zip(group['names'], group[slot]):
                    if name not in values:
                        raise ValueError(f'optimizer state lacks {slot} of {name}')
                    var.assign(jt.array(values[name]).stop_grad())


@OPTIMIZERS.register_module()
class AdamW(_TorchRuleOptimizer):
    """``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments)."""

    _SLOTS = ('exp_avg', 'exp_avg_sq')

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        super().__init__(params, lr)

    def _update(self, group, i, p, g):
        b1, b2 = self.betas
        lr, wd = group['lr'], group['weight_decay']
        m, v = group['exp_avg'][i], group['exp_avg_sq'][i]
        t = self.step_count
        m.update(m * b1 + g * (1 - b1))
        v.update(v * b2 + g * g * (1 - b2))
        step_size = lr / (1 - b1 ** t)
        denom = jt.sqrt(v) / ((1 - b2 ** t) ** 0.5) + self.eps
        p.update(p * (1 - lr * wd) - m / denom * step_size)


@OPTIMIZERS.register_module()
class SGD(_TorchRuleOptimizer):
    """``torch.optim.SGD`` with momentum, dampening, nesterov and L2 weight decay."""

    _SLOTS = ('momentum_buffer',)

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError('SGD: nesterov needs momentum > 0 and dampening 0')
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        super().__init__(params, lr)

    def _update(self, group, i, p, g):
        lr, wd = group['lr'], group['weight_decay']
        if wd:
            g = g + p * wd
        if self.momentum:
            buf = group['momentum_buffer'][i]
            if self.step_count == 1:
                buf.update(g)  # PyTorch starts the buffer at the first gradient
            else:
                buf.update(buf * self.momentum + g * (1 - self.dampening))
            g = g + buf * self.momentum if self.nesterov else buf
        p.update(p - g * lr)


def build_optimizer(model, optim_wrapper_cfg):
    """Build the optimizer described by an mmseg-style ``optim_wrapper`` config.

    Returns:
        tuple: (optimizer, clip_grad dict or None).
    """
    cfg = dict(optim_wrapper_cfg)
    wrapper_type = cfg.pop('type', 'OptimWrapper')
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'optim_wrapper type {wrapper_type!r} is not supported (use OptimWrapper; '
                         f'jseg trains in float32)')
    optimizer_cfg = dict(cfg.pop('optimizer'))
    paramwise_cfg = cfg.pop('paramwise_cfg', None)
    clip_grad = cfg.pop('clip_grad', None)
    if cfg:
        raise ValueError(f'optim_wrapper: unknown keys {sorted(cfg)}')
    opt_type = optimizer_cfg.pop('type')
    opt_cls = OPTIMIZERS.get(opt_type)
    base_lr = optimizer_cfg.get('lr', 0.01)
    base_wd = optimizer_cfg.get('weight_decay', 0.0)
    groups = param_groups(model, base_lr, base_wd, paramwise_cfg)
    optimizer = opt_cls(groups, **optimizer_cfg)
    if clip_grad is not None:
        clip_grad = dict(clip_grad)
        unknown = set(clip_grad) - {'max_norm', 'norm_type'}
        if unknown or 'max_norm' not in clip_grad:
            raise ValueError(f'clip_grad must be dict(max_norm=..., norm_type=2), got {clip_grad}')
    return optimizer, clip_grad
