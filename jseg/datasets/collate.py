"""Collate packed samples into the batch dict the runner and the model receive."""
import numpy as np

__all__ = ['collate_samples', 'batch_nbytes', 'restore_tuples']


def collate_samples(samples, pad_size=None, pad_val=0, seg_pad_val=255):
    """Stack samples from ``PackSegInputs`` into one batch, padding at the bottom and right.

    Args:
        samples (list[dict] | list[list[dict]]): packed samples, or (for
            test-time augmentation) one list of views per sample.
        pad_size (tuple[int, int] | None): minimum ``(h, w)`` of the batch;
            the batch is padded to the largest sample and to at least this.
        pad_val (int): image padding value.
        seg_pad_val (int): label padding value (the ignore index).

    Returns:
        dict: ``inputs`` (B, C, H, W) in the samples' dtype (uint8 BGR);
        ``gt_seg`` (B, H', W') uint8, only if some sample has a label (samples
        without one are all ``seg_pad_val``), padded to the largest label map
        and ``pad_size``: with training pipelines labels match their images,
        so H', W' = H, W; after a test pipeline they keep the original size;
        ``metas``: list of B meta dicts whose ``pad_shape`` is set to
        ``(H, W)`` (``img_shape`` stays the unpadded shape). For view lists:
        ``{'views': [batch of view 0, ...]}``.
    """
    if not samples:
        raise ValueError('cannot collate an empty list of samples')
    if isinstance(samples[0], (list, tuple)):
        num_views = len(samples[0])
        if any(len(s) != num_views for s in samples):
            raise ValueError('all samples of a test-time-augmentation batch must have the same number of views')
        return {'views': [collate_samples([s[v] for s in samples], pad_size, pad_val, seg_pad_val)
                          for v in range(num_views)]}

    shapes = [s['inputs'].shape for s in samples]
    channels = shapes[0][0]
    if any(shape[0] != channels for shape in shapes):
        raise ValueError(f'samples have different channel counts: {sorted({s[0] for s in shapes})}')
    height = max(shape[1] for shape in shapes)
    width = max(shape[2] for shape in shapes)
    if pad_size is not None:
        height, width = max(height, int(pad_size[0])), max(width, int(pad_size[1]))

    dtype = samples[0]['inputs'].dtype
    inputs = np.full((len(samples), channels, height, width), pad_val, dtype=dtype)
    for i, sample in enumerate(samples):
        _, h, w = sample['inputs'].shape
        inputs[i, :, :h, :w] = sample['inputs']
    batch = {'inputs': inputs}

    if any('gt_seg' in s for s in samples):
        # label maps are padded on their own: after a test pipeline they keep the original size
        seg_h = max(s['gt_seg'].shape[0] for s in samples if 'gt_seg' in s)
        seg_w = max(s['gt_seg'].shape[1] for s in samples if 'gt_seg' in s)
        if pad_size is not None:
            seg_h, seg_w = max(seg_h, int(pad_size[0])), max(seg_w, int(pad_size[1]))
        gt_seg = np.full((len(samples), seg_h, seg_w), seg_pad_val, dtype=np.uint8)
        for i, sample in enumerate(samples):
            if 'gt_seg' in sample:
                h, w = sample['gt_seg'].shape
                gt_seg[i, :h, :w] = sample['gt_seg']
        batch['gt_seg'] = gt_seg

    metas = []
    for sample in samples:
        meta = dict(sample.get('meta', {}))
        meta['pad_shape'] = (height, width)
        metas.append(meta)
    batch['metas'] = metas
    return batch


def batch_nbytes(batch):
    """Bytes held by the arrays of a (possibly nested) batch."""
    if isinstance(batch, np.ndarray):
        return batch.nbytes
    if isinstance(batch, dict):
        return sum(batch_nbytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_nbytes(v) for v in batch)
    return 0


def restore_tuples(batch):
    """Turn lists in metas back into tuples (Jittor's worker buffers send tuples as lists)."""
    if 'views' in batch:
        for view in batch['views']:
            restore_tuples(view)
        return batch
    batch['metas'] = [{k: _tuplify(v) for k, v in meta.items()} for meta in batch.get('metas', [])]
    return batch


def _tuplify(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value
