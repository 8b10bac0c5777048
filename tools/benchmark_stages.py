"""Per-stage times of a segmentor, for ``tools/benchmark.py --breakdown``.

Stages are named by their module path, as in the state dict (the official
OffSeg model uses the same names, so ``tools/dev/compare_speed.py`` can put
both sides in one table):

* ``preprocess`` (the data preprocessor), ``backbone``, ``neck``;
* ``decode_head.<child>`` for each direct child module of the decode head
  that it calls. A ``ModuleList`` child is one stage (the sum of its items'
  calls), except when its items have sub-stages: then each item is a stage
  (``decode_head.freqfusions.0``, ...);
* sub-stages of known classes, also counted in their parent: FreqFusion's
  CARAFE calls (``<freqfusion>.carafe``) and its sampler
  (``<freqfusion>.dysampler``);
* ``resize``: the decode head's resize of the logits to the image
  (``predict_by_feat``), inference only; ``argmax``, inference only;
* ``loss`` (``loss_by_feat``: resize to the labels and the criteria) and
  ``optimizer`` (gradient clipping and the step), training only.

How they are timed:

* **Inference** (:func:`time_inference_stages`): in each of ``runs``
  instrumented forward passes every stage call is bracketed by
  ``jt.sync_all(True)``, so work that Jittor's lazy execution left pending
  from earlier stages is not billed to it. A stage's time is the sum over its
  calls; the median over the runs is reported.
* **Training** (:func:`time_train_stages`): one forward of the training batch
  records the inputs of every stage call. Each call is then timed alone:
  forward on fresh copies of its recorded inputs, then the gradients of
  ``sum(out * g)`` (``g`` fixed, seeded) with respect to its tensor inputs
  and its parameters. ``loss`` is the same for ``loss_by_feat`` on the
  logits; ``optimizer`` is clipping + one step with the gradients of a full
  backward already computed.

Nested stages are counted in their parent too; the work between stages
(concatenations, reshapes) is what ``total`` minus the top-level stages leaves.
"""
import statistics
import time
from collections import defaultdict

import numpy as np

# Sub-stages of module classes: class name -> [(suffix, 'function', module, name) | (suffix, 'child', attr)].
# A 'function' sub-stage patches ``<module>.<name>`` (the name the class's code calls) while the parent runs.
SUBSTAGES = {
    'FreqFusion': [('carafe', 'function', 'jseg.models.decode_heads.freqfusion', 'carafe'),
                   ('dysampler', 'child', 'dysampler')],
}


def _vars(obj):
    """The jt.Vars in a (nested) output: Var, list/tuple, dict."""
    import jittor as jt
    if isinstance(obj, jt.Var):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [v for item in obj for v in _vars(item)]
    if isinstance(obj, dict):
        return [v for item in obj.values() for v in _vars(item)]
    return []


def _sync():
    import jittor as jt
    jt.sync_all(True)


class Stage:
    """One timed stage: a module instance's ``execute``, a module-level function, or an attribute.

    ``patch(wrapper_factory)`` replaces the callable by ``wrapper_factory(self, original)`` and
    ``restore()`` puts the original back. A 'function' stage is shared by every module that calls
    the function: :meth:`label` names it after the innermost module stage running at call time
    (``decode_head.freqfusions.1.carafe``).
    """

    def __init__(self, name, kind, owner, attr, module=None):
        self.name, self.kind, self.owner, self.attr = name, kind, owner, attr
        self.module = module          # the nn.Module whose parameters the stage trains (or None)
        self._original = None

    def label(self, active):
        """The name to bill a call to, given the stack of running module stages."""
        if self.kind == 'function':
            return f'{active[-1]}.{self.name}' if active else self.name
        return self.name

    @property
    def original(self):
        return self._original if self._original is not None else getattr(self.owner, self.attr)

    def patch(self, wrapper_factory):
        self._original = getattr(self.owner, self.attr)
        setattr(self.owner, self.attr, wrapper_factory(self, self._original))

    def restore(self):
        if self._original is not None:
            if self.kind == 'instance':
                delattr(self.owner, self.attr)   # back to the class's method
            else:
                setattr(self.owner, self.attr, self._original)
            self._original = None


def _module_stages(name, module, functions):
    """[Stage] of one module call (its ``execute``) and its sub-stages; shared function stages go to ``functions``."""
    import importlib
    stages = [Stage(name, 'instance', module, 'execute', module)]
    for entry in SUBSTAGES.get(type(module).__name__, []):
        if entry[1] == 'function':
            target = importlib.import_module(entry[2])
            if (entry[2], entry[3]) not in functions:
                functions[(entry[2], entry[3])] = Stage(entry[0], 'function', target, entry[3])
        elif getattr(module, entry[2], None) is not None:
            child = getattr(module, entry[2])
            stages.append(Stage(f'{name}.{entry[0]}', 'instance', child, 'execute', child))
    return stages


