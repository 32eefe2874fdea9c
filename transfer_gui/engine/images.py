"""Decoding one picture the way a person expects to see it: no torch, so the page can use it.

Every image the app, the command line and the exports read goes through ``load_image``: only the
formats named here, EXIF orientation applied, transparency on white, a pixel limit checked before
decoding. What cannot be read gets a reason in words (``read_failure``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "IMAGE_READ_ERRORS", "restrict_image_formats", "to_rgb",
           "prepare_image", "check_pixels", "load_image", "read_failure", "file_failure", "file_sha1"]

# The file types read as images (the app's uploaders name them too).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The formats IMAGE_EXTENSIONS name (JPEG includes the multi-picture files many phones write).
# Pillow would otherwise open any of its ~40 formats whatever a file is called, including
# PostScript, which it reads by running Ghostscript.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")


def restrict_image_formats() -> None:
    """Make Pillow, for the whole process, try only ``IMAGE_FORMATS`` when it opens a file.

    ``load_image`` already passes the list; a server also calls this once at start, because the
    web framework decodes a picture dropped on the page with a plain ``Image.open`` before our code
    sees it. Saving in other formats is not affected.
    """
    Image.init()
    Image.ID[:] = [fmt for fmt in Image.ID if fmt in IMAGE_FORMATS]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB the way a person expects to see it.

    Transparency is composited on white (``convert("RGB")`` would keep whatever colour the
    transparent pixels happen to hold, often black). 16-bit and 32-bit greyscale are scaled to 8 bit
    rather than clipped; palette, greyscale and CMYK are converted.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 65535 -> 255
        elif mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def prepare_image(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, then ``to_rgb``: what every image goes through before the model.

    Safe to apply twice (the orientation tag is removed once applied), so images that a UI
    already rotated are not rotated again.
    """
    oriented = ImageOps.exif_transpose(image)
    return to_rgb(oriented if oriented is not None else image)


def check_pixels(image: Image.Image) -> None:
    """Refuse images over PIL's decompression-bomb pixel limit before their pixels are decoded.

    PIL itself only refuses twice its limit and merely warns between 1x and 2x; an image there
    still costs up to ~1 GB to decode, which a public server must not spend on one upload.

    Raises:
        Image.DecompressionBombError: over ``Image.MAX_IMAGE_PIXELS`` pixels.
    """
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise Image.DecompressionBombError(
            f"{width}x{height} pixels is over the {limit / 1e6:.0f}-megapixel limit for one image")


def load_image(path: str | Path | Image.Image) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied and transparency on white.

    An already opened PIL image (from a UI) goes through the same ``prepare_image``, so every
    caller can pass either. Animated GIF/WebP/PNG files give their first frame.

    Raises:
        OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError: the file is not a
        readable image (PIL's own exceptions, passed through so callers can give the reason).
    """
    if isinstance(path, Image.Image):
        check_pixels(path)
        return prepare_image(path)
    with Image.open(path, formats=IMAGE_FORMATS) as im:
        check_pixels(im)
        im.load()
        return prepare_image(im)


def read_failure(path: str | Path | Image.Image) -> str | None:
    """Why ``path`` is not a usable image, in words for people, or None when it reads."""
    try:
        load_image(path)
    except Image.DecompressionBombError as exc:
        return f"image is too large ({exc})"
    except UnidentifiedImageError:
        suffix = Path(path).suffix.lower() if not isinstance(path, Image.Image) else ""
        if suffix in IMAGE_EXTENSIONS:
            return "damaged or not really an image (cannot be decoded)"
        return f"not an image file ({suffix or 'no extension'})"
    except IMAGE_READ_ERRORS as exc:
        return f"damaged or incomplete image ({exc})"
    return None


IMAGE_READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
                Image.DecompressionBombError)


def file_failure(path: Path) -> str | None:
    """Why a dataset file is not a usable image (an empty file too), or None when it reads."""
    if path.stat().st_size == 0:
        return "empty file"
    return read_failure(path)


def file_sha1(path: Path) -> str:
    """The SHA-1 of a file's bytes: identical files are duplicates whatever their names."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
