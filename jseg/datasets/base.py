"""``BaseSegDataset``: image / label-map pairs found in folders or listed in a split file.

A dataset is a plain indexable list of samples, with no Jittor in it; the
loader (:mod:`jseg.datasets.loader`) batches it with worker processes.
"""
import copy
import os
import os.path as osp
import warnings

import numpy as np

from jseg.registry import DATASETS

from .errors import DataError
from .transforms import Compose

__all__ = ['BaseSegDataset']

README_HINT = 'see datasets/README.md for the expected layout and how to symlink existing data'


@DATASETS.register_module()
class BaseSegDataset:
    """Semantic segmentation dataset with mmseg 1.x's arguments.

    Images are ``<data_root>/<data_prefix.img_path>/<name><img_suffix>`` and
    their label maps ``<data_root>/<data_prefix.seg_map_path>/<name><seg_map_suffix>``,
    where ``name`` may contain sub-folders (Cityscapes' ``aachen/aachen_000000_000019``).
    Names come from ``ann_file`` (a split file, one name per line) or, without
    one, from a recursive scan of the image folder (sorted; hidden files skipped).

    Construction checks what is cheap: the folders exist, the list is not
    empty and every image has its label map. Loading checks the rest
    (unreadable or truncated files, label map size, label values in
    ``[0, num_classes)`` or 255); every failure is a :class:`DataError`
    naming the file.

    Args:
        ann_file (str): split file, relative to ``data_root``; '' scans the folder.
        img_suffix (str): image file ending, e.g. ``'.jpg'``.
        seg_map_suffix (str): label map file ending, e.g. ``'.png'``.
        metainfo (dict | None): ``classes`` (a subset of the dataset's
            classes, in any order, remaps labels; dropped classes become 255)
            and ``palette``.
        data_root (str | None): dataset folder.
        data_prefix (dict): ``img_path`` and ``seg_map_path`` under
            ``data_root``; ``seg_map_path=None`` for images without labels.
        indices (int | sequence[int] | None): keep only the first N samples
            or the listed ones.
        pipeline (list[dict | callable]): transforms, ending with ``PackSegInputs``.
        test_mode (bool): a ``None`` from the pipeline is an error instead of
            a reason to draw another sample.
        lazy_init (bool): do not list files until :meth:`full_init`.
        max_refetch (int): tries to find a loadable replacement sample.
        ignore_index (int): label of ignored pixels (255).
        reduce_zero_label (bool): label 0 is "unlabelled": 0 -> 255, k -> k - 1.
        skip_bad_samples (bool): when a sample fails to load, warn, count it
            and use another one (drawn from the sample's random state) instead
            of raising.
        filter_cfg, serialize_data, backend_args: accepted for mmseg config
            compatibility; only their defaults (None, any, None) are supported.

    Attributes:
        metainfo (dict): ``classes``, ``palette``, ``label_map``, ``reduce_zero_label``.
        num_classes (int): number of classes.
    """

    METAINFO = dict()
    #: appended to "label values outside [0, K)" errors, e.g. to name a converter
    LABEL_HINT = None

    def __init__(self, ann_file='', img_suffix='.jpg', seg_map_suffix='.png', metainfo=None, data_root=None,
                 data_prefix=None, filter_cfg=None, indices=None, serialize_data=True, pipeline=(),
                 test_mode=False, lazy_init=False, max_refetch=1000, ignore_index=255,
                 reduce_zero_label=False, backend_args=None, skip_bad_samples=False):
        if filter_cfg is not None:
            raise ValueError('filter_cfg is not supported by jseg datasets; use indices or a split file')
        if backend_args is not None:
            raise ValueError('jseg datasets read local files only; backend_args must be None')
        self.img_suffix = img_suffix
        self.seg_map_suffix = seg_map_suffix
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.data_root = data_root
        if data_prefix is None:
            data_prefix = dict(img_path='', seg_map_path='')
        self.data_prefix = dict(data_prefix)
        self.ann_file = ann_file or ''
        self._indices = indices
        self.test_mode = test_mode
        self.max_refetch = max_refetch
        self.skip_bad_samples = skip_bad_samples
        self.data_list = []
        self._fully_initialized = False

        self._metainfo = self._load_metainfo(metainfo)
        self.label_map = self.get_label_map(self._metainfo.get('classes'))
        self._metainfo.update(label_map=self.label_map, reduce_zero_label=self.reduce_zero_label)
        self._metainfo['palette'] = self._update_palette()

        if self.data_root is not None:
            self._join_prefix()
        self.pipeline = Compose(list(pipeline or []))
        if not lazy_init:
            self.full_init()
        if test_mode and not self._metainfo.get('classes'):
            raise ValueError('dataset metainfo must list classes in test mode')

    # ----------------------------------------------------------------- metainfo
    @classmethod
    def _load_metainfo(cls, metainfo):
        merged = copy.deepcopy(cls.METAINFO)
        if metainfo is not None:
            if not isinstance(metainfo, dict):
                raise TypeError(f'metainfo must be a dict, got {type(metainfo).__name__}')
            merged.update(copy.deepcopy(dict(metainfo)))
        if 'classes' in merged:
            merged['classes'] = tuple(merged['classes'])
        return merged

    @classmethod
    def get_label_map(cls, new_classes=None):
        """``{old id: new id}`` when ``new_classes`` differ from the dataset's classes, else None.

        Dropped classes map to 255. ``new_classes`` must be a subset of ``METAINFO['classes']``.
        """
        old_classes = cls.METAINFO.get('classes')
        if new_classes is None or old_classes is None or list(new_classes) == list(old_classes):
            return None
        unknown = [c for c in new_classes if c not in old_classes]
        if unknown:
            raise ValueError(f'classes {unknown} are not classes of {cls.__name__}')
        new_classes = list(new_classes)
        return {i: (new_classes.index(c) if c in new_classes else 255) for i, c in enumerate(old_classes)}

    def _update_palette(self):
        palette = self._metainfo.get('palette', [])
        classes = self._metainfo.get('classes', [])
        if len(palette) == len(classes):
            return [list(c) for c in palette]
        if len(palette) == 0:  # a fixed random palette, without touching the global random state
            return np.random.RandomState(42).randint(0, 255, size=(len(classes), 3)).tolist()
        if len(palette) >= len(classes) and self.label_map is not None:
            by_new_id = sorted((new, old) for old, new in self.label_map.items() if new != 255)
            return [list(palette[old]) for _, old in by_new_id]
        raise ValueError(f'palette has {len(palette)} colours for {len(classes)} classes')

    @property
    def metainfo(self):
        """A copy of ``classes``, ``palette``, ``label_map`` and ``reduce_zero_label``."""
        return copy.deepcopy(self._metainfo)

    @property
    def num_classes(self):
        return len(self._metainfo.get('classes', ()))

    # ------------------------------------------------------------------ listing
    def _join_prefix(self):
        if self.ann_file and not osp.isabs(self.ann_file):
            self.ann_file = osp.join(self.data_root, self.ann_file)
        for key, prefix in self.data_prefix.items():
            if prefix is None:
                continue
            if not isinstance(prefix, str):
                raise TypeError(f'data_prefix[{key!r}] must be a str, got {prefix!r}')
            if not osp.isabs(prefix):
                self.data_prefix[key] = osp.join(self.data_root, prefix)

    def full_init(self):
        """List the samples and check the folders (done by the constructor unless ``lazy_init``)."""
        if self._fully_initialized:
            return
        self._check_folders()
        data_list = self.load_data_list()
        if not data_list:
            name = type(self).__name__
            if self._uses_split_file():
                raise DataError(self.ann_file, f'{name}: the split file lists no images', README_HINT)
            raise DataError(self.data_prefix['img_path'], f'{name}: no images ending with '
                                                          f'{self.img_suffix!r} in this folder (searched '
                                                          'recursively)', README_HINT)
        self._check_pairs(data_list)
        if self._indices is not None:
            data_list = self._select(data_list, self._indices)
        for i, info in enumerate(data_list):
            info['sample_idx'] = i
        self.data_list = data_list
        self._fully_initialized = True

    def _uses_split_file(self):
        return bool(self.ann_file) and not osp.isdir(self.ann_file)

    def _check_folders(self):
        if self.data_root is not None and not osp.isdir(self.data_root):
            raise DataError(self.data_root, f'{type(self).__name__}: data_root not found (looked at '
                                            f'{osp.abspath(self.data_root)})', README_HINT)
        img_dir = self.data_prefix.get('img_path')
        if img_dir is None or not osp.isdir(img_dir):
            raise DataError(img_dir, f'{type(self).__name__}: image folder not found (looked at '
                                     f'{osp.abspath(img_dir or ".")})', README_HINT)
        seg_dir = self.data_prefix.get('seg_map_path')
        if seg_dir is not None and not osp.isdir(seg_dir):
            raise DataError(seg_dir, f'{type(self).__name__}: annotation folder not found (looked at '
                                     f'{osp.abspath(seg_dir)})', README_HINT)
        if self._uses_split_file() and not osp.isfile(self.ann_file):
            raise DataError(self.ann_file, f'{type(self).__name__}: split file (ann_file) not found',
                            README_HINT)

    def _names(self):
        """Sample names (paths relative to the image folder, without suffix), in dataset order."""
        if self._uses_split_file():
            with open(self.ann_file, encoding='utf-8') as f:
                return [line.strip() for line in f if line.strip()]
        img_dir = self.data_prefix['img_path']
        found = []
        for folder, subdirs, files in os.walk(img_dir, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith('.')]
            rel_folder = osp.relpath(folder, img_dir)
            for name in files:
                if name.endswith(self.img_suffix) and not name.startswith('.'):
                    rel = name if rel_folder == '.' else osp.join(rel_folder, name)
                    found.append(rel[:len(rel) - len(self.img_suffix)])
        return sorted(found, key=lambda n: n + self.img_suffix)

    def load_data_list(self):
        """One info dict per sample: paths, ``reduce_zero_label``, ``label_map``, ``seg_fields``.

        Returns:
            list[dict]: sample infos in dataset order.
        """
        img_dir = self.data_prefix['img_path']
        seg_dir = self.data_prefix.get('seg_map_path')
        data_list = []
        for name in self._names():
            info = dict(img_path=osp.join(img_dir, name + self.img_suffix))
            if seg_dir is not None:
                info['seg_map_path'] = osp.join(seg_dir, name + self.seg_map_suffix)
            info['label_map'] = self.label_map
            info['reduce_zero_label'] = self.reduce_zero_label
            info['seg_fields'] = []
            data_list.append(info)
        return data_list

    def _check_pairs(self, data_list):
        if self._uses_split_file():
            missing = [d['img_path'] for d in data_list if not osp.isfile(d['img_path'])]
            if missing:
                raise DataError(missing[0], f'image listed in split file {self.ann_file} not found'
                                            + _and_more(len(missing)))
        unpaired = [d for d in data_list if 'seg_map_path' in d and not osp.isfile(d['seg_map_path'])]
        if unpaired:
            first = unpaired[0]
            raise DataError(first['img_path'], f'no annotation for this image: expected {first["seg_map_path"]}'
                                               + _and_more(len(unpaired)))

    @staticmethod
    def _select(data_list, indices):
        if isinstance(indices, int):
            return data_list[:indices]
        return [data_list[i] for i in indices]

    # ------------------------------------------------------------------ access
    def __len__(self):
        self.full_init()
        return len(self.data_list)

    def get_data_info(self, idx):
        """A copy of sample ``idx``'s info dict (paths, ``sample_idx``, label settings)."""
        self.full_init()
        info = copy.deepcopy(self.data_list[idx])
        info['num_classes'] = self.num_classes if self._metainfo.get('classes') else None
        info['label_hint'] = self.LABEL_HINT
        return info

    def prepare_data(self, idx, rng=None):
        """Run the pipeline on sample ``idx``.

        Args:
            idx (int): sample index.
            rng (np.random.RandomState | None): the sample's random state
                (``results['rng']``); None uses NumPy's global state.

        Returns:
            dict | list[dict] | None: the packed sample (a list of views for
            test-time augmentation), or None if a transform gave up.
        """
        results = self.get_data_info(idx)
        if rng is not None:
            results['rng'] = rng
        sample = self.pipeline(results)
        if isinstance(sample, dict):
            sample.pop('rng', None)
        return sample

    def load_sample(self, idx, rng=None):
        """Sample ``idx``, replacing it when it cannot be used.

        A ``None`` from the pipeline (outside test mode), or a
        :class:`DataError` when ``skip_bad_samples`` is set, makes it draw
        another index from ``rng`` (up to ``max_refetch`` times).

        Returns:
            (dict | list, list[tuple[str, str]]): the sample and the
            ``(path, problem)`` of each sample skipped on the way.
        """
        rng = rng if rng is not None else np.random.mtrand._rand
        skipped = []
        current = idx
        for _ in range(self.max_refetch + 1):
            try:
                sample = self.prepare_data(current, rng)
            except DataError as err:
                if not self.skip_bad_samples:
                    raise
                skipped.append((err.path or '', str(err)))
                sample = None
            if sample is not None:
                for view in (sample if isinstance(sample, list) else [sample]):
                    if isinstance(view, dict) and isinstance(view.get('meta'), dict):
                        view['meta']['sample_idx'] = int(current)
                return sample, skipped
            if self.test_mode and not skipped:
                raise ValueError(f'the test pipeline returned None for sample {current} '
                                 f'({self.data_list[current]["img_path"]})')
            current = int(rng.randint(0, len(self)))
        raise DataError(self.data_list[idx]['img_path'],
                        f'no loadable sample found after {self.max_refetch} replacements '
                        f'({len(skipped)} bad samples skipped)')

    def __getitem__(self, idx):
        sample, skipped = self.load_sample(idx)
        for path, problem in skipped:
            warnings.warn(f'skipped bad sample: {problem}')
        return sample

    def __repr__(self):
        n = len(self.data_list) if self._fully_initialized else 'not listed yet'
        return (f'{type(self).__name__}(data_root={self.data_root!r}, samples={n}, '
                f'classes={self.num_classes}, reduce_zero_label={self.reduce_zero_label},\n'
                f'  pipeline={self.pipeline!r})')


def _and_more(count):
    return f' (and {count - 1} more)' if count > 1 else ''
