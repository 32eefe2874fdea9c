"""Dataset checks: the problems that quietly spoil a small image set, with the images to look at.

* duplicates: the same file twice in one class (it counts double, and a copy on each side of the
  train/validation split flatters the validation accuracy);
* conflicting labels: the same file in two classes (one copy is mislabelled);
* leakage: a validation image identical to a training image (needs the split);
* imbalance: the largest class has many times the images of the smallest;
* small classes: fewer images than a class needs to be learned reliably.

The functions take the dataset's items (anything with ``path``, ``label``, ``sha1`` and ``rel``),
so ``data.py`` can run them while scanning and the app can show them with the offending images.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # typing only: data.py imports this module
    from .data import ImageDataset, ImageItem, Split

__all__ = ["Check", "IMBALANCE_RATIO", "FEW_IMAGES", "scan_checks", "leakage_check"]

IMBALANCE_RATIO = 3.0  # warn above 3:1 between the largest and smallest class
FEW_IMAGES = 5  # warn below 5 images in a class
_MAX_SHOWN = 24  # images listed per check: enough to act on, few enough to look at


@dataclass(frozen=True)
class Check:
    """The outcome of one check.

    Attributes:
        key: "duplicates", "conflicts", "leakage", "imbalance" or "small_classes".
        title: a short name for people.
        ok: nothing to fix.
        message: what was found and what to do (one or more plain sentences).
        images: (image file, caption) of the offending images, at most a couple of dozen.
    """

    key: str
    title: str
    ok: bool
    message: str
    images: list[tuple[str, str]] = field(default_factory=list)


def _groups(items: Sequence["ImageItem"]) -> list[list["ImageItem"]]:
    by_hash: dict[str, list] = defaultdict(list)
    for item in items:
        by_hash[item.sha1].append(item)
    return [group for group in by_hash.values() if len(group) > 1]


def _duplicates(items: Sequence["ImageItem"]) -> Check:
    groups = [g for g in _groups(items) if len({i.label for i in g}) == 1]
    if not groups:
        return Check("duplicates", "Duplicate images", True, "No image appears twice in a class.")
    extra = sum(len(g) - 1 for g in groups)
    shown = "; ".join(" = ".join(i.rel for i in g) for g in groups[:5])
    images = [(str(i.path), f"duplicate: {' = '.join(x.rel for x in g)}") for g in groups for i in g]
    return Check("duplicates", "Duplicate images", False,
                 f"{extra} image(s) are exact copies of another image in the same class ({shown}). "
                 "Copies count twice in training and can make the validation accuracy look better "
                 "than it is; delete the extra copies.", images[:_MAX_SHOWN])


def _conflicts(items: Sequence["ImageItem"]) -> tuple[Check, list[list[str]]]:
    groups = [g for g in _groups(items) if len({i.label for i in g}) > 1]
    if not groups:
        return Check("conflicts", "Conflicting labels", True, "No image carries two different labels."), []
    sentences = []
    for g in groups[:5]:
        labels = sorted({i.label for i in g})
        sentences.append(f"The same image is labelled {' and '.join(repr(x) for x in labels)}: "
                         f"{', '.join(i.rel for i in g)}.")
    more = f" ({len(groups) - 5} more groups.)" if len(groups) > 5 else ""
    images = [(str(i.path), f"labelled '{i.label}': {i.rel}") for g in groups for i in g]
    message = " ".join(sentences) + more + " One of these is probably mislabelled; remove the wrong copy."
    return (Check("conflicts", "Conflicting labels", False, message, images[:_MAX_SHOWN]),
            [[i.rel for i in g] for g in groups])


def _imbalance(counts: dict[str, int]) -> Check:
    if counts:
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        if counts[small] and counts[big] / counts[small] > IMBALANCE_RATIO:
            return Check("imbalance", "Class balance", False,
                         f"Classes are unbalanced: '{big}' has {counts[big]} images but '{small}' only "
                         f"{counts[small]} ({counts[big] / counts[small]:.1f}:1). The model may favour "
                         f"'{big}'; add images to the smaller classes.")
    return Check("imbalance", "Class balance", True,
                 f"No class has more than {IMBALANCE_RATIO:.0f} times the images of another.")


def _small(items: Sequence["ImageItem"], counts: dict[str, int]) -> Check:
    small = [label for label, n in counts.items() if n < FEW_IMAGES]
    if not small:
        return Check("small_classes", "Images per class", True, f"Every class has {FEW_IMAGES} or more images.")
    message = " ".join(f"Class '{label}' has only {counts[label]} images; {FEW_IMAGES} or more per class "
                       "(ideally 20+) give much better results." for label in small)
    images = [(str(i.path), f"'{i.label}' ({counts[i.label]} images)") for i in items if i.label in small]
    return Check("small_classes", "Images per class", False, message, images[:_MAX_SHOWN])


def scan_checks(items: Sequence["ImageItem"], counts: dict[str, int]) -> tuple[list[Check], list[list[str]]]:
    """The checks that need only the images: imbalance, small classes, conflicts, duplicates.

    Returns:
        (checks, conflict groups as lists of relative paths).
    """
    conflicts, groups = _conflicts(items)
    return [_imbalance(counts), _small(items, counts), conflicts, _duplicates(items)], groups


def leakage_check(dataset: "ImageDataset", split: "Split | None" = None,
                  groups: Sequence[int] | None = None) -> Check:
    """Checked images that are byte-identical to an image the model judging them learned from.

    Pass a holdout ``split`` (its validation images are checked against its training images), or
    ``groups``: a group per image (cross-validation folds), where an image is judged by a model
    trained on every other group.
    """
    if groups is None:
        assert split is not None, "leakage_check needs a split or groups"
        group = {i: 0 for i in split.train} | {i: 1 for i in split.val}
        checked = set(split.val)
    else:
        group = dict(enumerate(groups))
        checked = set(group)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i in group:
        by_hash[dataset.items[i].sha1].append(i)
    leaks = []
    for i in sorted(checked):
        # a copy in another group taught the model that judged image i (for a holdout: training)
        copy = next((j for j in by_hash[dataset.items[i].sha1] if group[j] != group[i]
                     and (groups is not None or group[j] == 0)), None)
        if copy is not None:
            leaks.append((dataset.items[copy], dataset.items[i]))
    if not leaks:
        return Check("leakage", "Training/checking leakage", True,
                     "No checked image is a copy of an image its model learned from.")
    shown = "; ".join(f"{a.rel} = {b.rel}" for a, b in leaks[:5])
    images = []
    for a, b in leaks:
        images += [(str(b.path), f"checked: {b.rel}"), (str(a.path), f"learned from: {a.rel}")]
    return Check("leakage", "Training/checking leakage", False,
                 f"{len(leaks)} checked image(s) are identical to images their model learned from ({shown}), so "
                 "the accuracy is too optimistic. Remove the duplicate copies.", images[:_MAX_SHOWN])
