"""Atomic file writes: a killed process never leaves a truncated file behind."""
import contextlib
import os
import os.path as osp
import tempfile

__all__ = ['atomic_open', 'atomic_write_text', 'atomic_write_bytes']


@contextlib.contextmanager
def atomic_open(path, mode='wb'):
    """Open a temporary file beside ``path``; on success rename it onto ``path``.

    The rename is atomic on POSIX file systems, so readers see either the old
    file or the complete new one. On an exception the temporary file is removed.
    """
    if 'w' not in mode:
        raise ValueError(f'atomic_open only writes, got mode {mode!r}')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    with atomic_open(path, 'w') as f:
        f.write(text)


def atomic_write_bytes(path, data):
    with atomic_open(path, 'wb') as f:
        f.write(data)
