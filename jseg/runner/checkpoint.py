"""Checkpoints: jseg's own code-free format, official PyTorch ``.pth`` files, key reports.

jseg checkpoints are NumPy ``.npz`` archives read with ``allow_pickle=False``:
arrays under ``model/<param>``, ``optimizer/<slot>/<param>`` and ``extra/<name>``,
plus ``__meta__``, a UTF-8 JSON document (iteration, scheduler state, RNG
state, config text, ...). Neither part can carry code, unlike Jittor's pickle
based ``jt.save``. They are written atomically (temporary file, then rename).

PyTorch files are read by :mod:`jseg.utils.torch_format` without PyTorch and
without executing anything from the file. Both readers check every member's size
against the file before reading it and read only the members asked for.
"""
import io
import json
import os.path as osp
import warnings

import numpy as np

from jseg.utils.fileio import atomic_open
from jseg.utils.stored_zip import StoredZip
from jseg.utils.logging import print_log

__all__ = ['CheckpointError', 'LoadReport', 'PARTIAL_LOAD_HINT', 'RECOMPUTED_BUFFERS', 'checkpoint_state_dict',
           'load_checkpoint', 'load_state_dict', 'read_checkpoint', 'save_checkpoint']

FORMAT = 'jseg-checkpoint'
FORMAT_VERSION = 1
_META = '__meta__'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names it."""


class LoadReport:
    """What :func:`load_state_dict` did: loaded, missing, unexpected and mismatched keys."""

    def __init__(self, loaded, missing, unexpected, mismatched):
        self.loaded = loaded
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched  # list of (name, checkpoint shape, model shape)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit=20):
        def names(keys):
            shown = ', '.join(keys[:limit])
            return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')
        lines = [f'loaded {len(self.loaded)} tensors']
        if self.missing:
            lines.append(f'missing in checkpoint ({len(self.missing)}): {names(self.missing)}')
        if self.unexpected:
            lines.append(f'unexpected in checkpoint ({len(self.unexpected)}): {names(self.unexpected)}')
        if self.mismatched:
            shown = [f'{k} (checkpoint {tuple(a)} vs model {tuple(b)})' for k, a, b in self.mismatched]
            lines.append(f'shape mismatch ({len(shown)}): {names(shown)}')
        return '; '.join(lines)


# ---------------------------------------------------------------------------------------------
# reading

_MAX_META_BYTES = 64 << 20
_MAX_NPY_HEADER = 1 << 16


def read_checkpoint(filename, prefixes=None):
    """Read any supported checkpoint into ``(arrays, meta)``.

    Args:
        filename (str): a jseg ``.npz`` or PyTorch ``.pth`` file.
        prefixes (tuple[str] | None): for a jseg checkpoint, read only the
            arrays whose names start with one of these (``('model/',)`` reads
            the weights and leaves the optimizer state unread); None: all.

    Returns:
        tuple[dict, dict]: for a jseg checkpoint, ``arrays`` maps every stored
        name (``model/...``, ``optimizer/...``) to a NumPy array and ``meta`` is
        the JSON metadata. For a PyTorch file, ``arrays`` is the unpickled
        object tree (tensors as NumPy arrays, objects of refused classes as
        markers) and ``meta`` is ``{'format': 'pytorch', 'refused_globals': [names]}``.

    Raises:
        CheckpointError: naming the file, for anything that cannot be read
            (members are size-checked against the file before they are read;
            compressed members are refused).
    """
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint not found: {filename}')
    try:
        with open(filename, 'rb') as f:
            zipped = f.read(4) == b'PK\x03\x04'
        if zipped:
            with StoredZip(filename, CheckpointError) as archive:
                if f'{_META}.npy' in archive.members:
                    return _read_native(archive, prefixes)
        from jseg.utils.torch_format import TorchFormatError, load_torch_file
        try:
            tree, refused = load_torch_file(filename, return_refused=True)
        except TorchFormatError as err:
            raise CheckpointError(str(err)) from None  # '<file>: <problem>'
        return tree, {'format': 'pytorch', 'refused_globals': refused}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise CheckpointError(f'cannot read checkpoint {filename}: {type(err).__name__}: {err}') from None
    except (MemoryError, RecursionError) as err:
        raise CheckpointError(f'cannot read checkpoint {filename}: {type(err).__name__}') from None


def _read_native(archive, prefixes):
    meta_bytes = archive.read(f'{_META}.npy', limit=_MAX_META_BYTES)
    meta = json.loads(bytes(_npy_array(archive, f'{_META}.npy', meta_bytes)).decode('utf-8'))
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise CheckpointError(f'{archive.path}: not a jseg checkpoint (format '
                              f'{meta.get("format") if isinstance(meta, dict) else None!r})')
    if meta.get('format_version', 0) > FORMAT_VERSION:
        raise CheckpointError(f'{archive.path}: written by a newer jseg (format version '
                              f'{meta["format_version"]} > {FORMAT_VERSION})')
    arrays = {}
    for member in archive.names():
        name = member[:-4]
        if not member.endswith('.npy') or name == _META or (prefixes is not None and not name.startswith(prefixes)):
            continue
        arrays[name] = _npy_array(archive, member, archive.read(member))
    return arrays, meta


def _npy_array(archive, member, buf):
    """The array in the ``.npy`` bytes ``buf`` (no copy), its header checked against its size."""
    try:
        head = io.BytesIO(bytes(buf[:min(len(buf), _MAX_NPY_HEADER + 12)]))
        version = np.lib.format.read_magic(head)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # numpy warns on headers it parses as Python 2 ones
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
            else:
                raise ValueError(f'unknown .npy version {version}')
    except Exception as err:  # noqa: BLE001 - numpy's header parser raises many kinds on bad text
        raise CheckpointError(f'{archive.path}: {member} is not a valid .npy array ({type(err).__name__}: '
                              f'{str(err)[:200]!r})') from None
    if dtype.hasobject:
        raise CheckpointError(f'{archive.path}: {member} holds Python objects, which are not read')
    count = 1
    for n in shape:
        count *= n
    offset = head.tell()
    if count * dtype.itemsize != len(buf) - offset:
        raise CheckpointError(f'{archive.path}: {member} declares shape {shape} of {dtype} '
                              f'({count * dtype.itemsize} bytes) but holds {len(buf) - offset} bytes')
    return np.frombuffer(buf, dtype, count, offset).reshape(shape, order='F' if fortran else 'C')


def _select_state_dict(tree, filename):
    """The weights inside an unpickled PyTorch checkpoint (``state_dict``/``model``/top level)."""
    if isinstance(tree, dict):
        for key in ('state_dict', 'model', 'module'):
            if key in tree and isinstance(tree[key], dict):
                return tree[key]
        if tree and all(isinstance(v, np.ndarray) for v in tree.values()):
            return tree
    raise CheckpointError(f'{filename}: no state dict found (expected a dict of tensors or a '
                          f'"state_dict"/"model" entry)')


def checkpoint_state_dict(filename):
    """``(state_dict, meta)``: the model weights of any supported checkpoint as NumPy arrays."""
    arrays, meta = read_checkpoint(filename, prefixes=('model/',))
    if meta.get('format') == FORMAT:
        prefix = 'model/'
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, meta
    from jseg.utils.torch_format import is_refused
    state = _select_state_dict(arrays, filename)
    bad = [f'{k} ({v!r})' if is_refused(v) else f'{k} ({type(v).__name__})'
           for k, v in state.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f'{filename}: state dict entries are not tensors: {bad[:5]}')
    if meta.get('refused_globals'):
        print_log(f'{filename}: ignored non-weight objects: {", ".join(meta["refused_globals"])}')
    return dict(state), meta


# ---------------------------------------------------------------------------------------------
# loading into a model


#: Buffers jseg's modules compute at construction from their hyper-parameters alone (attention index
#: tables of EfficientFormerV2, FreqFusion's Hamming windows and initial sampling positions): the values a
#: checkpoint would hold, so an evaluation load does not require them.
RECOMPUTED_BUFFERS = ('attention_bias_idxs', 'attention_bias_idxs_seg', 'hamming_lowpass', 'hamming_highpass',
                      'init_pos')
PARTIAL_LOAD_HINT = 'to evaluate a partial load anyway, pass --cfg-options load_strict=False'


def load_state_dict(model, state_dict, strict=False, require_all=False, logger=None, source='state dict'):
    """Copy ``state_dict`` (name -> array) into ``model``'s parameters and buffers.

    PyTorch's ``num_batches_tracked`` counters have no Jittor counterpart and
    are ignored. Every other difference is reported by name: missing keys,
    unexpected keys and shape mismatches (mismatched tensors are not loaded).
    With ``strict=True`` any difference raises :class:`CheckpointError`; with
    ``require_all=True`` (evaluation) a missing or mismatched model weight
    does, except the :data:`RECOMPUTED_BUFFERS`, while unexpected keys are only
    reported. Modules that cache values derived from their weights are told to
    drop the cache (``invalidate_cache()``).
    """
    import jittor as jt  # here: reading checkpoints needs only NumPy
    own = model.state_dict()
    state = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
    required = [k for k in own if k.rsplit('.', 1)[-1] not in RECOMPUTED_BUFFERS]
    lacking = sorted(k for k in required if k not in state or tuple(_shape(state[k])) != tuple(own[k].shape))
    if require_all and lacking:
        shown = ', '.join(lacking[:20]) + (f', ... ({len(lacking) - 20} more)' if len(lacking) > 20 else '')
        raise CheckpointError(f'{source} lacks {len(lacking)} of the model\'s {len(own)} weights (missing or of '
                              f'another shape): {shown}; {PARTIAL_LOAD_HINT}')
    loaded, mismatched = [], []
    for name, value in state.items():
        if name not in own:
            continue
        target = own[name]
        value = value.numpy() if isinstance(value, jt.Var) else np.asarray(value)
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append((name, tuple(value.shape), tuple(target.shape)))
            continue
        target.assign(jt.array(value.astype(str(target.dtype), copy=False), dtype=str(target.dtype)))
        loaded.append(name)
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    report = LoadReport(loaded, missing, unexpected, mismatched)
    for module in model.modules():
        if hasattr(module, 'invalidate_cache'):
            module.invalidate_cache()
    if strict and not report.ok:
        raise CheckpointError(f'{source} does not match the model: {report.summary()}')
    level = 'info' if report.ok else 'warning'
    print_log(f'load {source}: {report.summary()}', logger=logger, level=level)
    return report


def load_checkpoint(model, filename, strict=False, prefix=None, revise_keys=(), logger=None, require_all=False):
    """Load the weights of a jseg or PyTorch checkpoint into ``model``.

    Args:
        model (jt.nn.Module): the model (or a part of it, e.g. a backbone).
        filename (str): ``.npz`` (jseg) or ``.pth``/``.pt`` (PyTorch) file.
        strict (bool): raise on any missing/unexpected/mismatched key.
        prefix (str | None): load only keys starting with ``prefix + '.'``,
            with the prefix removed (``'backbone'`` takes a backbone out of a
            whole-segmentor checkpoint).
        revise_keys (list[tuple[str, str]]): regex substitutions applied to keys.
        require_all (bool): raise when a model weight is missing (evaluation
            loads; see :func:`load_state_dict`).

    Returns:
        tuple[LoadReport, dict]: the report and the checkpoint's metadata.
    """
    import re
    state, meta = checkpoint_state_dict(filename)
    if prefix:
        head = prefix.rstrip('.') + '.'
        state = {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
        if not state:
            raise CheckpointError(f'{filename}: no key starts with {head!r}')
    for pattern, repl in revise_keys:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    report = load_state_dict(model, state, strict=strict, require_all=require_all, logger=logger, source=filename)
    return report, meta


# ---------------------------------------------------------------------------------------------
# writing


def save_checkpoint(filename, model_state, meta, optimizer_state=None, extra_arrays=None):
    """Write a jseg checkpoint atomically.

    Args:
        filename (str): target ``.npz`` path.
        model_state (dict[str, array]): parameters and buffers.
        meta (dict): JSON-serialisable metadata (iteration, scheduler, RNG...).
        optimizer_state (dict[str, dict[str, array]] | None): per-slot arrays
            keyed by parameter name (``{'exp_avg': {name: array}}``).
        extra_arrays (dict[str, array] | None): other arrays (e.g. RNG keys).
    """
    arrays = {f'model/{k}': _to_numpy(v) for k, v in model_state.items()}
    for slot, values in (optimizer_state or {}).items():
        arrays.update({f'optimizer/{slot}/{k}': _to_numpy(v) for k, v in values.items()})
    arrays.update({f'extra/{k}': _to_numpy(v) for k, v in (extra_arrays or {}).items()})
    header = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
    arrays[_META] = np.frombuffer(json.dumps(header).encode('utf-8'), dtype=np.uint8)
    with atomic_open(filename, 'wb') as f:
        np.savez(f, **arrays)


def _shape(value):
    return value.shape if hasattr(value, 'shape') else np.shape(value)


def _to_numpy(value):
    return value.numpy() if hasattr(value, 'numpy') else np.asarray(value)  # a jt.Var, or array-like
