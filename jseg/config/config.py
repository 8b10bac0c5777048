"""Python config files with ``_base_`` inheritance, strict keys and CLI overrides.

A config is a Python file whose top-level variables form a dict::

    _base_ = ['../_base_/datasets/ade20k.py', '../_base_/default_runtime.py']
    model = dict(decode_head=dict(num_classes=150))

* ``_base_`` (a path or a list of paths, relative to the file) is loaded first;
  the file's own variables are then merged into it recursively.
* A dict with ``_delete_=True`` replaces the inherited dict instead of merging.
* :meth:`Config.merge_from_dict` applies ``a.b=1``-style overrides (the
  ``--cfg-options`` of the command-line tools); values are Python literals.
* Reading a missing key raises an error naming the closest existing key.
"""
import ast
import copy
import difflib
import os.path as osp
import pprint
import types

from jseg.utils.fileio import atomic_write_text

__all__ = ['Config', 'ConfigDict', 'ConfigError', 'ConfigKeyError', 'parse_cfg_options']

BASE_KEY = '_base_'
DELETE_KEY = '_delete_'


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where."""


class ConfigKeyError(KeyError, AttributeError):
    """A key the config does not have (raised by item and by attribute access)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def _near_hint(key, keys):
    close = difflib.get_close_matches(str(key), [str(k) for k in keys], n=1, cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


class ConfigDict(dict):
    """A dict with attribute access whose missing keys are errors with a hint.

    ``cfg.model.backbone`` reads like ``cfg['model']['backbone']``; ``cfg.get(k, d)``
    is the way to read an optional key.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key, value):
        super().__setitem__(key, _wrap(value))

    def __missing__(self, key):
        raise ConfigKeyError(f'config has no key {key!r}{_near_hint(key, self.keys())}')

    def __getattr__(self, key):
        if key.startswith('__'):
            raise AttributeError(key)
        return self[key]

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        del self[key]

    def __deepcopy__(self, memo):
        out = self.__class__.__new__(self.__class__)
        memo[id(self)] = out
        for key, value in self.items():
            dict.__setitem__(out, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        return out

    def __reduce__(self):
        return (ConfigDict, (self.to_dict(),))

    def to_dict(self):
        """A plain ``dict``/``list``/``tuple`` copy (no ConfigDict inside)."""
        return _unwrap(self)


def _wrap(value):
    if isinstance(value, ConfigDict):
        return value
    if isinstance(value, dict):
        return ConfigDict(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    return value


def _unwrap(value):
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return value


def merge_dicts(base, child):
    """Merge ``child`` into a copy of ``base`` recursively (mmseg semantics).

    Dicts merge key by key; any other value (lists included) replaces the
    base value; a child dict with ``_delete_=True`` replaces the base dict.
    """
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            if value.pop(DELETE_KEY, False) or not isinstance(out.get(key), dict):
                out[key] = _strip_delete(value)
            else:
                out[key] = merge_dicts(out[key], value)
        else:
            out[key] = _strip_delete(value)
    return out


def _strip_delete(value):
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, (list, tuple)):
        return type(value)(_strip_delete(v) for v in value)
    return value


def _exec_file(path):
    """Run a config file and return its public top-level variables."""
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except OSError as err:
        raise ConfigError(f'cannot read config file {path}: {err.strerror}') from None
    try:
        code = compile(source, path, 'exec')
    except SyntaxError as err:
        raise ConfigError(f'syntax error in config {path}, line {err.lineno}: {err.msg}') from None
    namespace = {'__file__': path}
    try:
        exec(code, namespace)
    except Exception as err:  # a config file is user code: report where it failed
        raise ConfigError(f'error while running config {path}: {type(err).__name__}: {err}') from None
    return {
        k: v for k, v in namespace.items()
        if not k.startswith('__') and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }


def _names_read(path):
    """Names a config file reads (``crop_size`` in ``dict(crop_size=crop_size)``): its helper variables."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _load_merged(path, chain=(), names_read=None):
    """The merged variables of ``path`` and its bases; adds the names they read to ``names_read``."""
    path = osp.abspath(path)
    if path in chain:
        raise ConfigError(f'config inheritance loops: {" -> ".join(chain + (path,))}')
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    variables = _exec_file(path)
    if names_read is not None:
        names_read.update(_names_read(path))
    bases = variables.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged = {}
    for base in bases:
        base_path = osp.join(osp.dirname(path), base)
        if not osp.isfile(base_path):
            raise ConfigError(f'{path}: _base_ file {base!r} not found (looked at {osp.normpath(base_path)})')
        base_cfg = _load_merged(base_path, chain + (path,), names_read)
        merged = merge_dicts(merged, base_cfg)
    return merge_dicts(merged, variables)


def parse_cfg_options(items):
    """Turn ``['a.b=1', "c='x'"]`` into ``{'a.b': 1, 'c': 'x'}``.

    Values are read as Python literals; text that is no literal stays a string
    (``mode=whole`` gives ``'whole'``).
    """
    options = {}
    for item in items or []:
        key, sep, text = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'--cfg-options expects key=value, got {item!r}')
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if text.strip().startswith(('[', '{', '(')):  # meant as a container: do not pass it on as a string
                raise ConfigError(f'--cfg-options {key.strip()}: {text!r} is not a Python literal '
                                  "(write a dict as {'type': 'X'}, not dict(type='X'))") from None
            value = text
        options[key.strip()] = value
    return options


