"""Reading a person's labelled image set: folders, zips or a CSV, with a report of what was read.

A dataset is a list of readable images with labels, plus a ``DatasetReport`` that says what was
counted, what was skipped (and why) and what looks risky. Everything that fails to read is skipped
with a reason; only a dataset that cannot be trained at all raises ``DataError``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import timm.data
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .archive import IMAGE_EXTENSIONS, IMAGE_FORMATS, ArchiveLimits, extract_zip, is_hidden, restrict_image_formats
from .checks import leakage_check, scan_checks
from .errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "IMAGE_READ_ERRORS",
    "ImageItem",
    "Skipped",
    "DatasetReport",
    "ImageDataset",
    "Split",
    "load_image",
    "check_pixels",
    "restrict_image_formats",
    "read_failure",
    "prepare_image",
    "to_rgb",
    "is_hidden",
    "open_dataset",
    "scan_folder",
    "scan_csv",
    "scan_files",
    "split_dataset",
    "eval_transform",
    "train_transform",
    "TorchImages",
]

_logger = logging.getLogger(__name__)


MIN_IMAGES = 2  # one to train on, one to check


# --- images ------------------------------------------------------------------------------------

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


def _read_failure(path: Path) -> str | None:
    """Why a dataset file is not a usable image, or None when it reads."""
    if path.stat().st_size == 0:
        return "empty file"
    return read_failure(path)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- dataset and report ------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageItem:
    """One readable image: where it is, its label, and its content hash (for duplicate checks)."""

    path: Path
    label: str
    sha1: str
    rel: str  # path shown to the user, relative to the dataset root


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why, in words a user understands."""

    path: str
    reason: str


@dataclass
class DatasetReport:
    """What was read: images per class, skipped files with reasons, warnings.

    Attributes:
        counts: readable images per class, in label order.
        skipped: files not used, with reasons (hidden/system files are not listed).
        warnings: plain-language warnings (imbalance, small classes, duplicates).
        conflicts: groups of identical files that carry different labels (rel paths).
    """

    counts: dict[str, int]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Total readable images."""
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        """A JSON-ready summary (used by the CLI, bundles and the UI)."""
        return {
            "counts": dict(self.counts),
            "n_images": self.n_images,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }


@dataclass
class ImageDataset:
    """Readable labelled images plus the report of how they were read.

    Attributes:
        root: the folder the images live in (an extraction folder for zips).
        items: the images, sorted by label then path (scans are deterministic).
        labels: class names in sorted order; a label's index is its class id.
        report: what was read, skipped and warned about.
    """

    root: Path
    items: list[ImageItem]
    labels: list[str]
    report: DatasetReport

    @property
    def targets(self) -> list[int]:
        """Class index of every item."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[item.label] for item in self.items]

    def fingerprint(self) -> str:
        """A hash of the images and labels: the key for caches of per-image results."""
        h = hashlib.sha1()
        for item in self.items:
            h.update(f"{item.label}\0{item.sha1}\0{item.rel}\n".encode())
        return h.hexdigest()


