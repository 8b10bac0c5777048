"""Checkpoints: jseg's own code-free format, official PyTorch ``.pth`` files, key reports.

jseg checkpoints are NumPy ``.npz`` archives read with ``allow_pickle=False``:
arrays under ``model/<param>``, ``optimizer/<slot>/<param>`` and ``extra/<name>``,
plus ``__meta__``, a UTF-8 JSON document (iteration, scheduler state, RNG
state, config text, ...). Neither part can carry code, unlike Jittor's pickle
based ``jt.save``. They are written atomically (temporary file, then rename).

PyTorch files (zip or legacy format) are read by :mod:`jseg.utils.torch_pickle`
without PyTorch and without executing anything from the file.
"""
import json
import os.path as osp
import zipfile

import jittor as jt
import numpy as np

from jseg.utils.fileio import atomic_open
from jseg.utils.logging import print_log

__all__ = ['CheckpointError', 'LoadReport', 'checkpoint_state_dict', 'load_checkpoint', 'load_state_dict', 'read_checkpoint',
           'save_checkpoint']

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


def _is_native(zf):
    return f'{_META}.npy' in zf.namelist()


def read_checkpoint(filename):
    """Read any supported checkpoint into ``(arrays, meta)``.

    Returns:
        tuple[dict, dict]: for a jseg checkpoint, ``arrays`` maps every stored
        name (``model/...``, ``optimizer/...``) to a NumPy array and ``meta`` is
        the JSON metadata. For a PyTorch file, ``arrays`` is the unpickled
        object tree (tensors as NumPy arrays, objects of refused classes as
        markers) and ``meta`` is ``{'format': 'pytorch', 'refused_globals': [names]}``.
    """
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint not found: {filename}')
    try:
        if zipfile.is_zipfile(filename):
            with zipfile.ZipFile(filename) as zf:
                native = _is_native(zf)
            if native:
                return _read_native(filename)
        from jseg.utils.torch_pickle import TorchPickleError, load_torch_file
        try:
            tree, refused = load_torch_file(filename, return_refused=True)
        except TorchPickleError as err:
            raise CheckpointError(f'cannot read checkpoint {filename}: {err}') from None
        return tree, {'format': 'pytorch', 'refused_globals': refused}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f'cannot read checkpoint {filename}: {type(err).__name__}: {err}') from None


def _read_native(filename):
    with np.load(filename, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != _META}
        meta = json.loads(bytes(data[_META]).decode('utf-8'))
    if meta.get('format') != FORMAT:
        raise CheckpointError(f'{filename}: not a jseg checkpoint (format {meta.get("format")!r})')
    if meta.get('format_version', 0) > FORMAT_VERSION:
        raise CheckpointError(f'{filename}: written by a newer jseg (format version '
                              f'{meta["format_version"]} > {FORMAT_VERSION})')
    return arrays, meta


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
    arrays, meta = read_checkpoint(filename)
    if meta.get('format') == FORMAT:
        prefix = 'model/'
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, meta
    from jseg.utils.torch_pickle import is_refused
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


def load_state_dict(model, state_dict, strict=False, logger=None, source='state dict'):
    """Copy ``state_dict`` (name -> array) into ``model``'s parameters and buffers.

    PyTorch's ``num_batches_tracked`` counters have no Jittor counterpart and
    are ignored. Every other difference is reported by name: missing keys,
    unexpected keys and shape mismatches (mismatched tensors are not loaded).
    With ``strict=True`` any difference raises :class:`CheckpointError`.
    Modules that cache values derived from their weights are told to drop the
    cache (``invalidate_cache()``).
    """
    own = model.state_dict()
    state = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
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


def load_checkpoint(model, filename, strict=False, prefix=None, revise_keys=(), logger=None):
    """Load the weights of a jseg or PyTorch checkpoint into ``model``.

    Args:
        model (jt.nn.Module): the model (or a part of it, e.g. a backbone).
        filename (str): ``.npz`` (jseg) or ``.pth``/``.pt`` (PyTorch) file.
        strict (bool): raise on any missing/unexpected/mismatched key.
        prefix (str | None): load only keys starting with ``prefix + '.'``,
            with the prefix removed (``'backbone'`` takes a backbone out of a
            whole-segmentor checkpoint).
        revise_keys (list[tuple[str, str]]): regex substitutions applied to keys.

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
    report = load_state_dict(model, state, strict=strict, logger=logger, source=filename)
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


def _to_numpy(value):
    if isinstance(value, jt.Var):
        return value.numpy()
    return np.asarray(value)
