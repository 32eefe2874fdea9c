"""Pretrained vs from scratch: what pretraining gives, measured as each run goes.

``compare_with_scratch`` trains the chosen architecture twice on the same training images and
checks both on the same held-out images as they learn:

* **pretrained**: Quick, the app's way with pretrained weights. The frozen backbone reads the
  training images a tenth at a time (the classes in turn); after each tenth a new head is fitted
  on the images read so far and checked. Its last head is Quick's own.
* **from scratch**: random weights have no features worth freezing, so the whole network trains
  (AdamW, timm's augmentation, label smoothing), checked every tenth of its time budget. Its
  budget is the pretrained run's seconds, and never under ``seconds`` (20 by default): fewer
  would leave it a handful of steps, and more seconds only make the comparison kinder to it.

Both runs are checked before they learn anything, so both curves start at 0 s, and they have 11
checks each (fewer only when there are under 10 training images). The clock counts training only
(reading the images, fitting, the steps); the checks are not charged to it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import TrainConfig
from .data import ImageDataset, split_dataset
from .distributed import pick_device
from .feature_map import map_sample
from .features import extract_features, make_loader
from .figures import ComparePicture, compare_picture
from .finetune import logits_of, optimiser, scores, train_loader, train_steps
from .preprocessing import model_data_config
from .probe import cross_validate, fit_head, n_folds, stratified_folds
from .speed import fast_paths
from .transforms import eval_transform
from .weights import create_model

__all__ = [
    "CHECKS",
    "COMPARE_SECONDS",
    "MAX_CHECK_IMAGES",
    "RUNS",
    "RUN_TITLES",
    "ComparePoint",
    "Comparison",
    "compare_with_scratch",
]

_logger = logging.getLogger(__name__)

RUNS = ("pretrained", "scratch")
RUN_TITLES = {"pretrained": "pretrained", "scratch": "from scratch"}
# The scratch run's least budget. On two CPU cores the built-in model takes 1.5-2 s a step of 16
# images from random weights, so 20 s is about a dozen steps; a GPU takes far more.
COMPARE_SECONDS = 20.0
# The fixed inverse penalty of the pretrained run's heads before its last: the middle of the
# range Quick's cross-validation chooses from on these sets (probe.PENALTIES).
_STREAM_PENALTY = 0.03
CHECKS = 10  # checks spread over the budget, after the one before the first step
MAX_CHECK_IMAGES = 200  # held-out images checked (a seeded sample beyond): 11 checks stay cheap


@dataclass(frozen=True)
class ComparePoint:
    """One check of a run on the held-out images.

    Attributes:
        seconds: seconds of training so far (checks not counted).
        steps: optimizer steps so far (from scratch), or heads fitted (pretrained).
        accuracy: share of the held-out images classified right.
        loss: their mean cross-entropy.
    """

    seconds: float
    steps: int
    accuracy: float
    loss: float

    @classmethod
    def scored(cls, seconds: float, steps: int, logits: torch.Tensor, targets: torch.Tensor) -> ComparePoint:
        """The check whose answers are ``logits`` for images of classes ``targets``."""
        loss, accuracy = scores(logits.numpy(), targets)
        return cls(seconds, steps, accuracy, loss)


@dataclass
class Comparison:
    """Both runs' checks so far.

    Attributes:
        model: the architecture trained.
        seconds: the scratch run's least budget (it gets the pretrained run's seconds when more).
        n_train, n_checked: training images, and held-out images each check scores.
        chance: accuracy of always answering the largest class of the checked images.
        points: per run ("pretrained", "scratch"), its checks in time order.
        running: the run in progress, or None when both have ended.
        stopped: the user stopped the comparison before both runs used their budget.
        fingerprint: the dataset's fingerprint (what the random features belong to).
        random_features: (dataset indices, their pooled features) through the random-weight
            network before its first step: the images of ``feature_map.map_sample``.
    """

    model: str
    seconds: float
    n_train: int
    n_checked: int
    chance: float
    points: dict[str, list[ComparePoint]] = field(default_factory=lambda: {run: [] for run in RUNS})
    running: str | None = RUNS[0]
    stopped: bool = False
    fingerprint: str = ""
    random_features: tuple[list[int], torch.Tensor] | None = None

    def final(self, run: str) -> ComparePoint | None:
        """The run's last check, or None before its first."""
        return self.points[run][-1] if self.points[run] else None

    def sentence(self) -> str:
        """One plain sentence with the measured difference."""
        parts = []
        for run in RUNS:
            last = self.final(run)
            if last is not None and last.steps:
                parts.append(f"{RUN_TITLES[run]}: {last.accuracy:.0%} after {last.seconds:.0f} s")
        if not parts:
            return "Stopped before either run took a step."
        text = "; ".join(parts) + "."
        pre, scratch = self.final("pretrained"), self.final("scratch")
        if self.running is None and pre is not None and scratch is not None and scratch.steps:
            gain = pre.accuracy - scratch.accuracy
            if gain > 0:
                text += (f" Starting from what the model learned on millions of images gained {gain * 100:.0f} "
                         "points on the same images")
                text += (", though the run from scratch had more time." if scratch.seconds > pre.seconds * 1.5
                         else ".")
            else:
                text += " Here, starting from pretrained weights did not help."
        return text[0].upper() + text[1:]

    def picture(self) -> ComparePicture:
        """Both runs drawn on one seconds axis (see ``figures.compare_picture``)."""
        ended = [RUN_TITLES[run] for run in RUNS if self.points[run] and run != self.running]
        pre = self.final("pretrained")
        return compare_picture({RUN_TITLES[run]: [(p.seconds, p.accuracy) for p in self.points[run]] for run in RUNS},
                               self.chance, max(self.seconds, pre.seconds if pre else 0.0), ended)

    def to_dict(self) -> dict:
        """JSON-ready form (the CLI's ``compare`` output)."""
        return {"model": self.model, "seconds": self.seconds, "n_train": self.n_train, "n_checked": self.n_checked,
                "chance": self.chance, "stopped": self.stopped, "sentence": self.sentence(),
                "runs": {run: [dataclasses.asdict(p) for p in points] for run, points in self.points.items()}}


