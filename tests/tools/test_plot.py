"""jseg.utils.plot (matplotlib figures written atomically) and the ideal-representation heatmaps (Fig. 3)."""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from tool_helpers import CONFIG, load_tool

from jseg.utils.plot import INSTALL_HINT, MissingDependencyError, new_figure, require_matplotlib, save_figure

pytest.importorskip('matplotlib', reason='the drawing tools need matplotlib (pip install -e .[tools])')

MATPLOTLIB_MODULES = ('matplotlib', 'matplotlib.figure', 'matplotlib.backends', 'matplotlib.backends.backend_agg')


def test_new_figure_is_an_agg_figure_of_the_requested_pixels(tmp_path):
    figure = new_figure(420, 260, dpi=100)
    assert type(figure.canvas).__name__ == 'FigureCanvasAgg'
    ax = figure.subplots()
    ax.plot([0, 1, 2], [2, 0, 1], color='red', linewidth=4)
    path = save_figure(figure, str(tmp_path / 'sub' / 'f.png'))      # the folder is created
    assert path == str(tmp_path / 'sub' / 'f.png')
    image = Image.open(path)
    assert image.format == 'PNG' and image.size == (420, 260)
    rgb = np.asarray(image.convert('RGB')).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 200                                          # the line is drawn
    assert os.listdir(tmp_path / 'sub') == ['f.png']                # no temporary file left behind


def test_save_figure_keeps_the_old_file_when_drawing_fails(tmp_path):
    path = tmp_path / 'f.png'
    path.write_bytes(b'old')
    figure = new_figure(100, 100)
    figure.savefig = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError('boom'))
    with pytest.raises(RuntimeError, match='boom'):
        save_figure(figure, str(path))
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['f.png']


def test_missing_matplotlib_is_a_one_line_error_naming_the_install_command(monkeypatch):
    for name in MATPLOTLIB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)   # "import matplotlib..." now raises ImportError
    with pytest.raises(MissingDependencyError) as info:
        require_matplotlib()
    message = str(info.value)
    assert '\n' not in message and message.endswith(INSTALL_HINT) and 'pip install -e .[tools]' in message
    with pytest.raises(MissingDependencyError):
        new_figure(100, 100)


def test_analyze_ideal_repr_stops_before_the_analysis_without_matplotlib(tmp_path, capsys, monkeypatch):
    tool = load_tool('analyze_ideal_repr')
    for name in MATPLOTLIB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    assert tool.main([CONFIG, str(tmp_path / 'model.npz'), '--out-dir', str(tmp_path / 'out')]) == 1
    captured = capsys.readouterr()
    assert captured.err == f'error: drawing needs matplotlib, which is not installed; install it with: {INSTALL_HINT}\n'
    assert not os.path.exists(tmp_path / 'out')


def similarity(n, seed):
    """A symmetric (n, n) matrix with unit diagonal and off-diagonal values in (-1, 1)."""
    rows = np.random.default_rng(seed).normal(size=(n, 4))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows @ rows.T


def test_ideal_repr_figure_has_one_heatmap_per_class_and_a_colour_bar(tmp_path):
    tool = load_tool('analyze_ideal_repr')
    panels = [('sky', [0, 3, 7], similarity(3, 0)), ('tree', [1, 2], similarity(2, 1)),
              ('road', list(range(10, 22)), similarity(12, 2)), ('wall', [5, 6, 8, 9], similarity(4, 3))]
    figure = tool.draw_figure(panels, 'demo')
    *heatmaps, bar = [ax for ax in figure.get_axes() if ax.get_visible() and ax.axison]
    assert len(heatmaps) == 4 and len(figure.get_axes()) == 2 * 3 + 1   # 2 rows of 3, one switched off
    for ax, (name, ids, matrix) in zip(heatmaps, panels):
        assert ax.get_title() == f'{name} ({len(ids)} images)'
        (image,) = ax.get_images()
        np.testing.assert_allclose(image.get_array(), matrix)
        assert image.get_clim() == (-1.0, 1.0) and image.get_cmap().name == 'coolwarm'
        step = 1 if len(ids) <= 10 else 2
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in ids][::step]
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in ids][::step]
    assert bar.get_ylabel() == 'cosine similarity' and bar.get_ylim() == (-1.0, 1.0)
    assert figure._suptitle.get_text() == 'demo'

    path = save_figure(figure, str(tmp_path / 'ideal.png'))
    image = Image.open(path)
    assert image.format == 'PNG' and image.size == (3 * 300 + 120, 2 * 300 + 70)
    rgb = np.asarray(image.convert('RGB')).astype(int)
    reddish = (rgb[..., 0] > 150) & (rgb[..., 2] < 100)                 # the unit diagonals and the bar's top
    bluish = (rgb[..., 2] > 150) & (rgb[..., 0] < 100)
    assert reddish.sum() > 1000 and bluish.sum() > 100


def test_ideal_repr_figure_single_class():
    tool = load_tool('analyze_ideal_repr')
    figure = tool.draw_figure([('sky', [4], np.ones((1, 1)))], 'one')
    assert len(figure.get_axes()) == 2 and figure.get_axes()[0].get_title() == 'sky (1 images)'