def discover_stages(model):
    """The [Stage] of ``model`` (an EncoderDecoder-like segmentor), in forward order; see the module docstring."""
    from jittor import nn
    functions = {}
    stages = [Stage('preprocess', 'attribute', model, 'data_preprocessor')]
    for name in ('backbone', 'neck'):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            stages += _module_stages(name, module, functions)
    head = getattr(model, 'decode_head', None)
    if head is None:
        return stages + list(functions.values())
    for child_name, child in _named_children(head):
        path = f'decode_head.{child_name}'
        if isinstance(child, nn.ModuleList):
            items = list(child)
            if any(type(item).__name__ in SUBSTAGES for item in items):
                for index, item in enumerate(items):
                    stages += _module_stages(f'{path}.{index}', item, functions)
            else:
                stages += [Stage(path, 'instance', item, 'execute', item) for item in items]
        elif isinstance(child, nn.Module) and not _is_loss(child):
            stages += _module_stages(path, child, functions)
    stages.append(Stage('resize', 'instance', head, 'predict_by_feat'))
    stages.append(Stage('loss', 'instance', head, 'loss_by_feat'))
    return stages + list(functions.values())


def _ordered(times, stages):
    """``times`` re-keyed in forward order: each module stage followed by its sub-stages."""
    order = []
    for stage in stages:
        if stage.kind != 'function':
            order.append(stage.name)
            order += sorted(n for n in times if n.startswith(stage.name + '.') and n not in order)
    order += [n for n in times if n not in order]
    return {name: times[name] for name in order if name in times}


def _is_loss(module):
    return type(module).__name__.endswith('Loss') or hasattr(module, 'loss_name')


def _named_children(module):
    return list(module.named_children()) if hasattr(module, 'named_children') else []


def top_level(names):
    """The stage names not nested in another listed stage: what sums towards the total."""
    return [n for n in names if not any(n.startswith(other + '.') for other in names if other != n)]


# ---------------------------------------------------------------------------------------------- inference

def time_inference_stages(model, batch, runs, warmup):
    """{stage: median seconds} of ``runs`` instrumented ``predict`` calls (+ argmax); see the module doc."""
    import jittor as jt

    from jseg.ops import argmax
    stages = [s for s in discover_stages(model) if s.name != 'loss']
    model.eval()
    per_run = []
    active = []
    for run in range(warmup + runs):
        times = defaultdict(float)

        def wrapper(stage, original):
            def timed(*args, **kwargs):
                name = stage.label(active)
                _sync()
                start = time.perf_counter()
                active.append(name)
                try:
                    out = original(*args, **kwargs)
                finally:
                    active.pop()
                jt.sync(_vars(out))
                _sync()
                times[name] += time.perf_counter() - start
                return out
            return timed

        for stage in stages:
            stage.patch(wrapper)
        try:
            with jt.no_grad():
                outputs = model(batch, mode='predict')
                _sync()
                start = time.perf_counter()
                jt.sync([argmax(out, 0)[0] for out in outputs])
                times['argmax'] += time.perf_counter() - start
        finally:
            for stage in reversed(stages):
                stage.restore()
        jt.gc()
        if run >= warmup:
            per_run.append(times)
    return _ordered(_medians(per_run), stages)


def _medians(per_run):
    names = []
    for times in per_run:
        names += [n for n in times if n not in names]
    return {name: statistics.median(times.get(name, 0.0) for times in per_run) for name in names}


# ---------------------------------------------------------------------------------------------- training

def _record_calls(model, batch, stages):
    """[(name, stage, args, kwargs)] of every stage call during one ``model(batch, 'loss')``, inputs synced."""
    import jittor as jt
    calls = []
    active = []

    def wrapper(stage, original):
        def recording(*args, **kwargs):
            jt.sync(_vars((args, kwargs)))
            name = stage.label(active)
            calls.append((name, stage, args, kwargs))
            active.append(name)
            try:
                return original(*args, **kwargs)
            finally:
                active.pop()
        return recording

    for stage in stages:
        stage.patch(wrapper)
    try:
        jt.sync(_vars(model(batch, mode='loss')))
    finally:
        for stage in reversed(stages):
            stage.restore()
    return calls