def _checked(dataset: ImageDataset, val: list[int], seed: int) -> list[int]:
    """The held-out images each check scores: all of them, or a seeded sample of MAX_CHECK_IMAGES."""
    if len(val) <= MAX_CHECK_IMAGES:
        return list(val)
    return sorted(random.Random(seed).sample(list(val), MAX_CHECK_IMAGES))


def _interleaved(dataset: ImageDataset, indices: list[int], seed: int) -> list[int]:
    """``indices`` in a seeded order that takes the classes in turn, so that every early share of
    it has images of every class."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i in indices:
        by_class.setdefault(dataset.items[i].label, []).append(i)
    for members in by_class.values():
        rng.shuffle(members)
    queues = [by_class[label] for label in sorted(by_class)]
    return [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]


def _pretrained_run(dataset: ImageDataset, train_idx: list[int], checked: list[int], config: TrainConfig,
                    stop: threading.Event, device: torch.device) -> Iterator[ComparePoint]:
    """Quick from pretrained weights, measured as it goes: the frozen backbone reads the training
    images a tenth at a time (the classes in turn), and after each tenth a new head is fitted on
    the images read so far and checked. The last head is Quick's own (its setting chosen by
    cross-validation); the ones before use one fixed setting, which costs nothing to choose."""
    torch.manual_seed(config.seed)  # the new head starts the same each time
    loaded = create_model(config.model, len(dataset.labels), weights_file=config.weights_file, pretrained=True,
                          builtin_cache=config.weights_cache)
    paths = fast_paths(device, config.precision)
    model = loaded.model.to(device).eval()
    if paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_config = model_data_config(model)
    targets = torch.tensor(dataset.targets)
    n_classes = len(dataset.labels)
    transform = eval_transform(data_config)

    def features_of(indices: list[int]) -> torch.Tensor:
        loader = make_loader(dataset, indices, transform, paths.batch, False, config.seed)
        *_, (_, feats) = extract_features(model, loader, device, paths)
        return feats

    check_x, check_y = features_of(checked), targets[checked]  # checks are not charged to the clock
    head = model.get_classifier()
    with torch.no_grad():
        logits = check_x @ head.weight.detach().float().cpu().T + head.bias.detach().float().cpu()
    yield ComparePoint.scored(0.0, 0, logits, check_y)
    order = _interleaved(dataset, train_idx, config.seed)
    parts = [part.tolist() for part in np.array_split(np.array(order), min(CHECKS, len(order)))]
    trained, seen, xs = 0.0, 0, []
    for k, part in enumerate(parts, start=1):
        if stop.is_set():
            return
        started = time.perf_counter()
        xs.append(features_of(part))
        seen += len(part)
        x, y = torch.cat(xs), targets[order[:seen]]
        if k == len(parts):
            groups = [dataset.items[i].sha1 for i in order]
            folds = stratified_folds(y.numpy(), n_folds(y.numpy()), config.seed, groups)
            penalty = cross_validate(x, y, n_classes, folds).penalty
        else:
            penalty = _STREAM_PENALTY
        weight, bias = fit_head(x, y, n_classes, penalty)
        trained += time.perf_counter() - started
        yield ComparePoint.scored(round(trained, 3), k, check_x @ weight.T + bias, check_y)


def _scratch_run(dataset: ImageDataset, train_idx: list[int], checked: list[int], config: TrainConfig,
                 seconds: float, stop: threading.Event, device: torch.device, comparison: Comparison
                 ) -> Iterator[ComparePoint]:
    """The whole network from random weights for ``seconds`` of training (the project's one
    training loop, ``finetune.train_steps``), checked before the first step and after every tenth
    of the budget (and when it ends); where a step takes more than a tenth, after every step until
    CHECKS checks. Before the first step it also reads the map's images
    (``comparison.random_features``), off the clock like a check."""
    torch.manual_seed(config.seed)  # the random network starts the same each time
    loaded = create_model(config.model, len(dataset.labels), pretrained=False)
    paths = fast_paths(device, config.precision)
    model = loaded.model.to(device)
    if paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_config = model_data_config(model)
    loader, sampler = train_loader(dataset, train_idx, data_config, config.batch_size, config.seed, {"num_workers": 0})
    check_loader = make_loader(dataset, checked, eval_transform(data_config), paths.batch, False, config.seed,
                               keep="tensor")
    check_y = torch.tensor([dataset.targets[i] for i in checked])
    # a random backbone learns at the head's rate (it has nothing to keep), at one constant rate:
    # the run is too short for a schedule
    opt = optimiser(model, model.get_classifier(), config, device, backbone_lr_scale=1.0)

    def check() -> ComparePoint:
        logits = logits_of(model, check_loader, device, paths)
        model.train()
        return ComparePoint.scored(round(trained, 3), steps, logits, check_y)

    comparison.random_features = _random_features(model, dataset, data_config, config.seed, device, paths)
    trained, steps, checks, next_check, epoch = 0.0, 0, 0, seconds / CHECKS, 0
    yield check()
    while not stop.is_set():
        epoch += 1
        sampler.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        for _ in train_steps(model, loader, opt, device, paths, config.label_smoothing, stop=stop):
            steps += 1
            took = time.perf_counter() - started
            trained += took
            # A step slower than a tenth of the budget (a busy or slow machine) is checked on its
            # own, and the run goes on until CHECKS checks: the curve has as many points on every
            # machine, only its time axis differs.
            due = trained >= next_check or took >= seconds / CHECKS
            ended = stop.is_set() or (trained >= seconds and checks + due >= CHECKS)
            if due or ended:
                yield check()
                checks += 1
                while next_check <= trained:
                    next_check += seconds / CHECKS
            if ended:
                return
            started = time.perf_counter()


def _random_features(model: torch.nn.Module, dataset: ImageDataset, data_config: dict, seed: int,
                     device: torch.device, paths) -> tuple[list[int], torch.Tensor]:
    """The map's images (``feature_map.map_sample``) through the random-weight network."""
    sample = map_sample(len(dataset.items), seed)
    model.eval()
    loader = make_loader(dataset, sample, eval_transform(data_config), paths.batch, False, seed)
    *_, (_, features) = extract_features(model, loader, device, paths)
    return sample, features


