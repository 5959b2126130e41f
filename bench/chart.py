"""Line charts drawn with Pillow (already installed), one panel per measure, one line per series."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
PANEL_WIDTH, PANEL_HEIGHT = 560, 380
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 40, 50
LEGEND_HEIGHT = 30


@dataclass
class Panel:
    """One panel: a title, the y-axis label, and per series the y value at each x (None where not measured)."""

    title: str
    y_label: str
    series: dict[str, list[float | None]]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], panel: Panel, x_labels: list[str]) -> None:
    font = ImageFont.load_default(13)
    title_font = ImageFont.load_default(15)
    left, top = origin[0] + MARGIN_LEFT, origin[1] + MARGIN_TOP
    right, bottom = origin[0] + PANEL_WIDTH - MARGIN_RIGHT, origin[1] + PANEL_HEIGHT - MARGIN_BOTTOM
    draw.text(((left + right) / 2, origin[1] + 12), panel.title, fill="black", font=title_font, anchor="mt")
    values = [v for series in panel.series.values() for v in series if v is not None]
    top_value = nice_ceiling(max(values, default=1.0) * 1.05)
    for tick in range(6):
        value = top_value * tick / 5
        y = bottom - (bottom - top) * tick / 5
        draw.line([(left, y), (right, y)], fill="#e5e5e5")
        draw.text((left - 6, y), f"{value:g}", fill="black", font=font, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    step = (right - left) / max(len(x_labels) - 1, 1)
    xs = [left + step * i if len(x_labels) > 1 else (left + right) / 2 for i in range(len(x_labels))]
    for x, label in zip(xs, x_labels, strict=True):
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 8), label, fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 28), "concurrent clients", fill="black", font=font, anchor="mt")
    draw.text((origin[0] + 8, top - 22), panel.y_label, fill="black", font=font, anchor="lt")
    for colour, series in zip(COLOURS, panel.series.values(), strict=False):
        points = [
            (x, bottom - (bottom - top) * v / top_value) for x, v in zip(xs, series, strict=True) if v is not None
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)


def line_chart(panels: list[Panel], x_labels: list[str], subtitle: str, path: Path) -> Path:
    """Draws ``panels`` side by side with a shared legend and a subtitle (date, machine) into ``path`` (PNG)."""
    width = PANEL_WIDTH * len(panels)
    height = PANEL_HEIGHT + LEGEND_HEIGHT * 2
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        _draw_panel(draw, (index * PANEL_WIDTH, 0), panel, x_labels)
    font = ImageFont.load_default(13)
    x = 20
    legend_y = PANEL_HEIGHT + 8
    for colour, name in zip(COLOURS, panels[0].series, strict=False):
        draw.line([(x, legend_y + 7), (x + 24, legend_y + 7)], fill=colour, width=3)
        draw.text((x + 30, legend_y), name, fill="black", font=font)
        x += 40 + int(draw.textlength(name, font=font))
    draw.text((20, PANEL_HEIGHT + LEGEND_HEIGHT + 8), subtitle, fill="#555555", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
