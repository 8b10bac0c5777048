"""Batches from a dataset, loaded by Jittor worker processes, reproducible and resumable.

:func:`build_dataloader` wraps a dataset (an object or a config) in a
:class:`SegDataLoader`, which iterates over one epoch at a time::

    loader = build_dataloader(cfg.train_dataloader, seed=cfg.seed)   # or (dataset_cfg, batch_size=16, ...)
    loader.set_epoch(it // len(loader))          # when resuming at global iteration ``it``
    loader.set_start_iter(it % len(loader))
    while it < max_iters:
        for batch in loader:                     # the epoch advances by one after each full pass
            ...                                  # batch: {'inputs', 'gt_seg', 'metas'}

How it works
------------
* Workers are Jittor's (``jittor.dataset.Dataset``): forked processes that
  persist across epochs and send batches through shared-memory ring buffers.
  Under MPI Jittor gives each rank its share of every batch; ``batch_size``
  is the **global** batch. The epoch loop itself is ours (see
  ``SampleSource.iter_epoch``): Jittor's would build the next epoch's index
  list before the current epoch ends and can yield the batches of two
  workers out of order.
* Reproducibility. The order of an epoch is a permutation drawn from
  ``(seed, epoch)``. Every random choice a sample's pipeline makes comes
  from a ``np.random.RandomState`` seeded from ``(seed, epoch, sample
  index)`` (``results['rng']``; NumPy's and Python's global random states are
  seeded from the same triple for third-party transforms, and restored
  afterwards). A sample is therefore the same whatever the number of
  workers, the MPI world size or where a run was resumed.
* Persistent workers cannot see attributes set in the parent after they
  start, but Jittor shares the index list with them. So the sampler hands
  out *codes* ``epoch * len(dataset) + index``; a worker decodes
  ``divmod(code, len(dataset))`` into the epoch and the sample index.
* Resume: ``set_start_iter(n)`` makes the next pass start at batch ``n`` of
  the epoch (the workers' shared batch counter starts at ``n``), yielding
  exactly the batches an uninterrupted run would have yielded next.
* Errors: a worker never raises (Jittor would kill the whole program with
  "Caught SIGINT"). It sends a small error record instead, and the main
  process raises :class:`DataError` naming the file and the problem, with the
  worker's traceback. With ``skip_bad_samples=True`` on the dataset, bad
  samples are replaced by others and reported with a warning;
  :attr:`SegDataLoader.num_skipped` counts them.
"""
import contextlib
import random
import time
import traceback
import warnings

import numpy as np

from jseg.registry import DATASETS

from .collate import batch_nbytes, collate_samples, restore_tuples
from .errors import DataError

__all__ = ['build_dataloader', 'SegDataLoader', 'sample_rng']

_INT32_MAX = 2 ** 31 - 1
_SHUFFLE_TAG, _SAMPLE_TAG, _GLOBAL_TAG = 0, 1, 2
# mmengine dataloader keys that have no meaning here
_IGNORED_KEYS = ('persistent_workers', 'pin_memory', 'prefetch_factor', 'worker_init_fn', 'collate_fn')


def _entropy(seed, *words):
    return [int(seed) % (1 << 64)] + [int(w) for w in words]


def sample_rng(seed, epoch, index):
    """The random state of sample ``index`` in ``epoch``: a ``np.random.RandomState``."""
    words = np.random.SeedSequence(_entropy(seed, epoch, index, _SAMPLE_TAG))
    return np.random.RandomState(np.random.MT19937(words))