def compare_with_scratch(dataset: ImageDataset, config: TrainConfig, seconds: float = COMPARE_SECONDS, *,
                         stop: threading.Event | None = None) -> Iterator[Comparison]:
    """Train ``config.model`` from pretrained weights, then from random weights, on the same
    training images, checking both on the same held-out images as they go (see the module's
    docstring). The scratch run trains for the pretrained run's seconds, or ``seconds`` if more.

    ``stop`` ends the running run after its current step (its last check is still made) and skips
    the next.

    Yields:
        The Comparison after each check (the same object, updated); ``running`` is None on the last.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive (got {seconds})")
    stop = stop or threading.Event()
    split = split_dataset(dataset, config.val_fraction, config.seed)
    checked = _checked(dataset, list(split.val), config.seed)
    counts = torch.bincount(torch.tensor([dataset.targets[i] for i in checked]), minlength=len(dataset.labels))
    comparison = Comparison(config.model, seconds, len(split.train), len(checked),
                            counts.max().item() / max(1, len(checked)), fingerprint=dataset.fingerprint())
    device = pick_device(config.device)
    train = list(split.train)
    for run in RUNS:
        if stop.is_set():
            comparison.stopped = True
            break
        comparison.running = run
        if run == "pretrained":
            points = _pretrained_run(dataset, train, checked, config, stop, device)
        else:
            budget = max(seconds, comparison.final("pretrained").seconds if comparison.points["pretrained"] else 0)
            points = _scratch_run(dataset, train, checked, config, budget, stop, device, comparison)
        for point in points:
            comparison.points[run].append(point)
            _logger.info("Compare %s: %.1f s, %d steps, accuracy %.3f", run, point.seconds, point.steps,
                         point.accuracy)
            yield comparison
    comparison.stopped = comparison.stopped or stop.is_set()
    comparison.running = None
    yield comparison