def _fresh_leaves(obj, leaves):
    """A copy of a nested (args, kwargs) structure with float Vars replaced by new leaf Vars (appended)."""
    import jittor as jt
    if isinstance(obj, jt.Var):
        if obj.dtype in (jt.float32, jt.float64, jt.float16):
            leaf = jt.array(obj.numpy())
            leaves.append(leaf)
            return leaf
        return obj
    if isinstance(obj, tuple):
        return tuple(_fresh_leaves(item, leaves) for item in obj)
    if isinstance(obj, list):
        return [_fresh_leaves(item, leaves) for item in obj]
    if isinstance(obj, dict):
        return {key: _fresh_leaves(item, leaves) for key, item in obj.items()}
    return obj


def _call_forward_backward(stage, args, kwargs, rng):
    """A function running ``stage`` on fresh copies of ``args`` and its backward; synced when it returns."""
    import jittor as jt
    leaves = []
    args, kwargs = _fresh_leaves((args, kwargs), leaves)
    params = [p for p in stage.module.parameters() if not p.is_stop_grad()] if stage.module is not None else []
    probe = stage.original(*args, **kwargs)
    if stage.name == 'loss':
        seeds = None
    else:
        seeds = [jt.array(rng.standard_normal(out.shape).astype(np.float32)) for out in _vars(probe)
                 if out.dtype == jt.float32]
    jt.sync(_vars(probe) + (seeds or []))

    def run():
        out = stage.original(*args, **kwargs)
        if seeds is None:
            objective = sum(value for key, value in out.items() if 'loss' in key)
        else:
            objective = sum((o * g).sum() for o, g in zip([v for v in _vars(out) if v.dtype == jt.float32],
                                                          seeds))
        targets = leaves + params
        jt.sync(jt.grad(objective, targets) if targets else [objective])
        _sync()
    return run


def time_train_stages(model, batch, optimizer, clip_grad, runs, warmup):
    """{stage: median seconds} of each stage's forward+backward alone, ``loss`` and ``optimizer``."""
    import jittor as jt
    stages = [s for s in discover_stages(model) if s.name not in ('resize',)]
    model.train()
    calls = _record_calls(model, batch, stages)
    rng = np.random.RandomState(0)
    jobs = [(name, _call_forward_backward(stage, args, kwargs, rng)) for name, stage, args, kwargs in calls]

    def optimizer_step():
        losses = model(batch, mode='loss')
        optimizer.backward(sum(value for name, value in losses.items() if 'loss' in name))
        jt.sync([g for group in optimizer.param_groups for g in group['grads']])
        _sync()
        start = time.perf_counter()
        if clip_grad:
            optimizer.clip_grad_norm(clip_grad['max_norm'], clip_grad.get('norm_type', 2))
        optimizer.step()
        _sync()
        return time.perf_counter() - start

    per_run = []
    for run in range(warmup + runs):
        times = defaultdict(float)
        for name, job in jobs:
            _sync()
            start = time.perf_counter()
            job()
            times[name] += time.perf_counter() - start
        times['optimizer'] = optimizer_step()
        jt.gc()
        if run >= warmup:
            per_run.append(times)
    return _ordered(_medians(per_run), stages)


# ---------------------------------------------------------------------------------------------- report

# /proc/cpuinfo flags that name vector instruction sets (x86 ``flags``, Arm ``Features``)
_VECTOR_PREFIXES = ('sse', 'ssse', 'avx', 'fma', 'f16c', 'amx', 'asimd', 'neon', 'sve')


def cpu_info(path='/proc/cpuinfo'):
    """``{"model": str, "flags": [vector extensions, sorted]}`` of the first CPU in ``path``.

    Plain Python: ``tools/dev/speed_common.py`` uses it for the official model's side too.
    """
    model, flags = 'unknown', []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return dict(model=model, flags=flags)
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'hardware', 'cpu model') and model == 'unknown':
            model = value.strip()
        elif key in ('flags', 'features') and not flags:
            flags = sorted({f for f in value.split() if f.startswith(_VECTOR_PREFIXES)})
    return dict(model=model, flags=flags)


def stage_table(stages, total):
    """Lines 'stage  seconds  share' in stage order, nested stages indented, and 'other' (total - top level)."""
    lines = []
    width = max([len(n) for n in stages] + [12])
    tops = top_level(list(stages))
    for name, seconds in stages.items():
        nested = name not in tops
        label = ('  ' + name.rsplit('.', 1)[-1]) if nested else name
        lines.append(f'  {label:<{width}}  {seconds:8.4f} s  {100 * seconds / total:5.1f}%')
    other = total - sum(stages[n] for n in tops)
    lines.append(f'  {"other":<{width}}  {other:8.4f} s  {100 * other / total:5.1f}%  (total - stages above)')
    return lines
