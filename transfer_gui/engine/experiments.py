"""Showing why transfer learning works: pretrained vs from scratch, and "would more images help?".

* ``compare_with_scratch`` trains the chosen architecture twice on the same split with the same time budget:
  once from its pretrained weights, once from random weights. Its events are tagged with the run
  they belong to, so a UI can draw both on the same plots.
* ``learning_curve`` trains Quick on 25/50/75/100 % of the training images (stratified, seeded,
  repeated), always scored on the same validation images, and reads the slope in a sentence.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .config import TrainConfig
from .data import ImageDataset, Split, split_dataset
from .features import FeatureCache
from .progress import ProgressEvent
from .training import TrainResult, fit

__all__ = ["RUNS", "RUN_TITLES", "RunEvent", "compare_with_scratch", "compare_sentence", "CurvePoint", "LearningCurve",
           "learning_curve", "subsample", "slope_sentence"]

_logger = logging.getLogger(__name__)

RUNS = ("pretrained", "scratch")
RUN_TITLES = {"pretrained": "pretrained", "scratch": "from scratch"}
RISING = 0.03  # accuracy gained from half to all of the images that counts as "still rising"


@dataclass(frozen=True)
class RunEvent:
    """A training event and the run it belongs to ("pretrained" or "scratch")."""

    run: str
    event: ProgressEvent


def compare_with_scratch(dataset: ImageDataset, config: TrainConfig, *, stop: threading.Event | None = None,
                         cache: FeatureCache | None = None) -> Iterator[RunEvent]:
    """Train ``config`` from pretrained weights, then the same architecture from random weights
    on the same split for the same wall-clock time.

    From random weights there are no features worth freezing, so the scratch run trains the whole
    network (fine-tune mode, the backbone at the full learning rate) until it has used as many
    seconds as the pretrained run took, or early stopping ends it first. Runs go one after the
    other (a CPU has no room for two at once). ``stop`` ends the current run (keeping its best
    model) and skips the next. ``cache`` is used for the scratch run only (see below).

    Yields:
        RunEvent values; each run's last event carries its ``TrainResult``.
    """
    split = split_dataset(dataset, config.val_fraction, config.seed)
    stop = stop or threading.Event()
    pretrained_cfg = dataclasses.replace(config, pretrained=True, init_bundle=None)
    budget: float | None = None
    for run in RUNS:
        if stop.is_set():
            return
        if run == "pretrained":
            cfg = pretrained_cfg
        else:
            cfg = dataclasses.replace(config, pretrained=False, weights_file=None, init_bundle=None,
                                      mode="finetune", epochs=1000, backbone_lr_scale=1.0)
        run_stop = threading.Event()  # this run's own stop: the user's Stop, or the time budget
        timer = threading.Timer(budget, run_stop.set) if budget is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            # The pretrained run computes its features afresh (no cache): reused features would
            # make it look faster and shrink the scratch run's time budget to nothing.
            for event in fit(dataset, cfg, split=split, stop=run_stop, cache=None if run == "pretrained" else cache):
                if stop.is_set():
                    run_stop.set()
                if event.result is not None and run == "pretrained":
                    budget = max(1.0, event.result.train_seconds)
                yield RunEvent(run, event)
        finally:
            if timer is not None:
                timer.cancel()


def compare_sentence(results: dict[str, TrainResult]) -> str:
    """One plain sentence with the measured difference, e.g. "pretrained: 83% after 5 s; ..."."""
    parts = []
    for run in RUNS:
        if run in results:
            r = results[run]
            if r.history:
                parts.append(f"{RUN_TITLES[run]}: {r.val_accuracy:.0%} after {r.train_seconds:.0f} s")
            else:
                parts.append(f"{RUN_TITLES[run]}: no finished epoch after {r.train_seconds:.0f} s")
    text = "; ".join(parts) + "."
    if len(results) == 2 and all(r.history for r in results.values()):
        gain = results["pretrained"].val_accuracy - results["scratch"].val_accuracy
        if gain > 0:
            text += (f" Starting from what the model learned on millions of images gained "
                     f"{gain * 100:.0f} points with the same images and the same training budget.")
        else:
            text += " Here, starting from pretrained weights did not help."
    return text[0].upper() + text[1:]


# --- learning curve --------------------------------------------------------------------------------

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
