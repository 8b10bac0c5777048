"""Figures for the tools that draw, with matplotlib: an optional dependency (``pip install -e .[tools]``).

Nothing imports matplotlib at module level: a tool calls :func:`new_figure`
(or :func:`require_matplotlib` before a long computation), which raises
:class:`MissingDependencyError`, one line naming the install command, when
matplotlib is missing. Figures are drawn with the object API on the Agg canvas
(no pyplot, no display, no global figure state) and written atomically by
:func:`save_figure`.
"""
import io

from .fileio import atomic_write_bytes

__all__ = ['INSTALL_HINT', 'MissingDependencyError', 'require_matplotlib', 'new_figure', 'save_figure']

INSTALL_HINT = "pip install -e .[tools]  (or: pip install 'matplotlib>=3.5')"


class MissingDependencyError(ImportError):
    """An optional package a tool needs is not installed."""


def require_matplotlib():
    """Import matplotlib's Figure and Agg canvas classes; a one-line error when matplotlib is missing.

    Returns:
        tuple: (``matplotlib.figure.Figure``, ``matplotlib.backends.backend_agg.FigureCanvasAgg``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(f'drawing needs matplotlib, which is not installed; install it with: '
                                     f'{INSTALL_HINT}') from None
    return Figure, FigureCanvasAgg


def new_figure(width, height, dpi=100):
    """A matplotlib Figure of ``width`` x ``height`` pixels (at ``dpi``) on an Agg canvas."""
    Figure, FigureCanvasAgg = require_matplotlib()
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path):
    """Write ``figure`` as a PNG at its own size and dpi, atomically (folders created); returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=figure.dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path