def _build(root: Path, found: list[tuple[Path, str]], skipped: list[Skipped],
           require_trainable: bool = True, limits: ArchiveLimits | None = None) -> ImageDataset:
    """Read every candidate, drop unreadable ones with reasons, then check and report."""
    limits = limits or ArchiveLimits()
    n_classes = len({label for _, label in found})
    if n_classes > limits.max_classes:  # before any image is decoded
        raise DataError(f"This image set has {n_classes} classes; the limit here is {limits.max_classes}. "
                        "Merge or leave out classes, or train on your own machine for more.")
    items: list[ImageItem] = []
    for path, label in sorted(found, key=lambda t: (t[1], str(t[0]))):
        rel = _rel(path, root)
        reason = _read_failure(path)
        if reason:
            skipped.append(Skipped(rel, reason))
            continue
        items.append(ImageItem(path, label, _sha1(path), rel))

    counts = Counter(item.label for item in items)
    labels = sorted(counts)
    report = DatasetReport(counts={label: counts[label] for label in labels}, skipped=skipped)
    if require_trainable:
        _check_trainable(report)
    _add_warnings(report, items)
    _logger.info("Read %d images in %d classes from %s (%d skipped)",
                 len(items), len(labels), root.name, len(skipped))
    return ImageDataset(root, items, labels, report)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _check_trainable(report: DatasetReport) -> None:
    counts = report.counts
    if len(counts) < 2:
        found = f" (found only {', '.join(repr(c) for c in counts)})" if counts else ""
        raise DataError(
            f"Need at least 2 classes with images{found}. Put the images of each class in a "
            "folder named after the class (e.g. cats/ and dogs/), and upload a zip of those folders."
        )
    small = [f"'{label}' ({n})" for label, n in counts.items() if n < MIN_IMAGES]
    if small:
        raise DataError(
            f"Every class needs at least {MIN_IMAGES} readable images (one to learn from, one to "
            f"check with); too few in: {', '.join(small)}. Add images or remove that class."
        )


def _add_warnings(report: DatasetReport, items: list[ImageItem]) -> None:
    checks, report.conflicts = scan_checks(items, report.counts)
    report.warnings.extend(check.message for check in checks if not check.ok)


# --- sources -----------------------------------------------------------------------------------

def _class_root(root: Path) -> Path:
    """Descend through single wrapping folders (``photos.zip`` -> ``photos/cats, photos/dogs``)."""
    while True:
        children = [c for c in root.iterdir() if not is_hidden(Path(c.name))]
        dirs = [c for c in children if c.is_dir()]
        files = [c for c in children if c.is_file()]
        if len(dirs) == 1 and not files and any(d.is_dir() for d in dirs[0].iterdir()):
            root = dirs[0]
            continue
        return root


def scan_folder(folder: str | Path, require_trainable: bool = True,
                limits: ArchiveLimits | None = None) -> ImageDataset:
    """Read a folder with one sub-folder per class (images may sit deeper inside a class folder).

    Args:
        folder: the folder (a single wrapping folder inside it is looked through).
        require_trainable: raise unless there are 2+ classes with 2+ images each (False for
            evaluation data, where one class is fine).
        limits: caps on classes and (for a labels CSV) rows; defaults when None.

    Raises:
        DataError: not a folder, fewer than 2 classes, a class with fewer than 2 images, or over
            a limit.
    """
    top = Path(folder)
    if not top.is_dir():
        raise DataError(f"{top} is not a folder. Give a folder with one sub-folder per class, or a .zip of it.")
    root = _class_root(top)
    csvs = [p for p in root.iterdir() if p.suffix.lower() == ".csv" and not is_hidden(Path(p.name))]
    if len(csvs) == 1 and not any(p.is_dir() and not is_hidden(Path(p.name)) for p in root.iterdir()):
        return scan_csv(csvs[0], require_trainable, limits)
    found: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    empty: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if is_hidden(rel):
            continue
        if path.is_symlink():
            skipped.append(Skipped(rel.as_posix(), "symbolic link (not followed)"))
            continue
        if path.is_dir():
            if len(rel.parts) == 1 and not any(
                    f.is_file() and not is_hidden(f.relative_to(path)) for f in path.rglob("*")):
                empty.append(rel.as_posix())
            continue
        if len(rel.parts) == 1:
            skipped.append(Skipped(rel.as_posix(), "not inside a class folder (put each image in a "
                                                   "folder named after its class)"))
            continue
        found.append((path, rel.parts[0]))
    dataset = _build(root, found, skipped, require_trainable, limits)
    for name in empty:
        dataset.report.warnings.append(f"Folder '{name}' has no images and was left out.")
    return dataset


