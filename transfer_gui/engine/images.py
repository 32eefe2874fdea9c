"""Decoding one picture the way a person expects to see it: no torch, so the page can use it.

Every image the app, the command line and the exports read goes through ``load_image``: only the
formats named here, EXIF orientation applied, transparency on white. It is the door for pictures:
before a pixel is decoded, the picture's shape (at most ``MAX_ASPECT``:1) and its decoded size in
bytes (``MAX_DECODE_BYTES``) are checked, and what it returns is never longer than ``MAX_SIDE``
on either side. A 201-byte PNG of 40000x1 pixels is otherwise a 10-gigabyte tensor once resized
to the model's input (the shorter side is scaled up to it). What cannot be read gets a reason in
words (``read_failure``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import without_paths

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "IMAGE_READ_ERRORS", "MAX_ASPECT", "MAX_SIDE", "MAX_DECODE_BYTES",
           "PictureShapeError", "decoded_bytes", "restrict_image_formats", "to_rgb", "prepare_image", "check_pixels", "load_image",
           "read_failure", "failure_reason", "file_failure", "file_sha1"]

# The file types read as images (the app's uploaders name them too).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The formats IMAGE_EXTENSIONS name (JPEG includes the multi-picture files many phones write).
# Pillow would otherwise open any of its ~40 formats whatever a file is called, including
# PostScript, which it reads by running Ghostscript.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# A picture more than 20 times as long as it is wide is a strip, not a photo (a phone panorama
# is about 4:1); the model's resize scales its shorter side up to ~256 px, so a 40000x1 strip
# would become 10,240,000 x 256.
MAX_ASPECT = 20
# The longest side kept: 4096 px is more than any model here looks at (at most 518 px), and a
# picture shrunk to it keeps every detail the resize to the model's input would keep.
MAX_SIDE = 4096
# Bytes one picture may take once decoded: an 8-bit RGB picture at Pillow's own pixel limit
# (89.5 megapixels, 268 MB). An RGBA or 16-bit picture of as many pixels takes more, and is refused.
MAX_DECODE_BYTES = 3 * 89_478_485
# Decoded bytes per pixel by Pillow mode (modes not listed: 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
               "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


class PictureShapeError(ValueError):
    """A picture too long and thin for any model to look at (over ``MAX_ASPECT``:1)."""


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
        image = Image.fromarray(_to_8bit(image), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        # Pasting through the alpha channel onto white is the alpha composite over an opaque
        # background, at 3 + 1 bytes per pixel instead of two more RGBA copies.
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> np.ndarray:
    """16- and 32-bit greyscale as uint8, in integer arithmetic (float64 copies took 8 bytes per
    pixel each): 16-bit values scaled by 255/65535, rounded; float images stretched to 0-255."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = arr.astype(np.float32, copy=False)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        return np.clip(np.rint((arr - lo) * np.float32(255.0 / (hi - lo or 1.0))), 0, 255).astype(np.uint8)
    if image.mode == "I" and int(arr.max(initial=0)) <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    wide = np.clip(arr, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def prepare_image(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, ``to_rgb``, then the longer side shrunk to ``MAX_SIDE``: what
    every image goes through before the model.

    Safe to apply twice (the orientation tag is removed once applied), so images that a UI
    already rotated are not rotated again.
    """
    oriented = ImageOps.exif_transpose(image)
    rgb = to_rgb(oriented if oriented is not None else image)
    if max(rgb.size) > MAX_SIDE:
        rgb = rgb.copy() if rgb is image else rgb  # never shrink a caller's own image in place
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb


def decoded_bytes(image: Image.Image) -> int:
    """Bytes an opened (not yet decoded) picture takes once decoded: the larger of its own pixels
    and the 8-bit RGB picture it becomes (its size and mode are in the file's header)."""
    width, height = image.size
    return width * height * max(3, _MODE_BYTES.get(image.mode, 4))


def check_pixels(image: Image.Image) -> None:
    """Refuse, before its pixels are decoded, a picture over ``MAX_ASPECT``:1 or one whose decoded
    pixels would take more than ``MAX_DECODE_BYTES`` (its size and mode are in the file's header).

    Pillow itself only refuses twice its pixel limit and merely warns between 1x and 2x, and counts
    pixels, while a 16-bit RGBA pixel takes 8 bytes.

    Raises:
        Image.DecompressionBombError: too many bytes once decoded.
        PictureShapeError: too long and thin.
    """
    width, height = image.size
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise PictureShapeError(f"it is {width}x{height} pixels, more than {MAX_ASPECT} times as long as it is "
                                "wide; crop it to the part that shows the object")
    decoded = decoded_bytes(image)
    if decoded > MAX_DECODE_BYTES:
        raise Image.DecompressionBombError(
            f"{width}x{height} pixels would take {decoded / 1e6:,.0f} MB once decoded, over the "
            f"{MAX_DECODE_BYTES / 1e6:,.0f} MB allowed for one picture; shrink it first")


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
        if im.format == "JPEG":
            # JPEG decodes at 1/2, 1/4 or 1/8 scale for the asking: a 12000 px photo is read at
            # 6000 px or less instead of decoded whole and shrunk afterwards.
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))
        im.load()
        return prepare_image(im)


def read_failure(path: str | Path | Image.Image) -> str | None:
    """Why ``path`` is not a usable image, in words for people, or None when it reads."""
    try:
        load_image(path)
    except IMAGE_READ_ERRORS as exc:
        return failure_reason(exc, path)
    return None


def failure_reason(exc: BaseException, path: str | Path | Image.Image = "") -> str:
    """Why ``load_image(path)`` raised ``exc`` (one of ``IMAGE_READ_ERRORS``), in words for people."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"image is too large ({exc})"
    if isinstance(exc, PictureShapeError):
        return f"picture is too long and thin: {exc}"
    if isinstance(exc, UnidentifiedImageError):
        suffix = Path(path).suffix.lower() if isinstance(path, (str, Path)) else ""
        if suffix in IMAGE_EXTENSIONS:
            return "damaged or not really an image (cannot be decoded)"
        return f"not an image file ({suffix or 'no extension'})"
    return f"damaged or incomplete image ({without_paths(str(exc))})"


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