class Config(ConfigDict):
    """The resolved configuration of one experiment.

    Build it with :meth:`fromfile`; it is a :class:`ConfigDict` (attribute and
    key access, strict) that also knows its ``filename`` and ``names_read``, the
    names its files read (their helper variables, such as ``crop_size``).
    """

    @classmethod
    def fromfile(cls, path, cfg_options=None):
        """Load ``path`` with its bases, then apply ``cfg_options``.

        Args:
            path (str): the config file.
            cfg_options (dict | list[str] | None): overrides, either
                ``{'a.b': 1}`` or the command-line form ``['a.b=1']``.
        """
        names_read = set()
        cfg = cls(_load_merged(path, names_read=names_read))
        object.__setattr__(cfg, 'filename', osp.abspath(path))
        object.__setattr__(cfg, 'names_read', frozenset(names_read))
        if cfg_options:
            if isinstance(cfg_options, (list, tuple)):
                cfg_options = parse_cfg_options(cfg_options)
            cfg.merge_from_dict(cfg_options)
        return cfg

    @property
    def name(self):
        """The config's file name without extension (names the default work dir)."""
        return osp.splitext(osp.basename(getattr(self, 'filename', 'config.py')))[0]

    def merge_from_dict(self, options):
        """Apply dotted overrides ``{'model.decode_head.num_classes': 19}``.

        Each dotted path must exist, except its last part when the path starts
        with ``+`` (``+train_dataloader.skip_bad_samples=True`` adds a key).
        Integer parts index lists (``param_scheduler.1.power=0.9``).
        """
        for dotted, value in options.items():
            create = dotted.startswith('+')
            parts = dotted.lstrip('+').split('.')
            node = self
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                where = '.'.join(parts[:depth + 1])
                if isinstance(node, (list, tuple)):
                    if not part.lstrip('-').isdigit() or not -len(node) <= int(part) < len(node):
                        raise ConfigError(f'--cfg-options {dotted}: {where!r} is not a valid index '
                                          f'of a list of {len(node)}')
                    if last:
                        if isinstance(node, tuple):
                            raise ConfigError(f'--cfg-options {dotted}: cannot assign into a tuple')
                        node[int(part)] = _wrap(value)
                    else:
                        node = node[int(part)]
                    continue
                if not isinstance(node, dict):
                    raise ConfigError(f'--cfg-options {dotted}: {".".join(parts[:depth])!r} '
                                      f'is a {type(node).__name__}, not a dict')
                if part not in node and not (last and create):
                    raise ConfigError(f'--cfg-options {dotted}: config has no key {where!r}'
                                      f'{_near_hint(part, node.keys())} (prefix the option with + '
                                      f'to add a new key)')
                if last:
                    node[part] = value
                else:
                    node = node[part]

    @property
    def pretty_text(self):
        """The config as Python source, formatted with yapf."""
        lines = [f'{key} = {_format_value(value)}' for key, value in self.items()]
        text = '\n'.join(lines) + '\n'
        try:
            from yapf.yapflib.yapf_api import FormatCode
            text, _ = FormatCode(text, style_config=dict(
                based_on_style='pep8', column_limit=100, blank_line_before_nested_class_or_def=True,
                split_before_expression_after_opening_paren=True))
        except ImportError:  # yapf is a listed dependency; keep dumping without it
            pass
        return text

    def dump(self, path):
        """Write :attr:`pretty_text` to ``path`` atomically."""
        atomic_write_text(path, self.pretty_text)

    def __repr__(self):
        return f'Config({getattr(self, "filename", None)!r}):\n{pprint.pformat(self.to_dict())}'


def _format_value(value):
    """Python source for a config value: dicts as ``dict(k=v)`` where keys allow it."""
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            return 'dict(' + ', '.join(f'{k}={_format_value(v)}' for k, v in value.items()) + ')'
        return '{' + ', '.join(f'{k!r}: {_format_value(v)}' for k, v in value.items()) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_format_value(v) for v in value) + ']'
    if isinstance(value, tuple):
        inner = ', '.join(_format_value(v) for v in value)
        return f'({inner},)' if len(value) == 1 else f'({inner})'
    return repr(value)
