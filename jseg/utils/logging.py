"""One logger for jseg: console (main process only) plus an optional text file."""
import logging
import sys

from .dist import is_main_process

__all__ = ['get_logger', 'print_log']

_LOGGER_NAME = 'jseg'


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each record (redirection-friendly)."""

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def get_logger(log_file=None, level=logging.INFO):
    """The ``jseg`` logger; adds a file handler for ``log_file`` once.

    Only the main MPI process logs to the console and to files; other ranks
    keep errors only, so a multi-process run prints each message once.
    """
    logger = logging.getLogger(_LOGGER_NAME)
    if not getattr(logger, '_jseg_configured', False):
        logger.propagate = False
        handler = _StdoutHandler(sys.stdout)
        handler.setFormatter(logging.Formatter('%(asctime)s - %(levelname)s - %(message)s',
                                               '%Y/%m/%d %H:%M:%S'))
        logger.addHandler(handler)
        logger._jseg_configured = True
    logger.setLevel(level if is_main_process() else logging.ERROR)
    if log_file and is_main_process():
        known = {getattr(h, 'baseFilename', None) for h in logger.handlers}
        import os.path as osp
        if osp.abspath(log_file) not in known:
            file_handler = logging.FileHandler(log_file, mode='a')
            file_handler.setFormatter(logging.Formatter('%(asctime)s - %(levelname)s - %(message)s'))
            logger.addHandler(file_handler)
    return logger


def print_log(msg, logger=None, level='info'):
    """Log ``msg`` through ``logger`` (default: the jseg logger) at ``level``."""
    logger = logger or get_logger()
    getattr(logger, level)(msg)
