"""Read PyTorch checkpoint files (``torch.save`` output) safely, without PyTorch.

:func:`load_torch_file` returns the object tree of a ``.pth``/``.pt`` file with
every tensor as a C-contiguous NumPy array. It needs only NumPy and the
standard library and never imports or calls anything named by the file.

**Format** (``torch.save`` since PyTorch 1.6): an uncompressed zip archive whose
members live in one top-level folder (any name)::

    <name>/data.pkl          the object tree, pickle protocol 2
    <name>/byteorder         "little" (absent: little)
    <name>/data/<key>        raw bytes of storage <key>
    <name>/version, .format_version, .storage_alignment, .data/serialization_id

``data.pkl`` names storages by persistent ids ``('storage', torch.FloatStorage,
key, location, numel)`` and rebuilds tensors with ``_rebuild_tensor_v2(storage,
offset, size, stride, ...)``; several tensors may view one storage.

**Supported** -- what real checkpoints use: float16/32/64, bfloat16 (returned
as float32), int8/16/32/64, uint8 and bool tensors and parameters; nested
dict/OrderedDict/list/tuple containers; shared storages and views.
**Refused with an error naming the file**: the pre-1.6 format, big-endian
files, TorchScript archives, compressed members, complex, quantised, uint16+
and float8 storages, tensor metadata (conjugate/negative views).

**Bounded work.** Each archive member's declared size is checked against the
bytes the file holds before anything is allocated (:mod:`jseg.utils.stored_zip`);
the pickle is scanned before it is unpickled (:mod:`.pickle_scan`: protocol,
memo, nesting depth, size, opcode count, so at most ``MAX_OPCODES`` objects); tensors total at most a fixed multiple of the
file's storage bytes (:mod:`.tensors`). Globals outside a short allow-list
become inert :class:`RefusedObject` markers (:mod:`.unpickler`).

Modules: ``reader`` (the archive), ``pickle_scan``, ``unpickler``, ``tensors``.
"""
from .errors import TorchFormatError
from .reader import load_torch_file
from .unpickler import RefusedObject, find_refused, is_refused

__all__ = ['RefusedObject', 'TorchFormatError', 'find_refused', 'is_refused', 'load_torch_file']
