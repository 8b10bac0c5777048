"""Small figures drawn with Pillow: line charts and heatmaps with axes, ticks, legends and colour bars.

jseg's tools draw their figures here, so no plotting library is needed::

    from jseg.utils.plot import Series, colorbar, compose, heatmap_panel, line_panel, save_png

    loss = line_panel([Series(iters, losses, 'run A'), Series(iters, losses_b, 'run B')],
                      title='loss', xlabel='iteration', ylabel='loss')
    save_png(compose([loss, lr], columns=1, title='training curves'), 'curves.png')

    heat = heatmap_panel(similarity, title='sky', vmin=-1, vmax=1, cmap='coolwarm')
    bar = colorbar(-1, 1, 'coolwarm', height=heat.height, label='cosine similarity')

Every function returns an RGB ``PIL.Image``. Axis limits are widened to
"nice" tick values (steps of 1, 2, 2.5 or 5 times a power of ten); tick labels
use ``k`` for thousands and ``1e-4``-style numbers for small values. Text uses
Pillow's bundled font (scalable from Pillow 10.1; the fixed bitmap font before).
"""
import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jseg.utils.fileio import atomic_write_bytes

__all__ = ['COLORS', 'Series', 'apply_colormap', 'colorbar', 'compose', 'format_tick', 'get_font',
           'heatmap_panel', 'line_panel', 'nice_ticks', 'save_png']

# matplotlib's "tab10" colours: distinct and readable on white
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BACKGROUND = (255, 255, 255)
AXIS = (40, 40, 40)
GRID = (228, 228, 228)
TEXT = (20, 20, 20)
MISSING = (200, 200, 200)  # NaN cells of a heatmap

