"""Classifying many images at once: the rows that the CLI's ``predict`` and the app's batch view
both produce (same function, so their CSV files are equal), the "not sure" rule and the "none of
these" answer."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .archive import ArchiveLimits, extract_zip, is_hidden
from .images import IMAGE_EXTENSIONS, IMAGE_READ_ERRORS, failure_reason, load_image
from .errors import UserInputError
from .inference import Predictor
from .novelty import NONE_OF_THESE

__all__ = ["NOT_SURE", "NONE_OF_THESE", "decide", "iter_image_files", "prediction_rows", "write_csv"]

_logger = logging.getLogger(__name__)

NOT_SURE = "not sure"

OnSkip = Callable[[str, str], None]


def decide(probs: np.ndarray, labels: Sequence[str], threshold: float, novel: bool = False) -> tuple[str, float]:
    """(answer, confidence) for one image: ``NONE_OF_THESE`` when it is unlike every training
    picture (``novel``), else the top label, or ``NOT_SURE`` when its calibrated probability is
    below ``threshold`` (0 = always answer)."""
    top = int(np.argmax(probs))
    confidence = float(probs[top])
    if novel:
        return NONE_OF_THESE, confidence
    return (labels[top] if confidence >= threshold else NOT_SURE), confidence


def iter_image_files(sources: Iterable[tuple[str, Path]], tmp: Path,
                     on_skip: OnSkip | None = None, limits: ArchiveLimits | None = None
                     ) -> Iterator[tuple[str, Path]]:
    """(shown name, file) for every candidate image under the given files, folders and zips.

    Args:
        sources: (name to show, path) pairs; a zip's images are shown as ``name:inner/path``.
        tmp: a private folder to extract zips into.
        on_skip: called with (shown name, reason) for zip entries that were not extracted.
        limits: archive limits for the zips, shared by all of them (defaults when None).

    Raises:
        UserInputError: a path that does not exist, or a zip that cannot be read safely.
    """
    limits = limits or ArchiveLimits()
    for n, (name, path) in enumerate(sources):
        path = Path(path)
        if not path.exists():
            raise UserInputError(f"{name} does not exist.")
        if path.is_file() and path.suffix.lower() == ".zip":
            dest = tmp / f"zip{n}"
            for skipped in extract_zip(path, dest, limits):
                if on_skip:
                    on_skip(f"{name}:{skipped.path}", skipped.reason)
            for file in sorted(p for p in dest.rglob("*") if p.is_file()):
                rel = file.relative_to(dest)
                if not is_hidden(rel):
                    yield f"{name}:{rel.as_posix()}", file
            # the zips together stay within the limits, not each of them
            used = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
            limits = limits.within(limits.max_total_bytes - used)
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = file.relative_to(path)
                if not is_hidden(rel) and file.suffix.lower() in IMAGE_EXTENSIONS:
                    yield str(Path(name) / rel), file
        else:
            yield name, path


def prediction_rows(predictor: Predictor, images: Iterable[tuple[str, Path]], top_k: int,
                    threshold: float = 0.0, on_skip: OnSkip | None = None,
                    batch_size: int = 32, megapixels: float = 100, none_of_these: bool = True) -> Iterator[dict]:
    """One row per readable image: path, label (or "not sure", or "not one of your classes"),
    confidence, novelty (the "none of these" score, above 1: unlike every training picture; empty
    for a model without the check), then top1..topK label/confidence. Unreadable files go to
    ``on_skip`` with a reason. ``none_of_these=False`` always answers with a class (the score
    is still given).

    Decoded images wait for their batch in memory: a batch is sent to the model when it holds
    ``batch_size`` images or ``megapixels`` million decoded pixels, whichever comes first (a
    solid-colour 89-megapixel PNG is 0.3 MB on disk and 268 MB decoded)."""
    budget = megapixels * 1e6
    k = max(1, min(top_k, len(predictor.labels)))

    def rows(batch):
        answers = predictor.answers([img for _, img in batch])
        for j, ((shown, _), p) in enumerate(zip(batch, answers.probs, strict=True)):
            label, confidence = decide(p, predictor.labels, threshold, none_of_these and answers.is_novel(j))
            novelty = float(answers.novelty[j]) if answers.novelty is not None else ""
            row = {"path": shown, "label": label, "confidence": confidence, "novelty": novelty}
            for rank, i in enumerate(np.argsort(-p, kind="stable")[:k], start=1):
                row[f"top{rank}_label"] = predictor.labels[i]
                row[f"top{rank}_confidence"] = float(p[i])
            yield row

    batch, pixels = [], 0
    for shown, file in images:
        try:
            image = load_image(file)
        except IMAGE_READ_ERRORS as exc:
            if on_skip:
                on_skip(shown, failure_reason(exc, file))
            continue
        if batch and pixels + image.width * image.height > budget:
            yield from rows(batch)
            batch, pixels = [], 0
        batch.append((shown, image))
        pixels += image.width * image.height
        if len(batch) == batch_size:
            yield from rows(batch)
            batch, pixels = [], 0
    if batch:
        yield from rows(batch)


def write_csv(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows (all with the same keys) to a CSV file; returns how many were written."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            count += 1
    return count
