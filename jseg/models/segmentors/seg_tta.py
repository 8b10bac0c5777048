"""Test-time augmentation: average a segmentor's class probabilities over views (mmseg's ``SegTTAModel``)."""
import jittor as jt
from jittor import nn

from jseg.registry import MODELS

__all__ = ['SegTTAModel']


@MODELS.register_module()
class SegTTAModel(nn.Module):
    """Wrap a segmentor to predict from every test-time view of a batch and merge the results.

    The loader gives a TTA batch as ``{'views': [view_0, view_1, ...]}``,
    each view a batch dict (``inputs``, ``metas``, ...) of one resize/flip
    combination. For each view the wrapped segmentor returns per-sample
    logits already flipped back and resized to the original image; this
    model returns, per sample, the mean over views of ``softmax(logits, dim=0)``
    (of ``sigmoid(logits)`` for a single-channel, binary segmentor), as
    mmseg's ``SegTTAModel.merge_preds`` does.

    Weights are the segmentor's: :meth:`state_dict` and the loading methods
    use the wrapped module's parameter names, so a plain segmentor checkpoint
    loads directly.

    Args:
        module (dict | nn.Module): the segmentor or its config.
    """

    def __init__(self, module):
        super().__init__()
        self.module = MODELS.build(module) if isinstance(module, dict) else module

    def execute(self, batch, mode='predict'):
        """Merged predictions for ``batch``.

        Args:
            batch (dict): ``{'views': [batch dict, ...]}`` or one plain batch dict.
            mode (str): only ``'predict'``.

        Returns:
            list[jt.Var]: one (K, H_ori, W_ori) float map of averaged class
            probabilities per sample.
        """
        if mode != 'predict':
            raise ValueError(f"SegTTAModel only predicts (mode='predict'), got mode={mode!r}")
        views = batch['views'] if 'views' in batch else [batch]
        if not views:
            raise ValueError('SegTTAModel got a batch with no views')
        merged = None
        for view in views:
            logits = self.module(view, mode='predict')            # list of (K, H_ori, W_ori)
            probs = [self._to_probs(x) for x in logits]
            if merged is None:
                merged = probs
            else:
                if len(probs) != len(merged):
                    raise ValueError(f'views disagree on the batch size ({len(probs)} vs {len(merged)})')
                merged = [m + p for m, p in zip(merged, probs)]  # each (K, H_ori, W_ori)
        return [m / len(views) for m in merged]

    @staticmethod
    def _to_probs(logits):
        if logits.shape[0] == 1:
            return jt.sigmoid(logits)
        return nn.softmax(logits, dim=0)

    # the wrapped segmentor's weights, under its own names
    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.module.load_state_dict(*args, **kwargs)

    def load_parameters(self, *args, **kwargs):
        return self.module.load_parameters(*args, **kwargs)

    def init_weights(self):
        if hasattr(self.module, 'init_weights'):
            self.module.init_weights()
