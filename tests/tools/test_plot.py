"""jseg.utils.plot: tick choice and labels, colour maps, and the drawn panels."""
import numpy as np
import pytest
from PIL import Image

from jseg.utils.plot import (COLORS, Series, apply_colormap, colorbar, compose, format_tick, heatmap_panel,
                             line_panel, nice_ticks, save_png)


@pytest.mark.parametrize('lo,hi,expected_step', [(0, 1, 0.2), (0.3, 2.1, 0.5), (0, 160000, 50000),
                                                  (0, 6e-5, 2e-5), (-1, 1, 0.5), (17, 17, None)])
def test_nice_ticks_cover_the_range_with_round_steps(lo, hi, expected_step):
    ticks, step = nice_ticks(lo, hi, max_ticks=6)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 8
    np.testing.assert_allclose(np.diff(ticks), step)
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    if expected_step is not None:
        assert step == pytest.approx(expected_step)


def test_format_tick():
    assert format_tick(40000, 20000) == '40k'
    assert format_tick(0.0001, 0.00002) == '1e-4'
    assert format_tick(6e-5, 1e-5) == '6e-5'
    assert format_tick(0.25, 0.25) == '0.25'
    assert format_tick(1.5, 0.5) == '1.5'
    assert format_tick(0, 0.5) == '0'
    assert format_tick(30, 10) == '30'


def test_apply_colormap_ends_and_nan():
    out = apply_colormap(np.array([-1.0, 0.0, 1.0, np.nan, 5.0]), 'coolwarm', -1, 1)
    assert out.dtype == np.uint8 and out.shape == (5, 3)
    assert out[0, 2] > out[0, 0] and out[2, 0] > out[2, 2]      # blue low end, red high end
    np.testing.assert_array_equal(out[4], out[2])              # clipped to the range
    np.testing.assert_array_equal(out[3], [200, 200, 200])     # NaN grey
    with pytest.raises(ValueError, match='unknown colormap'):
        apply_colormap([0.5], 'jet')


def _color_pixels(image, color):
    arr = np.asarray(image)
    return np.argwhere((arr == np.array(color, np.uint8)).all(axis=2))


def test_line_panel_draws_curves_in_the_right_direction(tmp_path):
    x = np.arange(0, 101)
    image = line_panel([Series(x, 10 - 0.08 * x, 'falling'), Series(x, 1 + 0.05 * x, 'rising')],
                       title='t', xlabel='iteration', ylabel='value', size=(500, 300))
    assert image.size == (500, 300) and image.mode == 'RGB'

    def slope(color):
        pixels = _color_pixels(image, color)                   # (row, col)
        assert len(pixels) > 300
        return np.polyfit(pixels[:, 1], pixels[:, 0], 1)[0]      # rows per column

    assert slope(COLORS[0]) > 0.2    # falling values: lower on the image to the right
    assert slope(COLORS[1]) < -0.1   # rising values
    path = save_png(image, str(tmp_path / 'sub' / 'p.png'))
    assert Image.open(path).size == (500, 300)


def test_line_panel_handles_single_points_and_gaps():
    image = line_panel([Series([5], [0.3], 'one'), Series([0, 1, 2, 3], [1, None, 2, float('nan')], 'gaps')])
    assert image.size == (720, 320)
    assert len(_color_pixels(image, COLORS[0])) > 10          # a marker and the legend swatch
    with pytest.raises(ValueError, match='x values'):
        Series([1, 2], [1])


def test_heatmap_colorbar_and_compose_sizes():
    matrix = np.array([[1.0, -0.5], [-0.5, 1.0]])
    heat = heatmap_panel(matrix, title='sky', vmin=-1, vmax=1, cmap='coolwarm', cell=30)
    left, top, w, h = heat.info['grid_box']
    assert (w, h) == (60, 60)
    arr = np.asarray(heat)
    red, blue = arr[top + 2, left + 2], arr[top + 2, left + 32]     # corners of cells (0, 0) and (0, 1)
    np.testing.assert_array_equal(red, apply_colormap(1.0, 'coolwarm', -1, 1))
    np.testing.assert_array_equal(blue, apply_colormap(-0.5, 'coolwarm', -1, 1))
    bar = colorbar(-1, 1, 'coolwarm', height=heat.height, label='cosine', margin_top=top, bar_height=h)
    assert bar.height == heat.height
    grid = compose([heat, bar], pad=10, title='title')
    assert grid.width == heat.width + bar.width + 30 and grid.height > heat.height
    with pytest.raises(ValueError):
        heatmap_panel(np.zeros((0, 3)))
