"""Sorting a pile of unlabelled pictures: suggestions, least certain first, and the decisions on them.

After a Quick training on a few labelled pictures per class, the model suggests a class for every
unlabelled one. The person is asked about the **least certain** first: the pictures whose two
likeliest classes are closest in calibrated probability (margin sampling, Scheffer et al. 2001),
with the suggested classes taken in turn (``ask_order``).
Why the margin and not the entropy: with a handful of classes, the useful question is "which of
these two is it?", and the margin measures exactly that; entropy also counts the spread over
classes that were never in doubt. A picture the model is sure of teaches the head little, so
labelling the uncertain ones first buys more accuracy per label (measured by
``benchmarks/bench_label.py``).

A ``Pile`` remembers each picture's suggestion and what the person decided (accepted, chose
another class, skipped). Decided pictures join the training set (``labelled_files``), and the
sorted result can be taken away as a zip with one folder per class plus a CSV that says who
labelled what (``write_sorted_zip``).
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .batch import OnSkip, prediction_rows
from .inference import Predictor
from .names import folder_names

__all__ = ["margins", "ask_order", "review_order", "suggestion_rows", "PileItem", "Pile", "write_sorted_zip",
           "BY_YOU", "BY_SUGGESTION"]

BY_YOU = "you"
BY_SUGGESTION = "accepted suggestion"


def margins(probs: np.ndarray) -> np.ndarray:
    """Per row, the top probability minus the second (0 = a coin toss between two classes)."""
    probs = np.asarray(probs, dtype=float)
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = -np.sort(-probs, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def ask_order(margin: Sequence[float], suggested: Sequence, balanced: bool = True) -> np.ndarray:
    """Indices in the order to ask: least certain first (smallest ``margin``; ties keep their order).

    ``balanced`` takes the ``suggested`` classes in turn, each class's pictures least certain
    first, starting with the class of the least certain picture: so that ten answers are not ten
    pictures of one confusion, which leaves the next head lopsided (measured by
    ``benchmarks/bench_label.py``; see docs/benchmarks.md).
    """
    order = np.argsort(np.asarray(margin, dtype=float), kind="stable")
    if not balanced or len(order) == 0:
        return order
    queues: dict[object, list[int]] = {}
    for i in order:  # each class's queue in margin order; classes in order of their first picture
        queues.setdefault(suggested[i], []).append(int(i))
    lists = list(queues.values())
    return np.array([q[k] for k in range(max(map(len, lists))) for q in lists if k < len(q)])


def review_order(probs: np.ndarray, balanced: bool = True) -> np.ndarray:
    """``ask_order`` of probability rows: their margins, their top classes."""
    probs = np.asarray(probs, dtype=float)
    return ask_order(margins(probs), probs.argmax(1).tolist(), balanced)


def suggestion_rows(predictor: Predictor, images: Iterable[tuple[str, Path]], top_k: int = 3,
                    on_skip: OnSkip | None = None) -> list[dict]:
    """``batch.prediction_rows`` (path, suggested label, calibrated confidence, top-k) for every
    readable image, with its ``margin``, least certain first."""
    # a pile is sorted into the classes: each picture gets one suggested, however unlike them it is
    rows = list(prediction_rows(predictor, images, max(2, top_k), 0.0, on_skip, none_of_these=False))
    margin = [r["top1_confidence"] - r["top2_confidence"] for r in rows]
    out = []
    for i in ask_order(margin, [r["top1_label"] for r in rows]):
        row = {k: v for k, v in rows[i].items() if not k.startswith("top") or int(k[3:].split("_")[0]) <= top_k}
        row["margin"] = float(margin[i])
        out.append(row)
    return out


@dataclass
class PileItem:
    """One unlabelled picture: what the model suggests, and what the person decided.

    Attributes:
        file: the picture.
        shown: its name as the person knows it (path in their upload).
        suggestion, confidence, margin: the model's top class, its calibrated probability, and
            its lead over the second class.
        top: the likeliest classes with their probabilities.
        label: the class decided, or None.
        by: who decided it: ``BY_YOU`` (chose a class) or ``BY_SUGGESTION`` (accepted it).
        skipped: the person passed on it (it is asked about again only after the others).
        corrected: the person chose another class than the suggestion made then.
        batch: the training round it was decided in (0 = before any retraining).
    """

    file: Path
    shown: str
    suggestion: str = ""
    confidence: float = 0.0
    margin: float = 1.0
    top: list[tuple[str, float]] = field(default_factory=list)
    label: str | None = None
    by: str | None = None
    skipped: bool = False
    corrected: bool = False
    batch: int = 0


class Pile:
    """The unlabelled pictures of one user and the decisions on them (lives in their session)."""

    def __init__(self, files: Sequence[tuple[str, Path]]):
        self.items = [PileItem(Path(path), shown) for shown, path in files]
        self.round = 0  # trainings since the pile came; decisions are counted per round

    def suggest(self, predictor: Predictor, top_k: int = 3, on_skip: OnSkip | None = None) -> None:
        """Ask the model about every undecided picture (new suggestions replace the old ones)."""
        waiting = {str(item.file): item for item in self.items if item.label is None}
        for row in suggestion_rows(predictor, [(path, Path(path)) for path in waiting], top_k, on_skip):
            item = waiting[row["path"]]
            item.suggestion, item.confidence, item.margin = row["label"], row["confidence"], row["margin"]
            item.top = [(row[f"top{k}_label"], row[f"top{k}_confidence"]) for k in range(1, top_k + 1)
                        if f"top{k}_label" in row]

    def waiting(self) -> list[PileItem]:
        """Undecided pictures in the order to ask (``ask_order``), skipped ones after the rest."""
        out = []
        for skipped in (False, True):
            items = [i for i in self.items if i.label is None and i.suggestion and i.skipped == skipped]
            out += [items[k] for k in ask_order([i.margin for i in items], [i.suggestion for i in items])]
        return out

    def _item(self, file: str | Path) -> PileItem:
        for item in self.items:
            if str(item.file) == str(file):
                return item
        raise KeyError(f"{file} is not in the pile")

    def accept(self, file: str | Path) -> PileItem:
        """The suggestion is right: the picture gets the suggested class."""
        item = self._item(file)
        item.label, item.by, item.corrected, item.batch = item.suggestion, BY_SUGGESTION, False, self.round
        return item

    def choose(self, file: str | Path, label: str) -> PileItem:
        """The person names the class (a correction when it differs from the suggestion)."""
        item = self._item(file)
        item.label, item.by, item.corrected, item.batch = label, BY_YOU, label != item.suggestion, self.round
        return item

    def skip(self, file: str | Path) -> PileItem:
        """Not now: the picture goes to the end of the queue."""
        item = self._item(file)
        item.skipped = True
        return item

    def accept_above(self, confidence: float) -> int:
        """Accept every undecided suggestion at or above ``confidence``; returns how many."""
        chosen = [item for item in self.waiting() if item.confidence >= confidence]
        for item in chosen:
            self.accept(item.file)
        return len(chosen)

    def decided(self) -> list[PileItem]:
        """The pictures with a class."""
        return [item for item in self.items if item.label is not None]

    def corrections(self, round_: int | None = None) -> tuple[int, int]:
        """(corrected, decided) in one training round (the current one by default): how often
        the model's suggestion was wrong where the person looked."""
        round_ = self.round if round_ is None else round_
        mine = [item for item in self.decided() if item.batch == round_]
        return sum(item.corrected for item in mine), len(mine)

    def labelled_files(self) -> dict[str, list[Path]]:
        """Decided pictures by class, to join the training set."""
        out: dict[str, list[Path]] = {}
        for item in self.decided():
            out.setdefault(item.label, []).append(item.file)
        return out


def write_sorted_zip(dest: str | Path, labelled: dict[str, Sequence[Path]], pile: Pile | None) -> dict[str, int]:
    """A zip with one folder per class: the pictures labelled in step 1 and the pile's decided
    ones, plus ``labels.csv`` (file in the zip, class, who labelled it). Returns images per class.

    File names are numbered within each class folder, so two pictures with the same name do not
    overwrite each other.
    """
    rows = [(label, Path(path), BY_YOU) for label, paths in labelled.items() for path in paths]
    if pile is not None:
        rows += [(item.label, item.file, item.by) for item in pile.decided()]
    # Folders from the classes' slugs (labels.csv keeps each class's own name).
    folders = folder_names(sorted({label for label, _, _ in rows}))
    counts: dict[str, int] = {}
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "label", "labelled_by"])
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:  # pictures are compressed already
        for label, path, by in sorted(rows, key=lambda r: (r[0], str(r[1]))):
            counts[label] = counts.get(label, 0) + 1
            name = f"{folders[label]}/{counts[label]:04d}_{path.name}"
            zf.write(path, name)
            writer.writerow([name, label, by])
        zf.writestr("labels.csv", table.getvalue())
    return counts
