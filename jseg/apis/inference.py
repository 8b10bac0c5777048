"""High-level inference: build a model from a config and a checkpoint, segment images.

    from jseg.apis import init_model, inference_model
    model = init_model('project/offseg/tiny/offset_learning_tiny_512x512_ade_160k.py', 'offseg_t_ade.pth')
    label = inference_model(model, 'demo.jpg')        # (H, W) class indices at the image's size
"""
import copy

import jittor as jt
import numpy as np

from jseg.config import Config, ConfigDict
from jseg.ops import argmax, configure_fused_ops
from jseg.registry import DATASETS, MODELS

__all__ = ['init_model', 'inference_model', 'test_pipeline_of']


def test_pipeline_of(cfg):
    """The config's test pipeline without annotation loading (config dicts)."""
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key, None)
        if loader and loader.get('dataset', None) and loader['dataset'].get('pipeline', None):
            pipeline = loader['dataset']['pipeline']
            break
    else:
        pipeline = cfg.get('test_pipeline', None)
    if not pipeline:
        raise ValueError('the config has no test pipeline (test_dataloader.dataset.pipeline)')
    return [copy.deepcopy(dict(t)) for t in pipeline if t['type'] != 'LoadAnnotations']


def _dataset_meta(cfg):
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        loader = cfg.get(key, None)
        dataset = loader.get('dataset', None) if loader else None
        if dataset and isinstance(dataset.get('type', None), str) and dataset['type'] in DATASETS:
            meta = dict(getattr(DATASETS.get(dataset['type']), 'METAINFO', {}) or {})
            meta.update(dataset.get('metainfo', None) or {})
            return meta
    return {}


def init_model(config, checkpoint=None, cfg_options=None, load_strict=None):
    """Build the model of ``config`` (a path or a Config), load ``checkpoint``, switch to eval.

    The model gets ``model.cfg`` (the config) and ``model.dataset_meta``
    (``classes`` and ``palette`` of the config's dataset). Pretrained-backbone
    settings of the config are not applied: the checkpoint holds all weights, and loading
    stops with an error naming the missing ones unless ``load_strict`` (default: the
    config's ``load_strict``, else True) is False.
    """
    from jseg.runner.checkpoint import load_checkpoint
    cfg = Config.fromfile(config, cfg_options) if isinstance(config, str) else config
    if not isinstance(cfg, ConfigDict):
        raise TypeError(f'config must be a path or a Config, got {type(config).__name__}')
    configure_fused_ops(cfg)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        strict = cfg.get('load_strict', True) if load_strict is None else load_strict
        load_checkpoint(model, checkpoint, require_all=bool(strict))
    model.cfg = cfg
    model.dataset_meta = _dataset_meta(cfg)
    model.eval()
    return model


def _load_input(img):
    """A results dict for a path or a (H, W, 3) uint8 BGR array."""
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'expected an (H, W, 3) BGR image, got shape {img.shape}')
        return dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], img_path=None), True
    return dict(img_path=str(img)), False


def inference_model(model, imgs):
    """Segment one image or a list of images.

    Args:
        model: a model from :func:`init_model`.
        imgs (str | np.ndarray | list): image path(s) or (H, W, 3) uint8 BGR array(s).

    Returns:
        np.ndarray | list[np.ndarray]: (H, W) predicted class indices at each
        image's original size.
    """
    from jseg.datasets import collate_samples
    from jseg.datasets.transforms import Compose
    single = not isinstance(imgs, (list, tuple))
    pipeline_cfg = test_pipeline_of(model.cfg)
    file_pipeline = Compose(pipeline_cfg)
    array_pipeline = Compose([t for t in pipeline_cfg if t['type'] != 'LoadImageFromFile'])
    labels = []
    model.eval()
    with jt.no_grad():
        for img in ([imgs] if single else imgs):
            results, is_array = _load_input(img)
            sample = (array_pipeline if is_array else file_pipeline)(results)
            batch = collate_samples([sample])
            logits = model(batch, mode='predict')[0]
            labels.append(argmax(logits, 0)[0].numpy())
    return labels[0] if single else labels