def scan_csv(csv_path: str | Path, require_trainable: bool = True,
             limits: ArchiveLimits | None = None) -> ImageDataset:
    """Read a CSV with columns ``filename,label``; file names are relative to the CSV's folder.

    The CSV is read row by row and refused past ``limits.max_files`` rows (a small zip can hold a
    CSV of gigabytes); a file listed again is skipped, so no image is read twice.

    Raises:
        DataError: no ``filename`` and ``label`` columns, too many rows, not UTF-8 text, or too
            few classes/images.
    """
    limits = limits or ArchiveLimits()
    csv_path = Path(csv_path)
    root = csv_path.parent
    real_root = root.resolve()
    found: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    first_line: dict[Path, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "filename" not in columns or "label" not in columns:
                raise DataError(
                    f"{csv_path.name} must have a header row with the columns filename,label "
                    f"(found: {', '.join(columns[:10]) or 'nothing'})."
                )
            for n, raw in enumerate(reader, start=1):
                if n > limits.max_files:
                    raise DataError(f"{csv_path.name} lists more than {limits.max_files} images; the limit here "
                                    f"is {limits.max_files}. Split it, or train on your own machine.")
                line = reader.line_num
                row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
                name, label = row.get("filename", ""), row.get("label", "")
                if not name or not label:
                    skipped.append(Skipped(f"{csv_path.name} line {line}", "missing filename or label"))
                    continue
                path = (root / name).resolve()
                if real_root not in path.parents:
                    skipped.append(Skipped(name, "path points outside the CSV's folder"))
                elif path in first_line:
                    skipped.append(Skipped(name, f"listed again on line {line} (first on line "
                                                 f"{first_line[path]}); each file is used once"))
                elif not path.is_file():
                    skipped.append(Skipped(name, "listed in the CSV but not found"))
                else:
                    first_line[path] = line
                    found.append((path, label))
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path.name} is not a UTF-8 text CSV file.") from exc
    except csv.Error as exc:
        raise DataError(f"{csv_path.name} cannot be read as a CSV file ({exc}). Save it again as "
                        "a plain CSV with the columns filename,label.") from exc
    return _build(root, found, skipped, require_trainable, limits)


def scan_files(files_by_label: dict[str, Sequence[str | Path]], root: str | Path | None = None,
               require_trainable: bool = True, limits: ArchiveLimits | None = None) -> ImageDataset:
    """Read images that a user put into named classes (e.g. uploaded per class in the browser)."""
    found = [(Path(p), label) for label, paths in files_by_label.items() for p in paths]
    common = Path(root) if root else Path("/")
    return _build(common, found, [], require_trainable, limits)


def open_dataset(source: str | Path, workdir: str | Path | None = None,
                 limits: ArchiveLimits | None = None, require_trainable: bool = True) -> ImageDataset:
    """Open a labelled image set from a folder, a ``.zip`` of one, or a ``filename,label`` CSV.

    Args:
        source: folder, zip or CSV path.
        workdir: a new or empty folder to extract a zip into (a new temporary folder when None).
        limits: upload limits: archive size and entries, CSV rows, classes (defaults when None).
        require_trainable: see ``scan_folder``.

    Raises:
        DataError, ArchiveError: with a message that says what to fix.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist.")
    if source.is_dir():
        return scan_folder(source, require_trainable, limits)
    if source.suffix.lower() == ".csv":
        return scan_csv(source, require_trainable, limits)
    dest = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tls-data-"))
    skipped_entries = extract_zip(source, dest, limits)
    try:
        dataset = scan_folder(dest, require_trainable, limits)
    except DataError:
        shutil.rmtree(dest, ignore_errors=True)  # unusable: don't leave its files behind
        raise
    _remove_unused(dest, {item.path.resolve() for item in dataset.items})
    dataset.report.skipped[:0] = [Skipped(s.path, s.reason) for s in skipped_entries]
    return dataset


def _remove_unused(folder: Path, keep: set[Path]) -> None:
    """Delete the files of an extracted upload that are not images of the dataset (skipped,
    hidden, a labels CSV already read): they would only take up the server's disk."""
    for path in [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]:
        if path.is_symlink() or path.resolve() not in keep:
            path.unlink(missing_ok=True)


# --- split -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Indices into ``ImageDataset.items`` for training and validation, plus leakage warnings."""

    train: list[int]
    val: list[int]
    warnings: list[str]


