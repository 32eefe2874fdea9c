"""Fixing labels in place: keep, move to another class, or remove a picture, with undo, and the
corrected data set as a zip (one folder per class) with a CSV of the changes.

A change names the picture by its file, not by its position, so it still applies after the data
set gained pictures (step 7's sorting, step 5's filing) or lost some. Files are never deleted:
"remove" leaves the picture out of the data set, and undo puts it back.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .archive import ArchiveLimits
from .data import ImageDataset, scan_files
from .errors import UserInputError

__all__ = ["KEEP", "MOVE", "REMOVE", "Change", "apply_changes", "write_corrected_zip", "CHANGE_COLUMNS"]

KEEP, MOVE, REMOVE = "keep", "move", "remove"
CHANGE_COLUMNS = ["path", "given_label", "action", "new_label", "reason"]


@dataclass(frozen=True)
class Change:
    """One decision about one picture.

    Attributes:
        path: the picture's file.
        rel: its path as the user knows it.
        given: its label before the change.
        action: ``KEEP`` (looked at, label right), ``MOVE`` or ``REMOVE``.
        new: the class it moves to (``MOVE`` only).
        reason: why it was shown (the check's words).
    """

    path: Path
    rel: str
    given: str
    action: str
    new: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action not in (KEEP, MOVE, REMOVE) or (self.action == MOVE) != (self.new is not None):
            raise ValueError(f"not a change: {self.action} {self.new}")

    @property
    def label_after(self) -> str | None:
        """The picture's label after the change (None: left out)."""
        return None if self.action == REMOVE else self.new if self.action == MOVE else self.given

    def sentence(self) -> str:
        """The change in words."""
        if self.action == KEEP:
            return f"{self.rel}: kept as *{self.given}*"
        if self.action == REMOVE:
            return f"{self.rel}: removed (was *{self.given}*)"
        return f"{self.rel}: moved from *{self.given}* to *{self.new}*"

    def row(self) -> dict:
        """The CSV row of the change."""
        return {"path": self.rel, "given_label": self.given, "action": self.action, "new_label": self.new or "",
                "reason": self.reason}


def apply_changes(dataset: ImageDataset, labels_now: dict[Path, str | None], limits: ArchiveLimits | None = None
                  ) -> ImageDataset:
    """``dataset`` with each picture of ``labels_now`` under its label there (None: left out);
    a picture not in the data set is put back under its label (an undone removal).

    Raises:
        DataError: the result could not be trained on (a class left with no pictures), said so.
    """
    files: dict[str, list[Path]] = {}
    present = set()
    for item in dataset.items:
        present.add(item.path)
        label = labels_now.get(item.path, item.label)
        if label is not None:
            files.setdefault(label, []).append(item.path)
    for path, label in labels_now.items():
        if path not in present and label is not None:
            files.setdefault(label, []).append(path)
    return scan_files(files, root=dataset.root, limits=limits)


def write_corrected_zip(dataset: ImageDataset, changes: Sequence[Change], zip_path: Path) -> Path:
    """The data set as a zip: one folder per class with its pictures, and ``changes.csv``.

    Raises:
        UserInputError: there are no pictures to write.
    """
    if not dataset.items:
        raise UserInputError("The data set has no pictures to download.")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:  # pictures are compressed already
        for item in dataset.items:
            name = f"{item.label}/{item.path.name}"
            stem, n = name, 1
            while name in used:  # two folders' pictures of one name in the same class
                n += 1
                name = f"{Path(stem).parent}/{Path(stem).stem}-{n}{item.path.suffix}"
            used.add(name)
            zf.write(item.path, name)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CHANGE_COLUMNS)
        writer.writeheader()
        for change in changes:
            writer.writerow(change.row())
        zf.writestr("changes.csv", text.getvalue())
    return zip_path
