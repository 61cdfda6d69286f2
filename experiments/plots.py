"""Line charts of accuracy against pairs seen, drawn with PIL only (no plotting library in the stack).

`panel` draws one chart into a box of an image; `curve.plot` (one run, rank-1) and `reproduce
--from_results` (every committed run of a Table-2 row, top-1/5/10 and mAP) compose their figures
from it.
"""
from __future__ import annotations

import dataclasses

from PIL import Image, ImageDraw, ImageFont

from reid_tf import fileio

GREY = (90, 90, 90)
MARKERS = ("circle", "square", "triangle", "diamond")


@dataclasses.dataclass
class Series:
    label: str
    colour: tuple[int, int, int]
    points: list[tuple[float, float]]  # (pairs seen, value in %)
    marker: str = "circle"


def font(size: int = 13):
    return ImageFont.load_default(size=size)


def _marker(draw, x, y, shape, colour):
    r = 3.5
    if shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=colour)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def panel(draw, box, title: str, series: list[Series], x_max: float, paper: float | None = None,
          y_range=(0, 100)) -> None:
    """One chart in box (x0, y0, x1, y1): axes, ticks (y in %, x in thousands of pairs), the paper's
    value dashed, each series as a line with its markers."""
    x0, y0, x1, y1 = box
    left, top, bottom = x0 + 44, y0 + 26, y1 - 40
    right = x1 - 10
    lo, hi = y_range
    f = font()
    x_max = x_max or 1

    def xy(x, y):
        return left + (right - left) * x / x_max, bottom - (bottom - top) * (y - lo) / (hi - lo)

    draw.text((x0 + 6, y0 + 4), title, fill="black", font=f)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for v in range(lo, hi + 1, (hi - lo) // 5):
        y = xy(0, v)[1]
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((left - 30, y - 7), f"{v}", fill="black", font=f)
    for i in range(5):
        x = left + (right - left) * i / 4
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 14, bottom + 7), f"{x_max * i / 4 / 1000:.0f}k", fill="black", font=f)
    draw.text(((left + right) // 2 - 30, bottom + 22), "pairs seen", fill="black", font=f)
    if paper is not None:
        y = xy(0, paper)[1]
        for x in range(int(left), int(right), 12):
            draw.line([(x, y), (min(x + 6, right), y)], fill=GREY)
        draw.text((right - 84, y - 16), f"paper {paper:.2f}", fill=GREY, font=f)
    for s in series:
        line = [xy(x, y) for x, y in s.points]
        if len(line) > 1:
            draw.line(line, fill=s.colour, width=2)
        for x, y in line:
            _marker(draw, x, y, s.marker, s.colour)


def legend(draw, origin, entries: list[tuple[tuple[int, int, int], str, str | None]]) -> None:
    """Entries (colour, label, marker or None for a plain line), one per row from origin."""
    f = font()
    x, y = origin
    for n, (colour, label, marker) in enumerate(entries):
        yy = y + 20 * n + 7
        draw.line([(x, yy), (x + 22, yy)], fill=colour, width=2)
        if marker:
            _marker(draw, x + 11, yy, marker, colour)
        draw.text((x + 28, yy - 7), label, fill=colour, font=f)


def save(image, path: str) -> None:
    with fileio.atomic_path(path, ".png") as tmp:
        image.save(tmp)


def new_image(size):
    image = Image.new("RGB", size, "white")
    return image, ImageDraw.Draw(image)
