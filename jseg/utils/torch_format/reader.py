"""``load_torch_file``: a ``torch.save`` zip archive read member by member."""
import os

from ..stored_zip import StoredZip
from .errors import TorchFormatError
from .pickle_scan import scan_pickle
from .tensors import TensorBuilder
from .unpickler import RestrictedUnpickler, allowed_globals

__all__ = ['load_torch_file']

_LEGACY_HINT = ('a file in the format of torch < 1.6 (_use_new_zipfile_serialization=False); re-save it with '
                'torch.save(torch.load(f), f) under torch >= 1.6')


def load_torch_file(path, *, return_refused=False):
    """Load a ``torch.save`` file with tensors as NumPy arrays, without torch and without running its code.

    Args:
        path (str | os.PathLike): the ``.pth``/``.pt`` file.
        return_refused (bool): also return the refused global names.

    Returns:
        The object tree (``dict``/``OrderedDict``/``list``/``tuple``, Python
        scalars and strings, ``np.ndarray`` for tensors and parameters) where
        objects of refused classes are :class:`RefusedObject` markers; with
        ``return_refused=True``, ``(tree, sorted refused names)``.

    Raises:
        TorchFormatError: the file is not a readable, supported ``torch.save``
            archive; the message names the file and the problem. Every failure
            (including ``MemoryError``/``RecursionError``) ends here.
    """
    path = os.fspath(path)

    def fail(message):
        return TorchFormatError(f'{path}: {message}')

    try:
        with open(path, 'rb') as f:
            head = f.read(4)
            if head[:1] == b'\x80':
                raise fail(_LEGACY_HINT)
            if head != b'PK\x03\x04':
                raise fail('not a PyTorch file (not a zip archive)')
            with StoredZip(path, TorchFormatError, fileobj=f) as archive:
                return _load_archive(archive, fail, return_refused)
    except TorchFormatError:
        raise
    except OSError as err:
        raise fail(f'cannot read file: {err.strerror or err}') from None
    except MemoryError:
        raise fail('out of memory while reading') from None
    except RecursionError:
        raise fail('objects nested too deeply') from None


def _load_archive(archive, fail, return_refused):
    names = archive.names()
    pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
        raise fail('not a torch.save archive (expected one <name>/data.pkl, found '
                   f'{len(pickles)})')
    prefix = pickles[0][:-len('data.pkl')]
    if prefix + 'constants.pkl' in archive.members:
        raise fail('a TorchScript archive (torch.jit.save); only torch.save files can be read')
    if prefix + 'byteorder' in archive.members:
        order = bytes(archive.read(prefix + 'byteorder', limit=16))
        if order != b'little':
            raise fail(f'byte order {order[:16]!r} is not supported (only little-endian files)')
    data_prefix = prefix + 'data/'
    builder = TensorBuilder(fail, member_size=lambda key: archive.size(data_prefix + key),
                            read_member=lambda key: archive.read(data_prefix + key))
    data = archive.read(pickles[0])
    globals_ = allowed_globals()
    scan_pickle(data, fail, pickles[0], globals_)
    for key in list(archive.members):  # every storage's size against the file, before any is read
        if key.startswith(data_prefix):
            archive.check(key)
    unpickler = RestrictedUnpickler(data, builder)
    try:
        tree = unpickler.load()
    except (TorchFormatError, MemoryError, RecursionError):
        raise
    except Exception as err:  # noqa: BLE001 - anything a malformed pickle provokes
        raise fail(f'{pickles[0]}: invalid pickle data ({type(err).__name__}: {str(err)[:200]})') from None
    finally:
        builder.storages.clear()
    if return_refused:
        return tree, sorted(unpickler.refused)
    return tree
