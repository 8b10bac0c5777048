"""What the dataset converters share: finding files, atomic PNG writes, a parallel loop with progress."""
import io
import multiprocessing
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without installing jseg

from jseg.utils.fileio import atomic_write_bytes  # noqa: E402

__all__ = ['ConversionError', 'find_files', 'read_label', 'write_label_png', 'run_parallel']


class ConversionError(RuntimeError):
    """The input folder is not what the converter expects; the message says what to pass."""


def find_files(folder, suffix, exclude=None):
    """Paths under ``folder`` (recursive, sorted) whose names end with ``suffix``."""
    found = []
    for parent, subdirs, files in os.walk(folder, followlinks=True):
        subdirs.sort()
        for name in files:
            if name.endswith(suffix) and not name.startswith('.') and not (exclude and exclude in name):
                found.append(osp.join(parent, name))
    return sorted(found)


def read_label(path):
    """A single-channel label PNG as an (H, W) uint8 array."""
    label = np.asarray(Image.open(path))
    if label.ndim != 2:
        raise ConversionError(f'{path}: expected a single-channel label map, got shape {label.shape}')
    return label.astype(np.uint8, copy=False)


def write_label_png(label, path):
    """Write an (H, W) uint8 map as a grayscale PNG, atomically (temporary file, then rename)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode='L').save(buffer, format='PNG')
    atomic_write_bytes(path, buffer.getvalue())


def run_parallel(function, tasks, nproc, desc):
    """Call ``function(task)`` for every task in ``nproc`` processes, with a tqdm progress bar.

    Returns:
        list: the results, in no particular order.
    """
    from tqdm import tqdm
    results = []
    if nproc <= 1:
        for task in tqdm(tasks, desc=desc, unit='file'):
            results.append(function(task))
        return results
    with multiprocessing.get_context('fork').Pool(nproc) as pool:
        for result in tqdm(pool.imap_unordered(function, tasks, chunksize=16), total=len(tasks), desc=desc,
                           unit='file'):
            results.append(result)
    return results
