"""tools/benchmark_stages.py: stage discovery and the billing of time to stages, on a model whose stages sleep."""
import importlib
import time

import jittor as jt
from jittor import nn
from tool_helpers import load_tool  # noqa: F401  (puts tools/ on sys.path)

import benchmark_stages as bs

FREQFUSION = 'jseg.models.decode_heads.freqfusion'


class Sleeper(nn.Module):
    """x -> x + 1 after sleeping ``seconds`` (a stage whose cost is known)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.weight = jt.ones((1,))

    def execute(self, x):
        time.sleep(self.seconds)
        return x * self.weight + 1


class FreqFusion(nn.Module):
    """Named like the real class so that its sub-stages apply: a sampler child and CARAFE calls."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.dysampler = Sleeper(0.03)

    def execute(self, x):
        time.sleep(self.seconds)
        carafe = importlib.import_module(FREQFUSION).carafe      # looked up at call time, as the real code does
        masks = jt.ones((x.shape[0], 9, x.shape[2], x.shape[3])) / 9
        return self.dysampler(carafe(x, masks, 3, 1, 1))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.ModuleList([Sleeper(0.01), Sleeper(0.02)])
        self.freqfusions = nn.ModuleList([FreqFusion(0.02), FreqFusion(0.04)])

    def execute(self, x):
        x = self.pre[1](self.pre[0](x))
        return self.freqfusions[1](self.freqfusions[0](x))

    def predict_by_feat(self, logits, metas):
        time.sleep(0.01)
        return logits


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Sleeper(0.05)
        self.decode_head = Head()
        self.data_preprocessor = lambda batch, training=False: (batch['inputs'], None, None)

    def execute(self, batch, mode='predict'):
        inputs, _, _ = self.data_preprocessor(batch, training=False)
        logits = self.decode_head.predict_by_feat(self.decode_head(self.backbone(inputs)), None)
        return [logits[i] for i in range(logits.shape[0])]


def test_stages_are_found_in_forward_order():
    names = [stage.name for stage in bs.discover_stages(Model())]
    assert names == ['preprocess', 'backbone', 'decode_head.pre', 'decode_head.pre',
                     'decode_head.freqfusions.0', 'decode_head.freqfusions.0.dysampler',
                     'decode_head.freqfusions.1', 'decode_head.freqfusions.1.dysampler', 'resize', 'loss', 'carafe']


def test_each_stage_is_billed_its_own_time_and_the_patches_are_undone():
    model = Model()
    carafe_before = importlib.import_module(FREQFUSION).carafe
    times = bs.time_inference_stages(model, dict(inputs=jt.ones((1, 2, 4, 4))), runs=2, warmup=1)
    assert list(times) == ['preprocess', 'backbone', 'decode_head.pre', 'decode_head.freqfusions.0',
                           'decode_head.freqfusions.0.carafe', 'decode_head.freqfusions.0.dysampler',
                           'decode_head.freqfusions.1', 'decode_head.freqfusions.1.carafe',
                           'decode_head.freqfusions.1.dysampler', 'resize', 'argmax']
    assert times['backbone'] >= 0.05 and times['decode_head.pre'] >= 0.03    # both ModuleList items summed
    assert times['decode_head.freqfusions.0.dysampler'] >= 0.03 and times['resize'] >= 0.01
    for level, own in ((0, 0.02), (1, 0.04)):   # a parent holds its own sleep and its sub-stages
        name = f'decode_head.freqfusions.{level}'
        assert times[name] >= own + times[name + '.carafe'] + times[name + '.dysampler'] - 1e-3
    assert times['backbone'] < 0.05 + 1.0 and times['preprocess'] < 0.5     # nothing else billed to them
    assert importlib.import_module(FREQFUSION).carafe is carafe_before
    assert 'execute' not in vars(model.backbone) and 'predict_by_feat' not in vars(model.decode_head)


def test_table_counts_nested_stages_once():
    stages = {'a': 1.0, 'a.b': 0.4, 'a.bc': 0.1, 'ab': 0.25, 'c': 0.5}
    assert bs.top_level(list(stages)) == ['a', 'ab', 'c']
    lines = bs.stage_table(stages, total=2.0)
    assert [line.split()[0] for line in lines] == ['a', 'b', 'bc', 'ab', 'c', 'other']
    assert lines[-1].split()[1] == '0.2500'       # 2.0 - (1.0 + 0.25 + 0.5)