def epoch_order(num_samples, seed, epoch, shuffle):
    """The sample indices of ``epoch`` in loading order (int64 array)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng(_entropy(seed, epoch, _SHUFFLE_TAG)).permutation(num_samples)


@contextlib.contextmanager
def _seeded_global_random(seed, epoch, index):
    """Seed NumPy's and Python's global random states for one sample, then restore them."""
    np_state, py_state = np.random.get_state(), random.getstate()
    words = np.random.SeedSequence(_entropy(seed, epoch, index, _GLOBAL_TAG)).generate_state(4)
    np.random.seed(words)
    random.seed(int(words[0]))
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class _EpochSampler:
    """The codes ``epoch * N + index`` of one epoch, in loading order (Jittor's ``sampler``)."""

    def __init__(self, num_samples, shuffle, seed):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def codes(self):
        if (self.epoch + 1) * self.num_samples > _INT32_MAX:
            raise OverflowError(f'epoch {self.epoch} x {self.num_samples} samples does not fit the int32 '
                                'index codes Jittor shares with its workers')
        order = epoch_order(self.num_samples, self.seed, self.epoch, self.shuffle)
        return order + self.epoch * self.num_samples

    def __iter__(self):
        return iter(self.codes().tolist())

    def __len__(self):
        return self.num_samples


def _make_source_class():
    """Define the ``jittor.dataset.Dataset`` subclass (importing Jittor only when a loader is built)."""
    import multiprocessing as mp

    import cv2
    import jittor as jt
    from jittor.dataset.dataset import Worker

    class SampleSource(jt.dataset.Dataset):
        """Jittor's worker machinery with an exact epoch hand-over.

        In the workers (Jittor's ``_worker_main``): ``__getitem__`` decodes a
        code and loads the sample, ``collate_batch`` collates; neither raises.
        In the main process, :meth:`iter_epoch` replaces Jittor's ``__iter__``,
        which would compute the next epoch's index list before the current
        epoch ends and may yield the batches of different workers out of order.
        It hands the epoch's list to idle workers, lets them start at batch
        ``start`` (Jittor's shared batch counter), and yields batches in order.
        MPI sharding is Jittor's ``_get_index_list``.
        """

        def __init__(self, dataset, sampler, pad_size, **attrs):
            super().__init__()
            self.seg_dataset = dataset
            self.sampler = sampler
            self.pad_size = pad_size
            self.set_attrs(total_len=len(dataset), keep_numpy_array=True, **attrs)

        # ---------------------------------------------------------- worker side
        def __getitem__(self, code):
            code = int(code)
            epoch, index = divmod(code, len(self.seg_dataset))
            seed = self.sampler.seed
            try:
                with _seeded_global_random(seed, epoch, index):
                    sample, skipped = self.seg_dataset.load_sample(index, sample_rng(seed, epoch, index))
                return {'code': code, 'sample': sample, 'skipped': [list(s) for s in skipped]}
            except Exception as err:  # noqa: B902 - reported in the main process
                return {'code': code, 'error': _error_record(err, self.seg_dataset, index)}

        def collate_batch(self, records):
            codes = [r['code'] for r in records]
            try:
                errors = [r['error'] for r in records if 'error' in r]
                if errors:
                    return {'codes': codes, 'error': errors[0]}
                batch = collate_samples([r['sample'] for r in records], self.pad_size)
                skipped = [s for r in records for s in r['skipped']]
                if skipped:
                    batch['skipped'] = skipped
                nbytes = batch_nbytes(batch)
                if self.num_workers and nbytes > self.buffer_size - (1 << 20):
                    return {'codes': codes, 'error': {
                        'type': 'BufferTooSmall', 'path': None, 'hint': None, 'traceback': '',
                        'problem': f'a batch of {nbytes / 2**20:.0f} MiB does not fit the worker buffer of '
                                   f'{self.buffer_size / 2**20:.0f} MiB; pass a larger buffer_size to '
                                   'build_dataloader'}}
                batch['codes'] = codes
                return batch
            except Exception as err:  # noqa: B902
                n = len(self.seg_dataset)
                record = _error_record(err, None, None)
                record['problem'] = (f'while collating samples {[c % n for c in codes]}: '
                                     f'{record["problem"]}')
                return {'codes': codes, 'error': record}

        # ------------------------------------------------------------ main side
        def _start_workers(self, index_list, start):
            """Jittor's ``_init_workers``, with the shared batch counter starting at ``start``."""
            jt.migrate_all_to_cpu()
            jt.clean()
            jt.gc()
            self.index_list = mp.Array('i', self.real_len, lock=False)
            self.idqueue = jt.RingBuffer(2048)
            self.idqueue_lock = mp.Lock()
            self.gid = mp.Value('i', self.batch_len)
            self.gid.value = start
            self.gidc = mp.Condition(self.gid.get_lock())
            self.num_idle = mp.Value('i', 0, lock=False)
            self.num_idle_c = mp.Condition(self.gid.get_lock())
            self.index_list_numpy = np.ndarray(dtype='int32', shape=self.real_len, buffer=self.index_list)
            self.index_list_numpy[:] = index_list
            # OpenCV's thread pool does not survive fork: a worker touching it can hang. Stop it
            # while forking; the workers keep one thread each (one process per core already).
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                self.workers = [Worker(target=self._worker_main, args=(i,), buffer_size=self.buffer_size,
                                       keep_numpy_array=self.keep_numpy_array) for i in range(self.num_workers)]
            finally:
                cv2.setNumThreads(threads)

        def _hand_over(self, index_list, start):
            """Give idle workers the next epoch's list, starting at batch ``start``."""
            deadline = time.time() + 300
            with self.gid.get_lock():
                while self.num_idle.value < self.num_workers:
                    if time.time() > deadline:
                        raise RuntimeError('data loader workers did not finish the previous epoch in 300 s')
                    self.num_idle_c.wait(1.0)
                if self.gid.get_obj().value < self.batch_len:
                    raise RuntimeError('data loader workers still hold batches of an unfinished epoch')
                self.index_list_numpy[:] = index_list
                self.gid.get_obj().value = start
                self.gidc.notify_all()

        def _batch_slice(self, index_list, cid):
            return index_list[cid * self.real_batch_size:min(self.real_len, (cid + 1) * self.real_batch_size)]

        def iter_epoch(self, start):
            """Yield this process's batches ``start, start + 1, ...`` of the sampler's epoch, in order."""
            index_list = np.asarray(self._get_index_list(), dtype=np.int64)  # this rank's share
            if not self.num_workers:
                for cid in range(start, self.batch_len):
                    yield self.collate_batch([self[c] for c in self._batch_slice(index_list, cid)])
                return
            if not hasattr(self, 'workers'):
                self._start_workers(index_list, start)
            else:
                self._hand_over(index_list, start)
            position = {int(self._batch_slice(index_list, cid)[0]): cid for cid in range(start, self.batch_len)}
            pending, next_cid = {}, start
            while next_cid < self.batch_len:
                worker_id = self.idqueue.pop()
                batch = self.workers[worker_id].buffer.recv()
                if 'error' in batch:
                    yield batch  # raised by the caller at once
                    return
                pending[position[int(batch['codes'][0])]] = batch
                while next_cid in pending:
                    yield pending.pop(next_cid)
                    next_cid += 1

    return SampleSource


_SOURCE_CLASS = None


def _error_record(err, dataset, index):
    """A small picklable description of ``err`` raised while loading sample ``index``."""
    img_path = None
    if dataset is not None and index is not None:
        with contextlib.suppress(Exception):
            img_path = dataset.data_list[index]['img_path']
    record = {'type': type(err).__name__, 'traceback': traceback.format_exc(limit=-6),
              'index': index, 'img_path': img_path}
    if isinstance(err, DataError):
        record.update(path=err.path, problem=err.problem, hint=err.hint)
    else:
        record.update(path=img_path, problem=f'{type(err).__name__}: {err} (while loading sample {index})',
                      hint=None)
    return record


def _raise_record(record):
    problem = record['problem']
    if record.get('type') != 'DataError' and record.get('traceback'):
        problem = f'{problem}\nworker traceback (most recent call last, last frames):\n{record["traceback"]}'
    raise DataError(record.get('path'), problem, record.get('hint'))


class SegDataLoader:
    """Iterable over the batches of one epoch; see the module docstring.

    Batches are dicts ``inputs`` (B, 3, H, W) uint8 BGR, ``gt_seg`` (B, H, W)
    uint8 padded with 255 (absent without labels) and ``metas`` (list of B
    dicts), or ``{'views': [...]}`` of such dicts for test-time augmentation.

    Args:
        dataset: a dataset object (``len`` and ``load_sample(index, rng)``).
        batch_size (int): global batch size (all MPI ranks together).
        num_workers (int): worker processes (0: load in the main process).
        shuffle (bool): shuffle each epoch (order drawn from ``(seed, epoch)``).
        seed (int): base of every random choice (order and augmentation).
        drop_last (bool): drop the last incomplete batch of an epoch.
        pad_size (tuple[int, int] | None): minimum ``(h, w)`` of batches.
        buffer_size (int | None): bytes of each worker's shared-memory ring
            buffer (the main process maps all of them). None: three batches'
            worth when ``pad_size`` bounds the batch (16 MiB to 512 MiB), else
            Jittor's default of 512 MiB. A batch that does not fit is a clear error.
    """

    def __init__(self, dataset, batch_size=1, num_workers=0, shuffle=False, seed=0, drop_last=False,
                 pad_size=None, buffer_size=None):
        global _SOURCE_CLASS
        import jittor as jt
        if _SOURCE_CLASS is None:
            _SOURCE_CLASS = _make_source_class()
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if len(dataset) == 0:
            raise ValueError('cannot load from an empty dataset')
        if jt.in_mpi and batch_size < jt.world_size:
            batch_size = jt.world_size  # Jittor needs at least one sample per rank and step
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.drop_last = drop_last
        self.pad_size = None if pad_size is None else tuple(int(s) for s in pad_size)
        if buffer_size is None:
            buffer_size = _auto_buffer_size(batch_size, self.pad_size, getattr(dataset, 'pipeline', None))
        if buffer_size < (2 << 20):
            raise ValueError(f'buffer_size must be at least 2 MiB, got {buffer_size}')
        self.buffer_size = buffer_size
        self.num_skipped = 0
        self._epoch = 0
        self._start_iter = 0
        self._sampler = _EpochSampler(len(dataset), shuffle, self.seed)
        self._source = _SOURCE_CLASS(dataset, self._sampler, self.pad_size, batch_size=batch_size,
                                     num_workers=num_workers, drop_last=drop_last, shuffle=False,
                                     buffer_size=buffer_size)

    @property
    def epoch(self):
        """The epoch the next pass will load."""
        return self._epoch

    def set_epoch(self, epoch, start_batch=None):
        """Make the next pass load ``epoch`` (its order and augmentations).

        ``start_batch``, if given, is passed to :meth:`set_start_iter`.
        """
        self._epoch = int(epoch)
        if start_batch is not None:
            self.set_start_iter(start_batch)

    def set_start_iter(self, start_iter):
        """Make the next pass start at batch ``start_iter`` of its epoch (for exact resume)."""
        if not 0 <= start_iter <= len(self):
            raise ValueError(f'start_iter must be in [0, {len(self)}], got {start_iter}')
        self._start_iter = int(start_iter)

    def __len__(self):
        """Batches in a full epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self):
        """Where the next pass starts: ``{'epoch', 'start_iter', 'seed'}``."""
        return {'epoch': self._epoch, 'start_iter': self._start_iter, 'seed': self.seed}

    def load_state_dict(self, state):
        """Restore ``epoch``, ``start_iter`` and ``seed`` saved by :meth:`state_dict`."""
        if int(state['seed']) != self.seed:
            self.close()  # running workers hold the old seed
        self.seed = self._sampler.seed = int(state['seed'])
        self.set_epoch(state['epoch'])
        self.set_start_iter(state['start_iter'])

    def close(self):
        """Stop the worker processes (they restart on the next pass)."""
        if hasattr(self._source, 'workers'):
            self._source.reset()

    def __iter__(self):
        epoch, start = self._epoch, self._start_iter
        self._start_iter = 0
        self._sampler.epoch = epoch
        finished = False
        try:
            for batch in self._source.iter_epoch(start):
                yield self._check(batch)
            finished = True
        finally:
            if not finished and self.num_workers:
                self.close()  # workers may still hold batches of this epoch
        self._epoch = epoch + 1

    def _check(self, batch):
        if 'error' in batch:
            _raise_record(batch['error'])
        batch.pop('codes', None)
        skipped = batch.pop('skipped', None)
        if skipped:
            self.num_skipped += len(skipped)
            for _, problem in skipped:
                warnings.warn(f'skipped bad sample ({self.num_skipped} so far): {problem}', stacklevel=3)
        return restore_tuples(batch)

    def __repr__(self):
        return (f'{type(self).__name__}(dataset={type(self.dataset).__name__}[{len(self.dataset)}], '
                f'batch_size={self.batch_size}, num_workers={self.num_workers}, shuffle={self.shuffle}, '
                f'seed={self.seed}, drop_last={self.drop_last}, pad_size={self.pad_size})')


def _auto_buffer_size(batch_size, pad_size, pipeline):
    """Ring buffer bytes for three batches of ``pad_size`` (float images if the pipeline normalises)."""
    if pad_size is None:
        return 512 << 20
    names = {type(t).__name__ for t in getattr(pipeline, 'transforms', [])}
    image_bytes = 4 if 'Normalize' in names else 1
    batch = batch_size * pad_size[0] * pad_size[1] * (3 * image_bytes + 1) + (1 << 20)
    size = 16 << 20
    while size < 3 * batch and size < 512 << 20:
        size *= 2
    return size


def _find_crop_size(pipeline):
    for transform in getattr(pipeline, 'transforms', []):
        if type(transform).__name__ == 'RandomCrop':
            return transform.crop_size
    return None


def build_dataloader(dataset, batch_size=None, num_workers=None, shuffle=None, seed=None, drop_last=None,
                     pad_size='auto', buffer_size=None, training=None, **kwargs):
    """Build a :class:`SegDataLoader`.

    Args:
        dataset (dict | object): a dataset, a dataset config
            (``dict(type='ADE20KDataset', ...)``), or a whole dataloader config
            as the configs write it (``dict(batch_size=16, num_workers=4,
            shuffle=True, dataset=dict(...))``), whose keys fill the
            arguments not given here. From mmseg configs, ``sampler=dict(...,
            shuffle=...)`` gives ``shuffle``; ``persistent_workers`` is ignored
            (Jittor's workers always persist).
        batch_size (int): global batch size (default 1).
        num_workers (int): worker processes (default 0).
        shuffle (bool): shuffle each epoch (default False).
        seed (int): base seed of shuffling and augmentation (default: the config's, else 0).
        drop_last (bool): drop the last incomplete batch (default: same as ``shuffle``,
            i.e. training drops it and evaluation keeps every sample).
        training (bool | None): default for ``shuffle`` and ``drop_last`` when
            neither the arguments nor the config set them.
        pad_size ('auto' | tuple[int, int] | None): minimum batch ``(h, w)``.
            ``'auto'`` uses the ``crop_size`` of a ``RandomCrop`` in the
            pipeline, so training batches always have the crop size (as mmseg's
            data preprocessor pads them), and nothing for evaluation pipelines.
        buffer_size (int | None): bytes of each worker's shared-memory buffer
            (default: sized from the batch, see :class:`SegDataLoader`).
    """
    settings = {}
    if isinstance(dataset, dict) and 'dataset' in dataset and 'type' not in dataset:
        loader_cfg = dict(dataset)
        dataset = loader_cfg.pop('dataset')
        sampler = loader_cfg.pop('sampler', None)
        if isinstance(sampler, dict) and 'shuffle' in sampler:
            loader_cfg.setdefault('shuffle', sampler['shuffle'])
        for key in _IGNORED_KEYS:
            loader_cfg.pop(key, None)
        settings.update(loader_cfg)
    settings.update(kwargs)
    given = dict(batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, drop_last=drop_last,
                 seed=seed)
    for key, value in given.items():
        if value is not None:
            settings[key] = value
    unknown = set(settings) - {'batch_size', 'num_workers', 'shuffle', 'drop_last', 'seed', 'pad_size',
                               'buffer_size'}
    if unknown:
        raise TypeError(f'build_dataloader: unknown dataloader settings {sorted(unknown)}')
    if isinstance(dataset, dict):
        dataset = DATASETS.build(dataset)
    shuffle = bool(settings.get('shuffle', bool(training)))
    if pad_size == 'auto':
        pad_size = settings.get('pad_size', 'auto')
    if pad_size == 'auto':
        pad_size = _find_crop_size(getattr(dataset, 'pipeline', None))
    drop_last = settings.get('drop_last', shuffle if training is None else bool(training))
    return SegDataLoader(dataset, batch_size=settings.get('batch_size', 1),
                         num_workers=settings.get('num_workers', 0), shuffle=shuffle,
                         seed=settings.get('seed', 0), drop_last=bool(drop_last), pad_size=pad_size,
                         buffer_size=buffer_size if buffer_size is not None else settings.get('buffer_size'))
