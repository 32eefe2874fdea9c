"""Rebuild assets/example_dataset and assets/test_images from Debian's openclipart-png.

Run once by a maintainer (`apt-get install openclipart-png`); the output is committed. Images are
downscaled to at most 192 px per side to keep the example small; transparency is kept on purpose,
because real uploads have it and the engine must composite it on white.
"""

import hashlib
import io
import logging
import shutil
from pathlib import Path

from PIL import Image

SRC = Path("/usr/share/openclipart/png")
# Six classes a non-programmer recognises at a glance. Chosen among openclipart's folders by a
# logistic-regression probe on the built-in model's features (16 images per class, 3-fold):
# about 0.78 for this set, 0.65 for birds/bugs/fish/flowers/fruit/vehicles.
CLASSES = {
    "animal": "animals/mammals",
    "bug": "animals/bugs",
    "computer": "computer/hardware",
    "flower": "plants/flowers",
    "fruit": "food/fruit",
    "vehicle": "transportation/vehicles",
}
PER_CLASS = 16  # >= 15 images per class, 6 classes: about 1.7 MB
MAX_SIDE = 192


def _thumbnail(path: Path) -> bytes:
    with Image.open(path) as im:
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
        return buf.getvalue()


def main() -> None:
    """Write the example dataset and one held-out test image per class."""
    logging.basicConfig(level=logging.INFO)
    Image.MAX_IMAGE_PIXELS = None  # trusted Debian files; a few drawings are very large
    here = Path(__file__).parent
    out, tests = here / "example_dataset", here / "test_images"
    for d in (out, tests):
        shutil.rmtree(d, ignore_errors=True)
    tests.mkdir(parents=True)
    seen: set[str] = set()
    for label, folder in CLASSES.items():
        # Skip black-and-white variants ("_bw") and any drawing whose thumbnail is already used:
        # openclipart files some drawings twice (a wing is both "bird" and "vehicle" there).
        unique: list[tuple[Path, bytes]] = []
        for f in sorted((SRC / folder).glob("*.png")):
            if "_bw" in f.name:
                continue
            data = _thumbnail(f)
            digest = hashlib.sha1(data).hexdigest()
            if digest not in seen:
                seen.add(digest)
                unique.append((f, data))
        # Evenly spaced picks give more variety than the first N (names sort by subject: apple_...).
        n = PER_CLASS + 1
        chosen = [unique[round(i * (len(unique) - 1) / (n - 1))] for i in range(n)]
        test = chosen.pop(n // 2)  # the middle pick is the held-out test image
        (out / label).mkdir(parents=True)
        for f, data in chosen:
            (out / label / f.name).write_bytes(data)
        (tests / f"{label}_{test[0].name}").write_bytes(test[1])
        logging.info("%s: %d images from %s", label, len(chosen), folder)


if __name__ == "__main__":
    main()