_COLORMAPS = {
    # (position, RGB in [0, 1]) control points, interpolated linearly
    'viridis': [(i / 10, c) for i, c in enumerate([
        (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
        (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
        (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144)])],
    # Moreland's diverging blue-grey-red map: signed values such as cosine similarities
    'coolwarm': [(0.0, (0.230, 0.299, 0.754)), (0.25, (0.552, 0.690, 0.996)), (0.5, (0.866, 0.866, 0.866)),
                 (0.75, (0.956, 0.604, 0.486)), (1.0, (0.706, 0.016, 0.150))],
}


class Series:
    """One curve of a line chart: ``x`` and ``y`` (NaN/None values break the line), a legend label."""

    def __init__(self, x, y, label=None, color=None):
        self.x = np.asarray(x, dtype=np.float64).reshape(-1)
        self.y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64).reshape(-1)
        if self.x.shape != self.y.shape:
            raise ValueError(f'Series {label!r}: {self.x.size} x values but {self.y.size} y values')
        self.label = label
        self.color = color


@functools.lru_cache(maxsize=None)
def get_font(size=13):
    """Pillow's bundled font at ``size`` pixels (its fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(text, font):
    """(width of ``text``, height of one line) in pixels."""
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    _, top, _, bottom = draw.textbbox((0, 0), 'Ag', font=font)
    return right - left, bottom - top


def _draw_text(draw, xy, text, font, anchor='la', fill=TEXT):
    """Text placed by an anchor: first letter l/m/r (x), second t/m/b (y) of its bounding box."""
    x, y = xy
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    _, top, _, bottom = draw.textbbox((0, 0), 'Ag', font=font)  # one line height for every text
    w, h = right - left, bottom - top
    x -= {'l': 0, 'm': w / 2, 'r': w}[anchor[0]]
    y -= {'a': 0, 't': 0, 'm': h / 2, 'b': h}[anchor[1]]
    draw.text((round(x - left), round(y - top)), text, font=font, fill=fill)


def _rotated_text(text, font, fill=TEXT):
    """``text`` rotated 90 degrees counter-clockwise (for y-axis labels), on the background colour."""
    w, h = _text_size(text, font)
    img = Image.new('RGB', (w + 2, h + 4), BACKGROUND)
    _draw_text(ImageDraw.Draw(img), (1, 2), text, font, fill=fill)
    return img.rotate(90, expand=True)


def nice_ticks(lo, hi, max_ticks=6):
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten.

    Returns:
        tuple[np.ndarray, float]: the ticks (the first <= lo, the last >= hi)
        and the step between them.
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f'nice_ticks needs finite limits, got {lo}, {hi}')
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:  # one value: a small range around it
        pad = abs(lo) * 0.1 if lo else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(max_ticks - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    count = int(round((last - first) / step)) + 1
    ticks = first + step * np.arange(count)
    ticks[np.abs(ticks) < step * 1e-9] = 0.0
    return ticks, step


def _decimals(step):
    for d in range(12):
        if abs(round(step, d) - step) <= abs(step) * 1e-9:
            return d
    return 12


def format_tick(value, step):
    """A short label for tick ``value`` on an axis with tick spacing ``step``.

    ``40000`` -> ``40k`` (when the step is a multiple of 1000), ``0.0001`` ->
    ``1e-4``, ``0.25`` -> ``0.25``; ``0`` is always ``0``.
    """
    if value == 0:
        return '0'
    if abs(step) >= 1000 and abs(step) % 1000 == 0 and abs(value) < 1e9:
        return f'{value / 1000:g}k'
    if abs(step) < 1e-3 or abs(value) >= 1e6:
        mantissa_decimals = max(0, _decimals(step / 10 ** math.floor(math.log10(abs(value)))))
        text = f'{value:.{min(mantissa_decimals, 3)}e}'
        mantissa, exponent = text.split('e')
        if '.' in mantissa:
            mantissa = mantissa.rstrip('0').rstrip('.')
        return f'{mantissa}e{int(exponent)}'
    return f'{value:.{_decimals(step)}f}'


def apply_colormap(values, cmap='viridis', vmin=0.0, vmax=1.0):
    """Map ``values`` to RGB uint8 (shape + (3,)) with a named colormap; NaN becomes light grey."""
    if cmap not in _COLORMAPS:
        raise ValueError(f'unknown colormap {cmap!r}; known: {sorted(_COLORMAPS)}')
    values = np.asarray(values, dtype=np.float64)
    span = (vmax - vmin) or 1.0
    t = np.clip((values - vmin) / span, 0.0, 1.0)
    points = _COLORMAPS[cmap]
    positions = np.array([p for p, _ in points])
    colors = np.array([c for _, c in points])
    rgb = np.stack([np.interp(np.nan_to_num(t), positions, colors[:, ch]) for ch in range(3)], axis=-1)
    out = np.round(rgb * 255).astype(np.uint8)
    out[np.isnan(values)] = MISSING
    return out


class _Axis:
    """Linear map from data to pixels; limits widened to nice ticks, or (``tight``) the data's own."""

    def __init__(self, lo, hi, start, end, max_ticks, tight=False):
        self.ticks, self.step = nice_ticks(lo, hi, max_ticks)
        self.lo, self.hi = float(self.ticks[0]), float(self.ticks[-1])
        inside = self.ticks[(self.ticks >= lo - 1e-9 * self.step) & (self.ticks <= hi + 1e-9 * self.step)]
        if tight and hi > lo and len(inside) >= 2:
            self.ticks, self.lo, self.hi = inside, float(lo), float(hi)
        self.start, self.end = start, end

    def __call__(self, value):
        return self.start + (np.asarray(value, dtype=np.float64) - self.lo) / (self.hi - self.lo) * \
            (self.end - self.start)

    def labels(self):
        return [format_tick(float(t), self.step) for t in self.ticks]


def _finite_range(values, default=(0.0, 1.0)):
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else default


def _limits(values, wanted):
    lo, hi = _finite_range(values)
    if wanted is not None:
        lo = lo if wanted[0] is None else float(wanted[0])
        hi = hi if wanted[1] is None else float(wanted[1])
    return lo, hi


def line_panel(series, title='', xlabel='', ylabel='', size=(720, 320), xlim=None, ylim=None, font_size=13,
               markers=None, min_left=80):
    """A line chart of ``series`` (list of :class:`Series`) with axes, grid, ticks, labels and a legend.

    Args:
        title, xlabel, ylabel (str): texts above, below and left of the plot.
        size (tuple[int, int]): (width, height) of the returned image.
        xlim, ylim (tuple | None): (low, high) range to cover, None for the
            data's (either end may be None); the y axis is widened to nice ticks.
        markers (bool | None): draw a dot at every point (default: for series of
            at most 40 points).
        min_left (int): smallest left margin, so that the plot areas of panels
            stacked in a column line up.

    The x axis spans the data exactly; the y axis is widened to round ticks.

    The legend (series with a label) goes in the corner that hides the fewest points.
    """
    width, height = size
    font = get_font(font_size)
    title_font = get_font(font_size + 2)
    img = Image.new('RGB', size, BACKGROUND)
    draw = ImageDraw.Draw(img)

    xs = np.concatenate([s.x for s in series]) if series else np.zeros(0)
    ys = np.concatenate([s.y for s in series]) if series else np.zeros(0)
    xlo, xhi = _limits(xs, xlim)
    ylo, yhi = _limits(ys, ylim)

    # vertical layout first: the y tick labels' width sets the left margin
    text_h = _text_size('0123456789k', font)[1]
    top = 10 + (_text_size(title, title_font)[1] + 10 if title else 0)
    bottom = height - (8 + text_h + 8 + (text_h + 8 if xlabel else 0))
    yaxis = _Axis(ylo, yhi, bottom, top, max_ticks=max(3, (bottom - top) // 45))
    ylabels = yaxis.labels()
    left = max(min_left, 10 + (text_h + 10 if ylabel else 0) + max(_text_size(t, font)[0] for t in ylabels) + 8)
    right = width - 24
    inset = 6  # keep end points and their markers off the frame
    xaxis = _Axis(xlo, xhi, left + inset, right - inset, max_ticks=max(3, (right - left) // 90), tight=True)

    # grid, ticks, tick labels
    for tick, label in zip(yaxis.ticks, ylabels):
        py = round(float(yaxis(tick)))
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.line([(left - 5, py), (left, py)], fill=AXIS)
        _draw_text(draw, (left - 8, py), label, font, anchor='rm')
    for tick, label in zip(xaxis.ticks, xaxis.labels()):
        px = round(float(xaxis(tick)))
        draw.line([(px, top), (px, bottom)], fill=GRID)
        draw.line([(px, bottom), (px, bottom + 5)], fill=AXIS)
        _draw_text(draw, (px, bottom + 8), label, font, anchor='mt')
    draw.rectangle([left, top, right, bottom], outline=AXIS)

    # texts
    if title:
        _draw_text(draw, ((left + right) / 2, 10), title, title_font, anchor='mt')
    if xlabel:
        _draw_text(draw, ((left + right) / 2, height - 8), xlabel, font, anchor='mb')
    if ylabel:
        rotated = _rotated_text(ylabel, font)
        img.paste(rotated, (8, round((top + bottom) / 2 - rotated.height / 2)))

    # curves
    points_px = []
    for index, s in enumerate(series):
        color = s.color or COLORS[index % len(COLORS)]
        px, py = xaxis(s.x), yaxis(s.y)
        finite = np.isfinite(px) & np.isfinite(py)
        segments, current = [], []
        for ok, x, y in zip(finite, px, py):
            if ok:
                current.append((float(x), float(y)))
            elif current:
                segments.append(current)
                current = []
        segments.append(current)
        for segment in segments:
            if len(segment) > 1:
                draw.line(segment, fill=color, width=2, joint='curve')
            for (x0, y0), (x1, y1) in zip(segment, segment[1:]):  # sample the line for the legend's placement
                n = int(max(abs(x1 - x0), abs(y1 - y0)) // 4) + 1
                points_px.extend(zip(np.linspace(x0, x1, n, endpoint=False), np.linspace(y0, y1, n, endpoint=False)))
        points_px.extend(zip(px[finite], py[finite]))
        if markers or (markers is None and finite.sum() <= 40):
            for x, y in zip(px[finite], py[finite]):
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)

    _legend(draw, series, font, (left, top, right, bottom), points_px)
    return img


def _legend(draw, series, font, box, points_px):
    entries = [(s.label, s.color or COLORS[i % len(COLORS)]) for i, s in enumerate(series) if s.label]
    if not entries:
        return
    left, top, right, bottom = box
    swatch, pad, gap = 22, 6, 4
    text_h = _text_size('Ag', font)[1]
    row_h = text_h + gap
    w = pad * 3 + swatch + max(_text_size(label, font)[0] for label, _ in entries)
    h = pad * 2 + row_h * len(entries) - gap
    corners = [(right - 8 - w, top + 8), (left + 8, top + 8), (right - 8 - w, bottom - 8 - h),
               (left + 8, bottom - 8 - h)]
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)

    def hidden(corner):
        x0, y0 = corner
        inside = (pts[:, 0] >= x0 - 4) & (pts[:, 0] <= x0 + w + 4) & (pts[:, 1] >= y0 - 4) & \
                 (pts[:, 1] <= y0 + h + 4)
        return int(inside.sum())

    x0, y0 = min(corners, key=hidden)  # ties: the earlier corner (upper right first)
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=BACKGROUND, outline=(160, 160, 160))
    for row, (label, color) in enumerate(entries):
        cy = y0 + pad + row * row_h + text_h / 2
        draw.line([(x0 + pad, cy), (x0 + pad + swatch, cy)], fill=color, width=3)
        _draw_text(draw, (x0 + pad * 2 + swatch, cy), label, font, anchor='lm')


def heatmap_panel(matrix, title='', row_labels=None, col_labels=None, vmin=None, vmax=None, cmap='viridis',
                  cell=None, annotate=None, xlabel='', ylabel='', font_size=13, area=280):
    """A heatmap of a 2-D ``matrix`` with a title and row/column tick labels.

    Args:
        row_labels, col_labels (list[str] | None): tick labels (default 1..n);
            with many rows only every k-th is written.
        vmin, vmax (float | None): colour range (default: the data's).
        cmap (str): 'viridis' or 'coolwarm'.
        cell (int | None): pixels per cell (default: about ``area`` pixels for
            the whole matrix, 8 to 48 per cell).
        annotate (bool | None): write each value in its cell (default: when
            cells are large enough).

    The image's ``info['grid_box']`` is (left, top, width, height) of the cells.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f'heatmap_panel needs a non-empty 2-D matrix, got shape {matrix.shape}')
    rows, cols = matrix.shape
    lo, hi = _finite_range(matrix)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    cell = cell or int(np.clip(area // max(rows, cols), 8, 48))
    font = get_font(font_size)
    small = get_font(max(8, min(font_size - 2, cell // 3)))
    title_font = get_font(font_size + 2)
    row_labels = [str(i + 1) for i in range(rows)] if row_labels is None else [str(v) for v in row_labels]
    col_labels = [str(i + 1) for i in range(cols)] if col_labels is None else [str(v) for v in col_labels]
    text_h = _text_size('0123456789', font)[1]
    every_r = max(1, math.ceil((text_h + 2) / cell))
    every_c = max(1, math.ceil((max(_text_size(t, font)[0] for t in col_labels) + 4) / cell))

    label_w = max(_text_size(t, font)[0] for t in row_labels)
    left = 8 + (text_h + 8 if ylabel else 0) + label_w + 6
    top = 8 + (_text_size(title, title_font)[1] + 8 if title else 0)
    grid_w, grid_h = cols * cell, rows * cell
    title_w = _text_size(title, title_font)[0] if title else 0
    width = max(left + grid_w + 8, title_w + 16)
    height = top + grid_h + 6 + text_h + 8 + (text_h + 8 if xlabel else 0)
    img = Image.new('RGB', (width, height), BACKGROUND)
    colors = apply_colormap(matrix, cmap, vmin, vmax)
    img.paste(Image.fromarray(colors).resize((grid_w, grid_h), Image.NEAREST), (left, top))
    draw = ImageDraw.Draw(img)
    draw.rectangle([left - 1, top - 1, left + grid_w, top + grid_h], outline=AXIS)
    if title:
        _draw_text(draw, (left + grid_w / 2 if title_w < grid_w + 2 * left else width / 2, 8), title,
                   title_font, anchor='mt')
    for r, label in enumerate(row_labels):
        if r % every_r == 0:
            _draw_text(draw, (left - 6, top + (r + 0.5) * cell), label, font, anchor='rm')
    for c, label in enumerate(col_labels):
        if c % every_c == 0:
            _draw_text(draw, (left + (c + 0.5) * cell, top + grid_h + 6), label, font, anchor='mt')
    if xlabel:
        _draw_text(draw, (left + grid_w / 2, height - 8), xlabel, font, anchor='mb')
    if ylabel:
        rotated = _rotated_text(ylabel, font)
        img.paste(rotated, (8, round(top + grid_h / 2 - rotated.height / 2)))
    img.info['grid_box'] = (left, top, grid_w, grid_h)  # where the cells are, to align a colour bar
    if annotate is None:
        annotate = _text_size('-0.00', small)[0] + 4 <= cell
    if annotate:
        for (r, c), value in np.ndenumerate(matrix):
            if not np.isfinite(value):
                continue
            luminance = colors[r, c] @ np.array([0.299, 0.587, 0.114])
            text = f'{value:.2f}'
            text = '0.00' if text == '-0.00' else text
            _draw_text(draw, (left + (c + 0.5) * cell, top + (r + 0.5) * cell), text, small,
                       anchor='mm', fill=(255, 255, 255) if luminance < 128 else (0, 0, 0))
    return img


def colorbar(vmin, vmax, cmap='viridis', height=240, label='', font_size=13, bar_width=16, margin_top=None,
             bar_height=None):
    """A vertical colour bar from ``vmin`` (bottom) to ``vmax`` (top) with ticks and a rotated label.

    ``height`` is the image height; the bar spans ``bar_height`` pixels from
    ``margin_top`` (default: the whole height less small margins), so it can be
    aligned with the cells of a heatmap beside it.
    """
    font = get_font(font_size)
    text_h = _text_size('0', font)[1]
    top = margin_top if margin_top is not None else text_h
    bar_h = bar_height if bar_height is not None else height - top - text_h
    ticks, step = nice_ticks(vmin, vmax, max_ticks=max(3, bar_h // 40))
    ticks = ticks[(ticks >= min(vmin, vmax) - 1e-12) & (ticks <= max(vmin, vmax) + 1e-12)]
    labels = [format_tick(float(t), step) for t in ticks]
    label_w = max([_text_size(t, font)[0] for t in labels] + [0])
    width = 8 + bar_width + 6 + label_w + (8 + text_h + 4 if label else 4)
    img = Image.new('RGB', (width, height), BACKGROUND)
    ramp = np.linspace(vmax, vmin, max(bar_h, 2))[:, None].repeat(bar_width, axis=1)
    img.paste(Image.fromarray(apply_colormap(ramp, cmap, vmin, vmax)), (8, top))
    draw = ImageDraw.Draw(img)
    draw.rectangle([8 - 1, top - 1, 8 + bar_width, top + bar_h], outline=AXIS)
    span = (vmax - vmin) or 1.0
    for tick, text in zip(ticks, labels):
        py = top + (vmax - tick) / span * (bar_h - 1)
        draw.line([(8 + bar_width, py), (8 + bar_width + 4, py)], fill=AXIS)
        _draw_text(draw, (8 + bar_width + 6, py), text, font, anchor='lm')
    if label:
        rotated = _rotated_text(label, font)
        img.paste(rotated, (width - rotated.width - 4, round(top + bar_h / 2 - rotated.height / 2)))
    return img


def compose(images, columns=None, title='', pad=12, font_size=16, align='top'):
    """Arrange images in a grid (``columns`` per row; default all in one row) under an optional title."""
    if not images:
        raise ValueError('compose needs at least one image')
    columns = columns or len(images)
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    col_w = [max(row[c].width for row in rows if c < len(row)) for c in range(columns)]
    row_h = [max(im.height for im in row) for row in rows]
    font = get_font(font_size)
    title_h = _text_size(title, font)[1] + pad if title else 0
    width = sum(col_w) + pad * (columns + 1)
    width = max(width, _text_size(title, font)[0] + 2 * pad if title else 0)
    height = title_h + sum(row_h) + pad * (len(rows) + 1)
    canvas = Image.new('RGB', (width, height), BACKGROUND)
    if title:
        _draw_text(ImageDraw.Draw(canvas), (width / 2, pad), title, font, anchor='mt')
    y = title_h + pad
    for row, h in zip(rows, row_h):
        x = pad
        for c, im in enumerate(row):
            dy = (h - im.height) // 2 if align == 'center' else 0
            canvas.paste(im.convert('RGB'), (x, y + dy))
            x += col_w[c] + pad
        y += h + pad
    return canvas


def save_png(image, path):
    """Write ``image`` as PNG to ``path`` atomically (creating its folder)."""
    buffer = io.BytesIO()
    image.save(buffer, format='PNG', optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
