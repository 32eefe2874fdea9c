"""Reading a person's labelled image set: folders, zips or a CSV, with a report of what was read.

A dataset is a list of readable images with labels, plus a ``DatasetReport`` that says what was
counted, what was skipped (and why) and what looks risky. Everything that fails to read is skipped
with a reason; only a dataset that cannot be trained at all raises ``DataError``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .archive import ArchiveLimits, Skipped, extract_zip, is_hidden
from .checks import Check, leakage_check, scan_checks
from .images import file_failure, file_sha1
from .errors import DataError
from .names import ClassName

__all__ = ["ImageItem", "Skipped", "DatasetReport", "ImageDataset", "Split", "MIN_IMAGES", "open_dataset",
           "scan_folder", "scan_csv", "scan_files", "split_dataset"]

_logger = logging.getLogger(__name__)


MIN_IMAGES = 2  # one to train on, one to check


# --- dataset and report ------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageItem:
    """One readable image: where it is, its label, and its content hash (for duplicate checks)."""

    path: Path
    label: ClassName
    sha1: str
    rel: str  # path shown to the user, relative to the dataset root


@dataclass
class DatasetReport:
    """What was read: images per class, skipped files with reasons, the dataset checks.

    Attributes:
        counts: readable images per class, in label order.
        skipped: files not used, with reasons (hidden/system files are not listed).
        checks: the dataset checks (imbalance, small classes, conflicts, duplicates), computed
            once while scanning, each with the images it is about.
        notes: warnings that are no check (e.g. a class folder without images).
        conflicts: groups of identical files that carry different labels (rel paths).
    """

    counts: dict[str, int]
    skipped: list[Skipped] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Total readable images."""
        return sum(self.counts.values())

    @property
    def warnings(self) -> list[str]:
        """Every plain-language warning: the failed checks' messages, then the notes."""
        return [c.message for c in self.checks if not c.ok] + self.notes

    def to_dict(self) -> dict:
        """A JSON-ready summary (used by the CLI, bundles and the UI)."""
        return {
            "counts": dict(self.counts),
            "n_images": self.n_images,
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": self.warnings,
        }


@dataclass
class ImageDataset:
    """Readable labelled images plus the report of how they were read.

    Attributes:
        root: the folder the images live in (an extraction folder for zips).
        items: the images, sorted by label then path (scans are deterministic).
        labels: class names in sorted order; a label's index is its class id (each a ``ClassName``).
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
           require_trainable: bool = True, limits: ArchiveLimits | None = None, where: str = "") -> ImageDataset:
    """Read every candidate, drop unreadable ones with reasons, then check and report.

    Every label becomes a ``ClassName`` here, before any image is decoded: a name that is a path
    (``../x``), holds a control character or is over 100 characters refuses the whole set with a
    message that names it (``where`` says where the names came from)."""
    limits = limits or ArchiveLimits()
    names = {label: ClassName(label, where) for label in sorted({label for _, label in found})}
    n_classes = len(names)
    if n_classes > limits.max_classes:  # before any image is decoded
        raise DataError(f"This image set has {n_classes} classes; the limit here is {limits.max_classes}. "
                        "Merge or leave out classes, or train on your own machine for more.")
    items: list[ImageItem] = []
    for path, label in sorted(((path, names[label]) for path, label in found), key=lambda t: (t[1], str(t[0]))):
        rel = _rel(path, root)
        reason = file_failure(path)
        if reason:
            skipped.append(Skipped(rel, reason))
            continue
        items.append(ImageItem(path, label, file_sha1(path), rel))

    counts = Counter(item.label for item in items)
    labels = sorted(counts)
    report = DatasetReport(counts={label: counts[label] for label in labels}, skipped=skipped)
    if require_trainable:
        _check_trainable(report)
    report.checks, report.conflicts = scan_checks(items, report.counts)
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
    dataset = _build(root, found, skipped, require_trainable, limits, "the folder names")
    for name in empty:
        dataset.report.notes.append(f"Folder '{name}' has no images and was left out.")
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
                if any(ord(c) < 32 or ord(c) == 127 for c in name):
                    skipped.append(Skipped(f"{csv_path.name} line {line}", "the file name holds a control "
                                                                          "character (such as NUL)"))
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
    return _build(root, found, skipped, require_trainable, limits, csv_path.name)


def scan_files(files_by_label: dict[str, Sequence[str | Path]], root: str | Path | None = None,
               require_trainable: bool = True, limits: ArchiveLimits | None = None) -> ImageDataset:
    """Read images that a user put into named classes (e.g. uploaded per class in the browser)."""
    found = [(Path(p), label) for label, paths in files_by_label.items() for p in paths]
    common = Path(root) if root else Path("/")
    return _build(common, found, [], require_trainable, limits, "your classes")


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
    dataset.report.skipped[:0] = skipped_entries
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
    """Indices into ``ImageDataset.items`` for training and validation, and the leakage check
    between the two (made once, by ``split_dataset``; None for a split made otherwise)."""

    train: list[int]
    val: list[int]
    leakage: Check | None = None

    @property
    def warnings(self) -> list[str]:
        """What to fix before trusting figures measured on this split."""
        return [self.leakage.message] if self.leakage is not None and not self.leakage.ok else []


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
    split = Split(train, val)
    return dataclasses.replace(split, leakage=leakage_check(dataset, split))
