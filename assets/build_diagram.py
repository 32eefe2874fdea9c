"""Draw assets/transfer_diagram.png, the picture in the app's "What is happening?" panel.

Run from the repository root: ``python assets/build_diagram.py``. Drawn with Pillow only, so the
picture is ours and rebuilds anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent / "transfer_diagram.png"
W, H = 960, 370
BLUE, GREEN, ORANGE, GREY, INK = (66, 110, 200), (46, 150, 90), (230, 140, 40), (235, 238, 245), (40, 40, 50)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _arrow(draw: ImageDraw.ImageDraw, x0: int, y: int, x1: int, colour=INK) -> None:
    draw.line([(x0, y), (x1 - 10, y)], fill=colour, width=4)
    draw.polygon([(x1, y), (x1 - 14, y - 8), (x1 - 14, y + 8)], fill=colour)


def build() -> Path:
    """Draw the diagram and save it; returns its path."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    big, mid, small = _font(22), _font(17), _font(14)
    # your picture
    d.rounded_rectangle([20, 120, 130, 230], 12, fill=GREY, outline=INK, width=2)
    d.text((75, 175), "your\npicture", font=mid, fill=INK, anchor="mm", align="center")
    _arrow(d, 135, 175, 185)
    # pretrained layers: a stack of shrinking boxes
    for k in range(5):
        x = 190 + k * 62
        inset = k * 10
        d.rounded_rectangle([x, 90 + inset, x + 50, 260 - inset], 8, fill=BLUE, outline=INK, width=2)
    d.text((345, 60), "pretrained layers", font=big, fill=BLUE, anchor="mm")
    d.text((345, 290), "learned edges, textures, shapes and parts", font=small, fill=INK, anchor="mm")
    d.text((345, 310), "from millions of photos (ImageNet)", font=small, fill=INK, anchor="mm")
    _arrow(d, 500, 175, 550)
    # features
    for k in range(6):
        d.rectangle([555, 110 + k * 22, 585, 128 + k * 22], fill=(170, 190, 235), outline=INK)
    d.text((570, 80), "features", font=mid, fill=INK, anchor="mm")
    _arrow(d, 590, 175, 640)
    # new head
    d.rounded_rectangle([645, 125, 745, 225], 10, fill=GREEN, outline=INK, width=2)
    d.text((695, 175), "new\nhead", font=big, fill="white", anchor="mm", align="center")
    d.text((695, 100), "learns YOUR classes", font=small, fill=GREEN, anchor="mm")
    _arrow(d, 750, 175, 800)
    for k, name in enumerate(("cat 91%", "dog 7%", "other 2%")):
        d.text((810, 145 + k * 28), name, font=mid, fill=INK, anchor="lm")
    # the two modes
    d.line([(190, 350), (490, 350)], fill=ORANGE, width=4)
    d.text((500, 350), "Fine-tune also nudges these, slowly", font=small, fill=ORANGE, anchor="lm")
    d.text((645, 250), "Quick trains only this", font=small, fill=GREEN, anchor="lm")
    img.save(OUT, optimize=True)
    return OUT


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    logging.getLogger(__name__).info("wrote %s", build())
