"""Python configs with ``_base_`` inheritance; see :class:`Config`."""
from .config import Config, ConfigDict, ConfigError, ConfigKeyError, parse_cfg_options

__all__ = ['Config', 'ConfigDict', 'ConfigError', 'ConfigKeyError', 'parse_cfg_options']
