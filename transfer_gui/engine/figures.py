"""Pictures the engine draws for people: heat-map overlays, the confusion matrix, the learning curve,
pretrained vs from scratch.

Drawn with Pillow alone (no plotting library), as plain RGB images that any UI or file can show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["overlay_heat", "heat_colours", "ConfusionPicture", "confusion_picture", "CurvePicture", "curve_picture",
           "ComparePicture", "compare_picture"]

# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp ("turbo"-like, few stops).
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RGB = np.array([[48, 18, 59], [40, 160, 230], [120, 240, 90], [250, 190, 40], [200, 20, 10]], dtype=np.float32)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours, blue (cold) to red (hot)."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    return np.stack([np.interp(h, _STOPS, _RGB[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def overlay_heat(image: Image.Image, heat: np.ndarray, strength: float = 0.6) -> Image.Image:
    """The picture with its heat map blended over it.

    Cold areas keep most of the picture (opacity grows with heat), so a viewer still sees what is
    under the hot spot.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    if heat.shape != base.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the picture {base.shape[:2]}")
    alpha = (0.15 + strength * np.clip(heat, 0, 1))[..., None]
    out = base * (1 - alpha) + heat_colours(heat).astype(np.float32) * alpha
    return Image.fromarray(out.round().astype(np.uint8))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