def split_dataset(dataset: ImageDataset, val_fraction: float, seed: int) -> Split:
    """Stratified, seeded train/validation split.

    Each class puts ``round(n * val_fraction)`` images in validation, but at least one, and always
    keeps at least one for training (a class with 2 images gives one to each side).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"The validation fraction must be between 0 and 1 (got {val_fraction}).")
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(dataset.items):
        by_label[item.label].append(i)
    train: list[int] = []
    val: list[int] = []
    for label in dataset.labels:
        idx = list(by_label[label])
        rng.shuffle(idx)
        n_val = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    train.sort()
    val.sort()
    split = Split(train, val, [])
    leakage = leakage_check(dataset, split)
    if not leakage.ok:
        split.warnings.append(leakage.message)
    return split


# --- preprocessing -----------------------------------------------------------------------------

def eval_transform(data_config: dict) -> Callable:
    """The model's evaluation preprocessing (resize, centre crop, normalise) from its timm config.

    Training validation, the Predictor, the CLI and exports all use this one function, so they see
    the same pixels.
    """
    return timm.data.create_transform(**data_config, is_training=False)


def train_transform(data_config: dict) -> Callable:
    """timm's training augmentation for the model's input size and normalisation.

    ``scale=(0.35, 1)`` instead of timm's ImageNet default (0.08, 1): with a few dozen images per
    class, tiny crops often cut the object out entirely and teach the model noise.
    """
    return timm.data.create_transform(**data_config, is_training=True, scale=(0.35, 1.0),
                                      hflip=0.5, color_jitter=0.2)


class TorchImages(torch.utils.data.Dataset):
    """A torch Dataset over selected items: decodes with ``load_image`` and applies ``transform``.

    Decoding a phone photo costs far more than a forward pass of a small model, and training reads
    every image once per epoch, so a dataset can keep work in memory for its own lifetime:

    * ``keep="tensor"``: the transformed tensor (for deterministic evaluation transforms: exact);
    * ``keep="decoded"``: the decoded image, shrunk so its shorter side is at most
      ``shorter_side`` (for random training augmentation, which crops and resizes anyway);
    * ``keep=None``: nothing.

    With ``seed``, the random augmentation of image ``i`` in epoch ``e`` depends only on
    (seed, e, i), not on which process or in which order images are read: a run split over
    several processes then sees the same pixels as a single-process run.
    """

    def __init__(self, items: Sequence[ImageItem], targets: Sequence[int], transform: Callable,
                 keep: str | None = None, shorter_side: int | None = None, seed: int | None = None):
        self.items = list(items)
        self.targets = list(targets)
        self.transform = transform
        self.keep = keep
        self.shorter_side = shorter_side
        self.seed = seed
        self.epoch = 0  # set by the training loop; with ``seed``, picks each image's augmentation
        self._kept: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _decoded(self, i: int) -> Image.Image:
        image = load_image(self.items[i].path)
        if self.shorter_side and min(image.size) > self.shorter_side:
            scale = self.shorter_side / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return image

    def __getitem__(self, i: int):
        if self.keep == "tensor":
            if i not in self._kept:
                self._kept[i] = self.transform(load_image(self.items[i].path))
            return self._kept[i], self.targets[i]
        if self.keep == "decoded":
            if i not in self._kept:
                self._kept[i] = self._decoded(i)
            return self._transform(self._kept[i], i), self.targets[i]
        return self._transform(load_image(self.items[i].path), i), self.targets[i]

    def _transform(self, image: Image.Image, i: int) -> torch.Tensor:
        if self.seed is None:
            return self.transform(image)
        # timm's augmentations draw from both Python's and torch's generators; seed both for this
        # image and epoch, and give the caller's generators back untouched.
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            key = (self.seed * 1_000_003 + self.epoch) * 1_000_003 + i
            random.seed(key)
            torch.manual_seed(key)
            try:
                return self.transform(image)
            finally:
                random.setstate(state)
