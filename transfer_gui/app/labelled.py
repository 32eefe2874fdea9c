"""The data set as the user has labelled it so far: step 1's images plus the pictures labelled
since, in step 7 (the pile's decisions) or step 5 (a test picture filed under a class). Trainings
in step 3 and retraining in step 7 start from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .session import Session

if TYPE_CHECKING:
    from ..engine.archive import ArchiveLimits
    from ..engine.data import ImageDataset

__all__ = ["merged_dataset"]


def merged_dataset(session: Session, limits: ArchiveLimits) -> ImageDataset | None:
    """The images of step 1 plus every picture labelled since (the pile's decisions, test pictures
    filed under a class), or None when nothing was added. Each file counts once."""
    from ..engine.data import scan_files

    added: dict[str, list[Path]] = {}
    if session.pile is not None:
        for label, files in session.pile.labelled_files().items():
            added.setdefault(label, []).extend(files)
    for label, files in session.filed.items():
        added.setdefault(label, []).extend(files)
    if session.dataset is None or not added:
        return None
    files: dict[str, dict[str, None]] = {}  # label -> ordered set of paths
    for item in session.dataset.items:
        files.setdefault(item.label, {})[str(item.path)] = None
    known = {path for paths in files.values() for path in paths}
    new = 0
    for label, paths in added.items():
        for path in map(str, paths):
            if path not in known:
                files.setdefault(label, {})[path] = None
                known.add(path)
                new += 1
    if not new:
        return None
    root = Path(os.path.commonpath(list(known)))
    return scan_files({label: list(paths) for label, paths in files.items()},
                      root=root if root.is_dir() else root.parent, limits=limits)