@dataclass
class ConfusionPicture:
    """A drawn confusion matrix and where its cells are (to turn a click into a cell).

    Attributes:
        image: the picture (RGB).
        labels: class names, rows = true class, columns = predicted class.
        counts: the counts drawn, ``counts[i][j]`` = images of class i predicted as j.
        left, top: pixel position of the first cell's top-left corner.
        cell: side of a cell in pixels.
    """

    image: Image.Image
    labels: list[str]
    counts: list[list[int]]
    left: int
    top: int
    cell: int

    def cell_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(true label, predicted label) of the cell at pixel (x, y), or None outside the grid."""
        col = int((x - self.left) // self.cell)
        row = int((y - self.top) // self.cell)
        n = len(self.labels)
        if x < self.left or y < self.top or not (0 <= row < n and 0 <= col < n):
            return None
        return self.labels[row], self.labels[col]

    def centre(self, true_label: str, predicted_label: str) -> tuple[int, int]:
        """Pixel centre of a cell (what a click on it would report)."""
        i, j = self.labels.index(true_label), self.labels.index(predicted_label)
        return self.left + j * self.cell + self.cell // 2, self.top + i * self.cell + self.cell // 2


_FULL_DETAIL = 40  # classes up to which every count and class name is drawn
_BIG_GRID = 1600  # pixels across the grid beyond that


def confusion_picture(labels: Sequence[str], confusion: Sequence[Sequence[int]]) -> ConfusionPicture:
    """Draw a confusion matrix with its counts: rows = true class, columns = predicted class.

    Right answers (the diagonal) are green, mistakes red; the shade is the share of the true
    class's images in that cell, so a small class's errors are as visible as a big one's.

    Up to 40 classes every cell shows its count and every row and column its class; beyond, the
    cells shrink so that the grid stays about 1600 pixels wide (the picture would otherwise grow
    with the square of the class count: 2,000 classes, about 11 GB), and counts and names are
    left to the class pickers beside the picture.
    """
    labels = list(labels)
    counts = np.asarray(confusion, dtype=int).reshape(len(labels), len(labels))
    n = len(labels)
    cell = int(np.clip(560 // max(n, 1), 26, 72)) if n <= _FULL_DETAIL else max(2, min(26, _BIG_GRID // n))
    numbers, names = cell >= 18, cell >= 12
    font, small = _font(max(11, min(18, cell // 3))), _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max([probe.textlength(label, font=small) for label in labels] + [40])) if names else 0
    label_w = min(text_w, 180) + 12
    left, top = 30 + label_w, 30 + label_w
    width, height = left + n * cell + 12, top + n * cell + 12
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    # every cell's colour at once: drawing 90,000 rectangles one by one takes seconds
    right = 255 - share[..., None] * (255 - np.array([30, 140, 60]))
    wrong = 255 - np.maximum(share, 0.15)[..., None] * (255 - np.array([200, 40, 40]))
    fill = np.where(np.eye(n, dtype=bool)[..., None], right, wrong)
    fill[counts == 0] = (245, 245, 245)
    grid = np.repeat(np.repeat(fill.astype(np.uint8), cell, axis=0), cell, axis=1)
    if cell >= 6:  # cell borders, where there is room for them
        for edge in (0, cell - 1):  # like an outlined rectangle: both edges of every cell
            grid[edge::cell, :] = grid[:, edge::cell] = (200, 200, 200)
    img.paste(Image.fromarray(grid), (left, top))
    if numbers:
        for i in range(n):
            for j in range(n):
                ink = "white" if counts[i, j] and share[i, j] > 0.55 else (40, 40, 40)
                draw.text((left + j * cell + cell / 2, top + i * cell + cell / 2), str(counts[i, j]), fill=ink,
                          font=font, anchor="mm")
    for k, label in enumerate(labels if names else []):
        shown = _fit(draw, label, small, label_w - 12)
        # row labels (true class), right-aligned against the grid
        draw.text((left - 6, top + k * cell + cell / 2), shown, fill="black", font=small, anchor="rm")
        # column labels (predicted class), written upwards
        strip = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(strip).text((6, cell / 2), shown, fill="black", font=small, anchor="lm")
        img.paste(strip.rotate(90, expand=True), (left + k * cell, top - label_w))
    draw.text((left + n * cell / 2, 14), "predicted class", fill=(90, 90, 90), font=small, anchor="mm")
    axis = Image.new("RGB", (n * cell, 24), "white")
    ImageDraw.Draw(axis).text((n * cell / 2, 12), "true class", fill=(90, 90, 90), font=small, anchor="mm")
    img.paste(axis.rotate(90, expand=True), (4, top))
    return ConfusionPicture(img, labels, counts.tolist(), left, top, cell)


@dataclass
class CurvePicture:
    """A drawn learning curve and the figures it shows.

    Attributes:
        image: the picture (RGB).
        x_ticks: the training sizes with a tick, whole images per class (the measured sizes).
        mean, low, high: per tick, the mean accuracy and the lowest and highest of the tries
            (the band).
    """

    image: Image.Image
    x_ticks: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


_CURVE_BLUE, _BAND_BLUE = (37, 99, 235), (191, 212, 250)


def _accuracy_axes(img: Image.Image, left: int, right: int, top: int, bottom: int, x_title: str,
                   ticks: Sequence[tuple[float, str]]) -> None:
    """The frame the accuracy plots share: a grid from 0 to 100 % with its title written upwards,
    and the x axis with its ticks (pixel x, text) and its title."""
    draw = ImageDraw.Draw(img)
    width, height = img.size
    font, small = _font(14), _font(12)
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + (1 - level) * (height - top - bottom)
        draw.line([(left, y), (width - right, y)], fill=(230, 230, 230))
        draw.text((left - 8, y), f"{level:.0%}", fill=(90, 90, 90), font=small, anchor="rm")
    for x, text in ticks:
        draw.line([(x, height - bottom), (x, height - bottom + 5)], fill=(90, 90, 90))
        draw.text((x, height - bottom + 8), text, fill="black", font=small, anchor="mt")
    draw.line([(left, height - bottom), (width - right, height - bottom)], fill=(90, 90, 90))
    draw.text(((left + width - right) / 2, height - 8), x_title, fill=(90, 90, 90), font=font, anchor="md")
    axis = Image.new("RGB", (height - top - bottom, 20), "white")
    ImageDraw.Draw(axis).text(((height - top - bottom) / 2, 10), "accuracy on held-out images", fill=(90, 90, 90),
                              font=small, anchor="mm")
    img.paste(axis.rotate(90, expand=True), (4, top))


def curve_picture(sizes: Sequence[float], tries: Sequence[Sequence[float]], width: int = 720,
                  height: int = 340) -> CurvePicture:
    """Draw accuracy against training images per class: the mean of the tries as a line with its
    points, the range of the tries as a band around it, a tick at each measured size (a whole
    number of images) and the accuracy axis from 0 to 100 %.

    Args:
        sizes: training images per class at each point (ascending).
        tries: the accuracies measured at each point (one or more tries each).
    """
    ticks = [int(round(s)) for s in sizes]
    mean = [float(np.mean(t)) for t in tries]
    low, high = [float(min(t)) for t in tries], [float(max(t)) for t in tries]
    small = _font(12)
    left, right, top, bottom = 64, 24, 40, 52
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    span = max(ticks[-1] - ticks[0], 1)

    def x_of(size: float) -> float:
        return left + (size - ticks[0]) / span * (width - left - right)

    def y_of(accuracy: float) -> float:
        return top + (1 - accuracy) * (height - top - bottom)

    xs = [x_of(s) for s in sizes]
    _accuracy_axes(img, left, right, top, bottom, "training images per class", list(zip(xs, map(str, ticks))))
    draw.polygon([(x, y_of(h)) for x, h in zip(xs, high)] + [(x, y_of(lo)) for x, lo in zip(xs[::-1], low[::-1])],
                 fill=_BAND_BLUE)
    draw.line([(x, y_of(m)) for x, m in zip(xs, mean)], fill=_CURVE_BLUE, width=3)
    for x, m in zip(xs, mean):
        draw.ellipse([x - 4, y_of(m) - 4, x + 4, y_of(m) + 4], fill=_CURVE_BLUE)
        draw.text((x, y_of(m) - 8), f"{m:.0%}", fill=_CURVE_BLUE, font=small, anchor="md")
    # the legend, top left inside the plot
    draw.line([(left + 12, 16), (left + 36, 16)], fill=_CURVE_BLUE, width=3)
    draw.text((left + 42, 16), "mean of the tries", fill="black", font=small, anchor="lm")
    draw.rectangle([left + 180, 10, left + 204, 22], fill=_BAND_BLUE)
    draw.text((left + 210, 16), "lowest to highest try", fill="black", font=small, anchor="lm")
    return CurvePicture(img, ticks, mean, low, high)


@dataclass
class ComparePicture:
    """A drawn comparison of two runs and the figures it shows.

    Attributes:
        image: the picture (RGB).
        series: per run title, its checks as (seconds of training, accuracy), from 0 s.
        x_max: the right end of the seconds axis.
        labels: the text written at each run's end, per run title.
    """

    image: Image.Image
    series: dict[str, list[tuple[float, float]]]
    x_max: float
    labels: dict[str, str]


_RUN_COLOURS = ((37, 99, 235), (234, 88, 12))  # blue, orange: told apart also by colour-blind eyes


def _nice_step(span: float) -> float:
    """A round tick spacing giving 4-8 ticks over ``span``."""
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200):
        if span / step <= 8:
            return step
    return span / 5


def compare_picture(series: dict[str, Sequence[tuple[float, float]]], chance: float, x_max: float,
                    ended: Sequence[str] = (), width: int = 720, height: int = 360) -> ComparePicture:
    """Draw accuracy against seconds of training for two runs (or one, while the other waits).

    Each run's checks are joined by a line with a dot at each; a run that has ended gets its final
    accuracy and time written at its end. A dashed line marks what guessing gets. The axes start
    at 0 and the accuracy axis runs to 100 %, so a climb looks like one.

    Args:
        series: per run title (e.g. "pretrained"), its checks as (seconds, accuracy) in time order.
        chance: the accuracy of always answering the commonest class.
        x_max: the seconds axis' right end (the longest budget).
        ended: titles of the runs that have finished (their end is labelled).
    """
    font, small, bold = _font(14), _font(12), _font(15)
    left, right, top, bottom = 64, 36, 44, 52
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x_max = max(x_max, max((s for points in series.values() for s, _ in points), default=0.0), 1.0)

    def x_of(seconds: float) -> float:
        return left + seconds / x_max * (width - left - right)

    def y_of(accuracy: float) -> float:
        return top + (1 - accuracy) * (height - top - bottom)

    step = _nice_step(x_max)
    seconds = [k * step for k in range(int(x_max / step + 1e-9) + 1)]
    _accuracy_axes(img, left, right, top, bottom, "seconds of training", [(x_of(t), f"{t:g} s") for t in seconds])
    y = y_of(chance)  # what guessing gets, dashed
    for x in range(left, width - right, 12):
        draw.line([(x, y), (min(x + 6, width - right), y)], fill=(120, 120, 120), width=1)
    draw.text((width - right - 4, y + 4), f"guessing: {chance:.0%}", fill=(110, 110, 110), font=small, anchor="ra")

    labels: dict[str, str] = {}
    legend_x = left + 10
    for (title, points), colour in zip(series.items(), _RUN_COLOURS):
        draw.line([(legend_x, 18), (legend_x + 26, 18)], fill=colour, width=4)
        draw.text((legend_x + 32, 18), title, fill="black", font=font, anchor="lm")
        legend_x += 32 + draw.textlength(title, font=font) + 28
        xy = [(x_of(s), y_of(a)) for s, a in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=4, joint="curve")
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        if title in ended and points:
            seconds, accuracy = points[-1]
            text = f"{accuracy:.0%} after {seconds:.0f} s"
            labels[title] = text
            x, y = xy[-1]
            draw.ellipse([x - 7, y - 7, x + 7, y + 7], outline=colour, width=3)
            # above the end, on the side with room, on white so that no line runs through it
            room_right = width - right - x - 12 >= draw.textlength(text, font=bold)
            anchor = ("l" if room_right else "r") + ("d" if y - 24 > top else "t")
            at = (x + 10 if room_right else x - 10, y - 14 if anchor[1] == "d" else y + 14)
            box = draw.textbbox(at, text, font=bold, anchor=anchor)
            draw.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill="white")
            draw.text(at, text, fill=colour, font=bold, anchor=anchor)
    return ComparePicture(img, {t: [(float(s), float(a)) for s, a in p] for t, p in series.items()}, x_max, labels)
