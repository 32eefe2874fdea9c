"""Would more images help? The learning curve.

``learning_curve`` trains Quick on 25/50/75/100 % of the training images (stratified, seeded,
repeated), always scored on the same validation images, and reads the slope in a sentence.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .data import ImageDataset, Split, split_dataset
from .features import FeatureCache
from .training import fit

__all__ = ["CurvePoint", "LearningCurve", "learning_curve", "slope_sentence", "subsample"]

_logger = logging.getLogger(__name__)

RISING = 0.03  # accuracy gained from half to all of the images that counts as "still rising"


@dataclass(frozen=True)
class CurvePoint:
    """Validation accuracy when training on a fraction of the training images.

    Attributes:
        fraction: share of each class's training images used.
        images_per_class: mean training images per class at this fraction.
        accuracies: validation accuracy of each repeat (different random subsets).
        mean, std: over the repeats.
    """

    fraction: float
    images_per_class: float
    accuracies: tuple[float, ...]
    mean: float
    std: float


@dataclass(frozen=True)
class LearningCurve:
    """The curve, the validation images it was measured on, and what it means."""

    points: tuple[CurvePoint, ...]
    n_val: int
    sentence: str

    def to_dict(self) -> dict:
        """JSON-ready form (the CLI's ``curve`` output)."""
        return {"points": [dataclasses.asdict(p) for p in self.points], "n_val": self.n_val,
                "sentence": self.sentence}


def subsample(dataset: ImageDataset, train: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A stratified share of ``train``: each class keeps ``round(n * fraction)`` of its training
    images (at least one), chosen at random with ``seed``."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i in train:
        by_label[dataset.items[i].label].append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(by_label):
        idx = sorted(by_label[label])
        rng.shuffle(idx)
        chosen += idx[:max(1, round(len(idx) * fraction))]
    return sorted(chosen)


def slope_sentence(points: Sequence[CurvePoint]) -> str:
    """Read the curve's end: still rising (more images would help) or flat (vary them instead)."""
    if len(points) < 2:
        return "Not enough points to read a trend."
    last = points[-1]
    half = min(points, key=lambda p: abs(p.fraction - 0.5))
    gain = last.mean - half.mean
    if gain >= RISING:
        return (f"Still rising: going from {half.images_per_class:.0f} to {last.images_per_class:.0f} images "
                f"per class gained {gain * 100:.0f} points, so more images of each class would likely help.")
    return (f"Flat: going from {half.images_per_class:.0f} to {last.images_per_class:.0f} images per class "
            f"changed accuracy by {gain * 100:+.0f} points, so more of the same images won't help much; "
            "try more varied ones (other backgrounds, angles, lighting).")


def learning_curve(dataset: ImageDataset, config: TrainConfig, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                   repeats: int = 3, *, stop: threading.Event | None = None,
                   cache: FeatureCache | None = None) -> Iterator[tuple[float, int, LearningCurve | None]]:
    """Quick-train on growing shares of the training images; validation images stay the same.

    The backbone's features are computed once (the cache) and every point trains only a head,
    so the whole curve costs little more than one Quick training. The full set (fraction 1) is
    trained once: its subsets would all be the same.

    Yields:
        (fraction, repeat, None) after each training, then (1.0, repeats, curve) at the end.
    """
    cfg = dataclasses.replace(config, mode="quick", init_bundle=None)
    split = split_dataset(dataset, cfg.val_fraction, cfg.seed)
    cache = cache if cache is not None else FeatureCache()
    stop = stop or threading.Event()
    n_classes = len(dataset.labels)
    points = []
    for fraction in fractions:
        accuracies = []
        for repeat in range(1 if fraction >= 1.0 else repeats):
            if stop.is_set():
                return
            train = subsample(dataset, split.train, fraction, cfg.seed * 1000 + repeat)
            sub = Split(train, split.val)
            result = None
            for event in fit(dataset, dataclasses.replace(cfg, seed=cfg.seed + repeat), split=sub,
                             stop=stop, cache=cache):
                result = event.result or result
            accuracies.append(result.val_accuracy)
            yield fraction, repeat, None
        train_sizes = len(subsample(dataset, split.train, fraction, cfg.seed * 1000))
        points.append(CurvePoint(fraction, train_sizes / n_classes, tuple(accuracies),
                                 float(np.mean(accuracies)), float(np.std(accuracies))))
        _logger.info("Learning curve: %.0f%% -> %.3f", fraction * 100, points[-1].mean)
    yield 1.0, repeats, LearningCurve(tuple(points), len(split.val), slope_sentence(points))
