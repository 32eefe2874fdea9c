"""Training: ``fit()`` is a generator of small progress events; the quick and fine-tune policies.

Progress leaves through one narrow channel: ``ProgressEvent`` values yielded by ``fit``. The last
event has ``phase == "done"`` and carries the ``TrainResult``. A ``threading.Event`` passed as
``stop`` is checked between batches; when set, training ends at once and the best model so far
is kept.

Policies:
  quick     the backbone stays frozen; features of every image are computed once (and cached per
            dataset and model), then the linear probe (probe.py): an L2 logistic regression whose
            penalty is chosen by stratified k-fold cross-validation, fitted on every image. The
            out-of-fold predictions are the figures shown. Seconds on a CPU.
  finetune  LP-FT (Kumar et al., ICLR 2022; fastai's ``fine_tune``): the quick probe first, then the
            whole network with timm's augmentation, AdamW, warmup + cosine, label smoothing and the
            backbone at a lower learning rate, kept only when it beats the probe on held-out images
            (see ``_finetune_policy``: on small sets the winning number of epochs is then trained
            again on every image).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import timm.data
import timm.scheduler
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, Split, split_dataset
from .transforms import TorchImages, eval_transform, train_transform
from .errors import ModelError, TrainingFailedError
from .probe import PENALTIES, CrossValidation, Fixed, cross_validate, fit_head, holdout_select, n_folds, stratified_folds
from .speed import FastPaths, autocast, fast_paths, tune_process
from .weights import LoadedModel, create_model

__all__ = ["ProgressEvent", "TrainResult", "Validation", "FeatureCache", "fit", "train", "pick_device",
           "extract_features", "CV_MAX_IMAGES", "LARGE_CLASS"]

_logger = logging.getLogger(__name__)

# What a training step can raise that is not a bug in the caller: unreadable files (OSError),
# out of memory (torch.OutOfMemoryError is a RuntimeError), numerical/shape errors inside a model.
_STEP_FAILURES = (RuntimeError, OSError, ValueError, MemoryError)

# Validation tensors kept in memory during fine-tuning: 1000 x 3 x 224 x 224 floats is ~600 MB.
_MAX_KEPT_VAL_TENSORS = 1000


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        phase: "load", "features", "head", "finetune" or "done".
        epoch: 1-based epoch within the phase (0 before the first epoch ends).
        epochs: epochs planned for the phase.
        step: batches done within the epoch (or images done, in "features").
        steps: batches per epoch (or images in all, in "features").
        train_loss: mean training loss so far in this epoch, or None.
        val_loss: validation loss at the end of the epoch, or None mid-epoch.
        val_acc: validation accuracy at the end of the epoch, or None mid-epoch.
        elapsed_s: seconds since ``fit`` started.
        eta_s: estimated seconds left in the whole run, or None when unknown.
        is_best: this epoch has the lowest validation loss so far (its weights are kept).
        message: a one-line status for people.
        result: the TrainResult, only on the final "done" event.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    train_loss: float | None
    val_loss: float | None
    val_acc: float | None
    elapsed_s: float
    eta_s: float | None
    is_best: bool
    message: str
    result: "TrainResult | None" = None


@dataclass
class TrainResult:
    """A trained model and everything needed to describe and reuse it.

    Attributes:
        model: the best model (eval mode, CPU).
        labels: class names; index = output position.
        data_config: the timm preprocessing config used for evaluation and prediction.
        config: the training configuration.
        model_name: the timm model name it was built from.
        create_kwargs: extra ``timm.create_model`` arguments.
        weights_source: where the pretrained weights came from.
        split: the holdout split used (fine-tuning's evidence, a large set, or the one given), or
            None when everything was cross-validated.
        history: one dict per probe setting or finished epoch (phase "head", "finetune" or "refit";
            epoch, train_loss, val_loss, val_acc; "penalty" for probe settings).
        best: the history row of what was kept, or None when nothing was trained (stopped early).
        stopped: True when the user stopped training early.
        train_seconds: wall seconds of the whole run.
        error: why training broke off early (what was kept before it stays), or None.
        validation: how the kept model's figures were measured (None when nothing was trained).
    """

    model: nn.Module
    labels: list[str]
    data_config: dict
    config: TrainConfig
    model_name: str
    create_kwargs: dict
    weights_source: str
    split: Split | None
    history: list[dict]
    best: dict | None
    stopped: bool
    train_seconds: float
    error: str | None = None
    validation: Validation | None = None

    @property
    def val_accuracy(self) -> float:
        """Accuracy of the kept model on images it did not learn from (see ``validation``)."""
        return float(self.best["val_acc"]) if self.best else float("nan")


class FeatureCache:
    """Frozen-backbone features per (model, weights, preprocessing, dataset), for one user.

    Belongs to a session (or a CLI run), never to the module: features of one user's images must
    not be shared with another's. Holds at most ``max_entries`` feature sets, oldest dropped first.
    """

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, key: tuple) -> torch.Tensor | None:
        """The cached features for ``key``, or None."""
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        return None

    def put(self, key: tuple, features: torch.Tensor) -> None:
        """Store features, dropping the oldest entry beyond ``max_entries``."""
        self._store[key] = features
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._store)


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under "auto", else the CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for, but no CUDA GPU is available here; use device auto or cpu.")
    return torch.device(preference)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features: exactly what the classifier sees."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def extract_features(model: nn.Module, loader, device: torch.device, paths: FastPaths | None = None
                     ) -> Iterator[tuple[int, torch.Tensor | None]]:
    """Run the frozen backbone over a loader; yields (images done, None) then (total, features).
    ``paths``: the fast paths to use (the plain fp32 reference when None)."""
    paths = paths or fast_paths(device, "fp32")
    model.eval()
    out: list[torch.Tensor] = []
    done = 0
    for x, _ in loader:
        # The grad mode is per thread, and a web server may resume this generator on another
        # thread after each yield: a mode entered here and left open across a yield would stay
        # switched on in this thread (seen: another user's training then had no gradients). So
        # every context opens and closes between two yields.
        with torch.inference_mode():
            x = x.to(device, non_blocking=True)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, paths):
                out.append(_features(model, x).float().cpu())
        done += len(x)
        yield done, None
    yield done, torch.cat(out) if out else torch.empty(0)


def _set_norm_eval(model: nn.Module) -> None:
    """Keep BatchNorm statistics frozen while fine-tuning.

    With batches of 16 images from a tiny dataset, updating the running statistics replaces
    ImageNet's well-estimated ones with noisy ones; freezing them is the usual small-data practice
    (Keras' transfer-learning guide does the same).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _Run:
    """State of one ``fit`` call; exists only inside it (no shared state between users)."""

    def __init__(self, dataset: ImageDataset, config: TrainConfig, split: Split | None,
                 stop: threading.Event | None, cache: FeatureCache | None, paths: FastPaths):
        self.dataset, self.config, self.split = dataset, config, split
        self.stop = stop or threading.Event()
        self.cache = cache
        self.t0 = time.perf_counter()
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None
        self.stopped = False
        self.error: str | None = None
        self.paths = paths
        self.targets = torch.tensor(dataset.targets)
        self.kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rows, weights, biases
        self.validation: Validation | None = None

    def keep_rows(self, head: nn.Linear, rows: tuple[int, ...]) -> None:
        """Remember head rows that training must leave as they are (a continued model's classes)."""
        if rows:
            index = torch.tensor(rows, device=head.weight.device)
            self.kept = (index, head.weight.detach()[index].clone(), head.bias.detach()[index].clone())

    def restore_rows(self, head: nn.Linear) -> None:
        """Put the kept rows back after an optimizer step (AdamW's decay would move them too)."""
        if self.kept is not None:
            index, weight, bias = self.kept
            with torch.no_grad():
                head.weight[index] = weight.to(head.weight.dtype)
                head.bias[index] = bias.to(head.bias.dtype)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def event(self, phase: str, epoch: int, epochs: int, step: int, steps: int, *,
              train_loss=None, val_loss=None, val_acc=None, eta_s=None, is_best=False,
              message: str = "") -> ProgressEvent:
        return ProgressEvent(phase, epoch, epochs, step, steps, train_loss, val_loss, val_acc,
                             self.elapsed(), eta_s, is_best, message)

    def add_row(self, phase: str, epoch: int, train_loss: float, val_loss: float | None, val_acc: float | None,
                **extra) -> dict:
        """Add a finished epoch (or a probe setting) to the history."""
        row = {"phase": phase, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_acc": val_acc, "elapsed_s": round(self.elapsed(), 3), **extra}
        self.history.append(row)
        return row

    def snapshot(self, model: nn.Module) -> None:
        """Keep a copy of the model's current weights as the ones to return."""
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
        stop: threading.Event | None = None, cache: FeatureCache | None = None
        ) -> Iterator[ProgressEvent]:
    """Train a classifier on ``dataset``; yields ProgressEvents, the last one carrying the result.

    Args:
        dataset: the labelled images.
        config: the one training configuration.
        split: a train/validation split (computed from ``config`` when None).
        stop: set it (from any thread) to end training between batches, keeping the best weights.
        cache: a per-user FeatureCache, so retraining the same data and model skips the backbone.

    Yields:
        ProgressEvent values; the final one has phase "done" and ``result`` set.

    Raises:
        ModelError, WeightsUnavailableError: the model cannot be created.
    """
    # Seed the global RNGs too: timm's augmentations draw from them. Training runs one at a time
    # per process (the app's training slot), so this does not disturb another user's run.
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    given_split = split
    device = pick_device(config.device)
    tune_process()
    run = _Run(dataset, config, split, stop, cache, fast_paths(device, config.precision))
    _logger.info("Training on %s: %s", device, run.paths.describe())

    what = f"the saved model from {Path(config.init_bundle).name}" if config.init_bundle else config.model
    yield run.event("load", 0, 0, 0, 0, message=f"Loading {what}...")
    if config.init_bundle:
        from .bundle import continue_from

        loaded = continue_from(config.init_bundle, list(dataset.labels))
    else:
        loaded = create_model(config.model, len(dataset.labels), weights_file=config.weights_file,
                              pretrained=config.pretrained)
    model = loaded.model.to(device)
    if run.paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_config = timm.data.resolve_model_data_config(model)
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ModelError(f"{config.model} has no single linear classifier head; pick another model.")

    run.keep_rows(head, loaded.known_classes)
    try:
        features = yield from _cached_features(run, model, loaded, data_config, device)
        if not run.stopped:
            policy = _finetune_policy(run, model, head, features, data_config, device, given_split) \
                if config.mode == "finetune" else _quick(run, model, head, features, given_split)
            run.validation = yield from policy
    except _STEP_FAILURES as exc:
        # A file that vanished or broke since it was read, memory running out, a numerical error:
        # the run ends, and the model kept so far (if any) is kept like after Stop.
        _logger.exception("Training %s failed after %.1f s", config.model, run.elapsed())
        if run.best_state is None or run.validation is None:
            raise TrainingFailedError(f"Training broke off before the first model was trained: {exc}. "
                                      "Nothing was kept; check the images and press Train again.") from exc
        run.error = f"{type(exc).__name__}: {exc}"
        run.validation = dataclasses.replace(run.validation,
                                             note=f"Training broke off with an error. {run.validation.note}")

    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    result = TrainResult(model, list(dataset.labels), dict(data_config), config, loaded.name,
                         loaded.create_kwargs, loaded.source, run.split, run.history, run.best,
                         run.stopped, run.elapsed(), run.error, run.validation)
    if run.best is None:  # stopped while reading the images: no model was trained
        yield ProgressEvent("done", 0, 0, 0, 0, None, None, None, run.elapsed(), 0.0, False,
                            "Stopped before any model was trained.", result)
        return
    what = "Broke off with an error" if run.error else "Stopped" if run.stopped else "Finished"
    yield ProgressEvent("done", run.best["epoch"], run.best["epoch"], 0, 0, run.best["train_loss"],
                        run.best["val_loss"], run.best["val_acc"], run.elapsed(), 0.0, True,
                        f"{what}: {run.validation.note}", result)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``'s initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_shards(local: torch.Tensor, n_all: int, device: torch.device) -> torch.Tensor:
    """Every process's rows (rank r holds rows r, r+world, ...) back in dataset order, everywhere."""
    rank, world = distributed_rank()
    size = -(-n_all // world)
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((size, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[:len(local)] = local.to(backend_device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    out = torch.empty((n_all, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, n_all, world))
        out[r::world] = part[:count].cpu()
    return out


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over all processes (the values themselves in a single process)."""
    if distributed_rank()[1] == 1:
        return values
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def _loader(dataset: ImageDataset, indices: list[int], transform, batch_size: int, shuffle: bool,
            seed: int, keep: str | None = None, shorter_side: int | None = None
            ) -> torch.utils.data.DataLoader:
    items = [dataset.items[i] for i in indices]
    all_targets = dataset.targets  # computed per call: take it once, not once per index
    targets = [all_targets[i] for i in indices]
    gen = torch.Generator().manual_seed(seed)
    # num_workers=0: on a 2-core machine the model already uses both cores, and worker processes
    # inside a web server thread cost more than decoding small images in-line. It also lets the
    # dataset keep decoded images between epochs (workers would each keep their own copy).
    return torch.utils.data.DataLoader(TorchImages(items, targets, transform, keep, shorter_side),
                                       batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       num_workers=0)


def _cached_features(run: _Run, model: nn.Module, loaded: LoadedModel, data_config: dict,
                     device: torch.device):
    """Features of every image through the frozen backbone, from the cache when possible."""
    cfg = run.config
    key = (loaded.name, loaded.source, str(cfg.weights_file), str(cfg.init_bundle), cfg.pretrained,
           tuple(sorted((k, str(v)) for k, v in data_config.items())), run.dataset.fingerprint())
    cached = run.cache.get(key) if run.cache is not None else None
    if cached is not None:
        yield run.event("features", 0, 0, len(cached), len(cached), eta_s=None,
                        message="Image features reused from the last run")
        return cached
    n_all = len(run.dataset.items)
    rank, world = distributed_rank()
    mine = list(range(rank, n_all, world))  # under torchrun each process reads its share
    n = len(mine)
    loader = _loader(run.dataset, mine, eval_transform(data_config), run.paths.batch, False, cfg.seed)
    start, last = time.perf_counter(), 0.0
    features = None
    for done, feats in extract_features(model, loader, device, run.paths):
        if feats is not None:
            features = feats
            break
        if run.stop.is_set():
            run.stopped = True
            return None
        now = time.perf_counter()
        if now - last >= cfg.progress_interval_s or done == n:
            last = now
            rate = (now - start) / done
            yield run.event("features", 0, 0, done, n, eta_s=rate * (n - done),
                            message=f"Reading images with the pretrained model: {done}/{n}")
    if world > 1:
        features = _gather_shards(features, n_all, device)
    if run.cache is not None:
        run.cache.put(key, features)
    return features


# The probe is cross-validated up to this many images (k-fold on cached features costs well under
# a second at 100 images and ~10 s at 2,000 on two CPU cores); above it one holdout of a few
# hundred images is reliable, and k fits would cost k times as much.
CV_MAX_IMAGES = 2000
# Fine-tuning on a small set takes its evidence from one holdout and then trains again on every
# image; from this many images in the smallest class, the holdout alone is trusted (its quarter
# is 25+ images a class) and the refit, which would double a long run, is skipped.
LARGE_CLASS = 100


@dataclass(frozen=True)
class Validation:
    """How the figures shown for a trained model were measured: predictions on images that the
    model making them did not learn from.

    Attributes:
        method: "cross-validation" (every image, each judged by the fold model that did not see it)
            or "holdout" (a held-out share of the images).
        k: number of folds (1 for a holdout).
        indices: the dataset images that have such a prediction.
        folds: the fold of each entry of ``indices``.
        logits: (len(indices), classes) their logits.
        trained_on_all: the kept model learned from every image (the checked ones too).
        note: one plain sentence on what was kept and why.
    """

    method: str
    k: int
    indices: tuple[int, ...]
    folds: np.ndarray
    logits: np.ndarray
    trained_on_all: bool
    note: str

    def describe(self) -> str:
        """E.g. "5-fold cross-validation on all 80 images"."""
        if self.method == "cross-validation":
            return f"{self.k}-fold cross-validation on all {len(self.indices)} images"
        return f"{len(self.indices)} held-out images"

    def to_dict(self) -> dict:
        """JSON-ready summary (the logits stay out)."""
        return {"method": self.method, "folds": self.k, "n_images": len(self.indices),
                "trained_on_all_images": self.trained_on_all, "note": self.note}


def _fixed(run: _Run) -> Fixed | None:
    if run.kept is None:
        return None
    index, weight, bias = run.kept
    return Fixed(tuple(index.tolist()), weight.cpu(), bias.cpu())


def _set_head(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.device, head.bias.dtype))


def _probe_events(run: _Run, choice: CrossValidation, how: str):
    """One history row and one event per penalty tried (they are found together, in a second)."""
    n = len(choice.scores)
    for i, (penalty, loss, acc, train_loss) in enumerate(choice.scores, start=1):
        row = run.add_row("head", i, train_loss, loss, acc, penalty=penalty)
        chosen = penalty == choice.penalty
        if chosen:
            run.best = row
        yield run.event("head", i, n, 1, 1, train_loss=train_loss, val_loss=loss, val_acc=acc, is_best=chosen,
                        message=f"Training the new head: setting {i}/{n} checked by {how}, accuracy {acc:.0%}")


def _probe(run: _Run, model: nn.Module, head: nn.Linear, features: torch.Tensor, indices: list[int],
           held_out: list[int] | None):
    """Fit the linear probe on ``indices``, its penalty chosen by k-fold cross-validation there
    (or, past CV_MAX_IMAGES, on ``held_out``). Sets the head; returns (choice, logits of
    ``held_out`` or None)."""
    cfg = run.config
    y = run.targets
    n_classes = head.out_features
    idx = torch.tensor(indices)
    x_in, y_in = features[idx], y[idx]
    fixed = _fixed(run)
    if len(indices) <= CV_MAX_IMAGES or held_out is None:
        yield run.event("head", 0, len(PENALTIES), 0, 1,
                        message=f"Training the new head: trying {len(PENALTIES)} settings, each checked by "
                                "cross-validation...")
        groups = [run.dataset.items[i].sha1 for i in indices]
        folds = stratified_folds(y_in.numpy(), n_folds(y_in.numpy()), cfg.seed, groups)
        choice = cross_validate(x_in, y_in, n_classes, folds, fixed=fixed)
        yield from _probe_events(run, choice, f"{choice.k}-fold cross-validation")
        weight, bias = fit_head(x_in, y_in, n_classes, choice.penalty, fixed=fixed)
    else:  # a large set: choose on the holdout itself
        yield run.event("head", 0, len(PENALTIES), 0, 1,
                        message=f"Training the new head: trying {len(PENALTIES)} settings on the held-out images...")
        everything = sorted(indices + held_out)
        pos = {i: p for p, i in enumerate(everything)}
        choice, (weight, bias) = holdout_select(features[torch.tensor(everything)], y[torch.tensor(everything)],
                                                n_classes, [pos[i] for i in indices], [pos[i] for i in held_out],
                                                fixed=fixed)
        yield from _probe_events(run, choice, "the held-out images")
    _set_head(head, weight, bias)
    run.restore_rows(head)  # a continued model's classes exactly as saved (not via standardisation)
    held_logits = None
    if held_out is not None:
        with torch.no_grad():
            held_logits = (features[torch.tensor(held_out)] @ weight.T + bias).numpy()
        loss, acc = _scores(held_logits, y[torch.tensor(held_out)])
        run.best = {**run.best, "val_loss": loss, "val_acc": acc}  # the figures on the held-out images
    run.snapshot(model)
    return choice, held_logits


def _holdout_folds(run: _Run, indices: Sequence[int]) -> np.ndarray:
    """Folds over held-out images (for cross-fitted calibration error)."""
    y = run.targets[torch.tensor(list(indices))].numpy()
    return stratified_folds(y, n_folds(y), run.config.seed)


def _quick(run: _Run, model: nn.Module, head: nn.Linear, features: torch.Tensor, split: Split | None):
    """Quick: the probe alone. Cross-validated on every image, then fitted on all of them; or, on
    a given split (or a large set), fitted on its training part and checked on its held-out part."""
    n = len(run.dataset.items)
    if split is None and n <= CV_MAX_IMAGES:
        everything = list(range(n))
        choice, _ = yield from _probe(run, model, head, features, everything, None)
        run.validation = Validation("cross-validation", choice.k, tuple(everything), choice.folds, choice.logits, True,
                          f"The new head was trained on all {n} images with the setting that did best in "
                          f"{choice.k}-fold cross-validation.")
        return run.validation
    split = split or split_dataset(run.dataset, run.config.val_fraction, run.config.seed)
    run.split = split
    _, logits = yield from _probe(run, model, head, features, split.train, split.val)
    run.validation = Validation("holdout", 1, tuple(split.val), _holdout_folds(run, split.val), logits, False,
                                f"The new head was trained on {len(split.train)} images and checked on "
                                f"{len(split.val)} held-out ones.")
    return run.validation


def _finetune_policy(run: _Run, model: nn.Module, head: nn.Linear, features: torch.Tensor, data_config: dict,
                     device: torch.device, split: Split | None):
    """LP-FT, kept only when it beats the probe on held-out images.

    * Small sets (no split given, smallest class under LARGE_CLASS images): the probe is
      cross-validated and fitted on every image, as in Quick. Then the evidence: on one holdout,
      a probe fitted on the rest is fine-tuned and checked after every epoch. If its best epoch
      fixes clearly more held-out images than it breaks against that probe (a sign test, see
      SIGN_TEST_LEVEL), the network is fine-tuned again from the all-image probe, on every
      image, for that many epochs; otherwise the all-image probe is kept.
    * Large sets, or a given split: the probe and the fine-tuned network both learn from the
      training part and are compared on the held-out part by the same test; the winner is kept
      as trained.
    """
    cfg = run.config
    counts = np.bincount(run.targets.numpy())
    small = split is None and counts[counts > 0].min() < LARGE_CLASS and len(run.targets) <= CV_MAX_IMAGES
    if not small:
        split = split or split_dataset(run.dataset, cfg.val_fraction, cfg.seed)
        run.split = split
        _, probe_logits = yield from _probe(run, model, head, features, split.train, split.val)
        folds = _holdout_folds(run, split.val)
        run.validation = Validation("holdout", 1, tuple(split.val), folds, probe_logits, False,
                                    f"The new head was trained on {len(split.train)} images.")
        outcome = yield from _finetune(run, model, head, data_config, device, split.train, split.val,
                                       cfg.resolved_epochs, "finetune")
        verdict = _judge(outcome, probe_logits, run.targets[torch.tensor(split.val)])
        if verdict is not None and verdict.wins:
            run.best_state = outcome.state
            run.best = next(r for r in run.history if r["phase"] == "finetune" and r["epoch"] == outcome.epoch)
            return Validation("holdout", 1, tuple(split.val), folds, outcome.logits, False,
                              f"Fine-tuned on {len(split.train)} images and kept: at its best epoch "
                              f"({outcome.epoch}), {verdict.sentence(len(split.val))}.")
        return dataclasses.replace(run.validation, note=_probe_kept(run, verdict, len(split.val)))
    # a small set: the cross-validated probe on every image first; it is kept unless beaten
    quick = yield from _quick(run, model, head, features, None)
    # what stays if fine-tuning does not get to its end (an error): the quick model
    run.validation = dataclasses.replace(quick, note="Fine-tuning did not finish, so the quick model (the new "
                                                     "head alone, trained on all images) was kept.")
    probe_state, probe_row = run.best_state, run.best
    if run.stopped:
        return quick
    evidence = split_dataset(run.dataset, cfg.val_fraction, cfg.seed)
    run.split = evidence
    tr, va = torch.tensor(evidence.train), torch.tensor(evidence.val)
    weight, bias = fit_head(features[tr], run.targets[tr], head.out_features, probe_row["penalty"], fixed=_fixed(run))
    probe_logits = (features[va] @ weight.T + bias).numpy()
    _set_head(head, weight, bias)
    run.restore_rows(head)
    outcome = yield from _finetune(run, model, head, data_config, device, evidence.train, evidence.val,
                                   cfg.resolved_epochs, "finetune")
    verdict = _judge(outcome, probe_logits, run.targets[va])
    if verdict is None or not verdict.wins or run.stopped:
        return dataclasses.replace(quick, note=_probe_kept(run, verdict, len(evidence.val)))
    model.load_state_dict(probe_state)  # start again from the pretrained backbone and the all-image head
    refit = yield from _finetune(run, model, head, data_config, device, list(range(len(run.targets))), None,
                                 outcome.epoch, "refit")
    if refit is None:  # stopped during the refit: the probe stays
        return dataclasses.replace(quick, note="Fine-tuning on all images was stopped before it finished, so the "
                                               "quick model (trained on all images) was kept.")
    run.best_state = refit.state
    run.best = {**run.history[-1], "val_loss": outcome.loss, "val_acc": outcome.acc}
    return Validation("holdout", 1, tuple(evidence.val), _holdout_folds(run, evidence.val), outcome.logits, True,
                      f"Fine-tuning clearly beat the quick model: {verdict.sentence(len(evidence.val))}; so the "
                      f"network was then fine-tuned on all {len(run.targets)} images for the {outcome.epoch} "
                      "epoch(s) that did best there.")


@dataclass(frozen=True)
class _Outcome:
    """The best epoch of a fine-tuning run on held-out images."""

    epoch: int
    loss: float
    acc: float
    logits: np.ndarray
    state: dict | None = None  # the weights of that epoch


def _scores(logits: np.ndarray, targets: torch.Tensor) -> tuple[float, float]:
    """(log-loss, accuracy) of ``logits`` against ``targets``."""
    t = torch.as_tensor(logits, dtype=torch.float32)
    return F.cross_entropy(t, targets.long()).item(), (t.argmax(1) == targets).float().mean().item()


# Fine-tuning must fix clearly more held-out pictures than it breaks: a one-sided sign test
# (exact binomial on the pictures the two models disagree on) at this level. Measured with the
# plain rule "more right wins" instead (benchmarks/bench_engine.py, 10 images per class, 3 seeds
# of openclipart-8 and Fashion-MNIST): fine-tuning was kept in 5 of 6 runs on 16-20 held-out
# images, and scored 1.8 points under the probe on new images on average.
SIGN_TEST_LEVEL = 0.1


@dataclass(frozen=True)
class _Verdict:
    """Fine-tuning against the probe on the same held-out images."""

    fixed: int  # right after fine-tuning, wrong with the probe
    broke: int  # the other way round
    p_value: float  # of so many fixes or more among the disagreements, were both equally good
    probe_acc: float
    tuned_acc: float

    @property
    def wins(self) -> bool:
        return self.fixed > self.broke and self.p_value <= SIGN_TEST_LEVEL

    def sentence(self, n_val: int) -> str:
        return (f"on {n_val} held-out images it got {self.tuned_acc:.0%} right against the quick model's "
                f"{self.probe_acc:.0%} ({self.fixed} fixed, {self.broke} broken)")


def _judge(outcome: _Outcome | None, probe_logits: np.ndarray, targets: torch.Tensor) -> _Verdict | None:
    """Compare the fine-tuned epoch's held-out answers with the probe's, picture by picture."""
    if outcome is None:
        return None
    y = targets.numpy()
    probe_right = np.asarray(probe_logits).argmax(1) == y
    tuned_right = np.asarray(outcome.logits).argmax(1) == y
    fixed, broke = int((tuned_right & ~probe_right).sum()), int((probe_right & ~tuned_right).sum())
    n = fixed + broke
    p_value = sum(math.comb(n, i) for i in range(fixed, n + 1)) / 2 ** n if n else 1.0
    return _Verdict(fixed, broke, p_value, float(probe_right.mean()), float(tuned_right.mean()))


def _probe_kept(run: _Run, verdict: _Verdict | None, n_val: int) -> str:
    if run.stopped or verdict is None:
        return ("Fine-tuning was stopped before it had shown that it beats the quick model, so the quick model "
                "(the new head alone) was kept.")
    return (f"Fine-tuning did not clearly beat the quick model: {verdict.sentence(n_val)}, so the quick model (the "
            "new head alone) was kept.")


def _param_groups(model: nn.Module, head: nn.Linear, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: head vs backbone (``lr_scale``, applied by timm's scheduler), no decay on
    biases and norm weights (the usual practice: decaying them only hurts)."""
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        p.requires_grad_(True)
        groups.setdefault((id(p) in head_ids, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr_scale": 1.0 if is_head else cfg.backbone_lr_scale,
             "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (is_head, no_decay), ps in groups.items()]


def _evaluate(model: nn.Module, loader, n: int, device: torch.device, paths: FastPaths) -> torch.Tensor:
    """Logits (on the CPU, in the loader's order) of the ``n`` images a loader holds, summed over
    the processes under torchrun."""
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            x = x.to(device)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, paths):
                out.append(model(x).float().cpu())
    local = torch.cat(out) if out else torch.empty(0, model.get_classifier().out_features)
    # under torchrun each process scored every world-th image: every process gets them all, so
    # all of them keep the same best epoch and stop early together
    return _gather_shards(local, n, device) if distributed_rank()[1] > 1 else local


def _finetune(run: _Run, model: nn.Module, head: nn.Linear, data_config: dict, device: torch.device,
              train_idx: Sequence[int], val_idx: Sequence[int] | None, epochs: int, phase: str):
    """The whole network on ``train_idx``: timm's augmentation, AdamW with the backbone at a lower
    learning rate, warmup + cosine, label smoothing, BatchNorm statistics frozen.

    With ``val_idx`` the held-out images are checked after every epoch, training stops early
    when they stop improving, and the best epoch is returned (weights, held-out logits); without
    them (a refit on every image) all ``epochs`` run and the last one is returned. Returns None
    when stopped or when no epoch finished. The caller decides what to keep.
    """
    cfg = run.config
    # Decode each image once, not once per epoch: training keeps a copy about 1.5x the input size
    # (augmentation crops and resizes it anyway), validation keeps its exact evaluation tensors.
    # Both live only as long as this run.
    side = int(data_config["input_size"][-1] * 1.5)
    rank, world = distributed_rank()
    all_targets = run.dataset.targets
    train_images = TorchImages([run.dataset.items[i] for i in train_idx], [all_targets[i] for i in train_idx],
                               train_transform(data_config), keep="decoded", shorter_side=side, seed=cfg.seed)
    # One sampler for one process or many: the shuffled order depends only on (seed, epoch), and
    # under torchrun process r takes every world-th image of it. So the images of one step,
    # summed over the processes, are exactly those of the single-process step, and with each
    # image's augmentation fixed by (seed, epoch, image) too, N processes compute what one does.
    sampler = torch.utils.data.DistributedSampler(train_images, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed)
    train_loader = torch.utils.data.DataLoader(train_images, batch_size=max(1, cfg.batch_size // world),
                                               sampler=sampler, num_workers=0)
    val_loader = None
    if val_idx is not None:
        val_idx = list(val_idx)
        val_keep = "tensor" if len(val_idx) <= _MAX_KEPT_VAL_TENSORS else None
        val_loader = _loader(run.dataset, val_idx[rank::world], eval_transform(data_config), run.paths.batch,
                             False, cfg.seed, keep=val_keep)
        val_targets = torch.tensor([all_targets[i] for i in val_idx])
    # DDP averages gradients over the processes after each backward (gloo on CPU, nccl on GPU)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps = len(train_loader)
    opt = torch.optim.AdamW(_param_groups(model, head, cfg), lr=cfg.resolved_lr)
    sched = timm.scheduler.CosineLRScheduler(
        opt, t_initial=epochs * steps, lr_min=cfg.resolved_lr * 0.01,
        warmup_t=int(cfg.warmup_epochs * steps), warmup_lr_init=cfg.resolved_lr * 0.01,
        t_in_epochs=False)
    # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and run.paths.autocast_dtype == torch.float16)
    title = "Fine-tuning on all images" if val_idx is None else "Fine-tuning"
    phase_start = time.perf_counter()
    since_best, updates, last_emit = 0, 0, time.perf_counter()
    best: _Outcome | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        if cfg.pretrained:  # a random backbone has no statistics worth keeping
            _set_norm_eval(model)
        sampler.set_epoch(epoch)
        train_images.epoch = epoch
        total, seen = 0.0, 0
        for step, (x, y) in enumerate(train_loader, start=1):
            if run.stop.is_set():
                run.stopped = True
                return best if val_idx is not None else None
            x, y = x.to(device), y.to(device)
            if run.paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, run.paths):
                loss = F.cross_entropy(net(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            run.restore_rows(head)
            scaler.update()
            updates += 1
            sched.step_update(updates)
            total += loss.item() * len(y)
            seen += len(y)
            now = time.perf_counter()
            if now - last_emit >= cfg.progress_interval_s and step < steps:
                last_emit = now
                per_step = (now - phase_start) / updates
                yield run.event(phase, epoch - 1, epochs, step, steps, train_loss=total / seen,
                                eta_s=per_step * (epochs * steps - updates),
                                message=f"{title}: epoch {epoch}/{epochs}, batch {step}/{steps}")
        if run.stop.is_set():
            run.stopped = True
            return best if val_idx is not None else None
        total, seen = _all_sum([total, seen], device)
        last_emit = time.perf_counter()
        per_epoch = (last_emit - phase_start) / epoch
        if val_loader is None:  # a refit: nothing held out, every epoch runs
            run.add_row(phase, epoch, total / seen, None, None)
            yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen,
                            eta_s=per_epoch * (epochs - epoch), message=f"{title}: epoch {epoch}/{epochs}")
            best = _Outcome(epoch, float("nan"), float("nan"), np.zeros(0),
                            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                            if epoch == epochs else None)
            continue
        logits = _evaluate(model, val_loader, len(val_idx), device, run.paths)
        val_loss, val_acc = _scores(logits.numpy(), val_targets)
        run.add_row(phase, epoch, total / seen, val_loss, val_acc)
        is_best = best is None or val_loss < best.loss - 1e-6 or not cfg.select_best
        if is_best:
            best = _Outcome(epoch, val_loss, val_acc, logits.numpy(),
                            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        since_best = 0 if is_best else since_best + 1
        early = since_best >= cfg.patience
        yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen,
                        val_loss=val_loss, val_acc=val_acc,
                        eta_s=0.0 if early else per_epoch * (epochs - epoch), is_best=is_best,
                        message=f"{title}: epoch {epoch}/{epochs}, accuracy on held-out images {val_acc:.0%}"
                                + (" (no better for a while: stopping early)" if early else ""))
        if early:
            break
    return best


def train(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
          stop: threading.Event | None = None, cache: FeatureCache | None = None,
          on_event=None) -> TrainResult:
    """Run ``fit`` to the end and return its result; ``on_event`` sees every event on the way."""
    result = None
    for event in fit(dataset, config, split=split, stop=stop, cache=cache):
        if on_event is not None:
            on_event(event)
        result = event.result or result
    assert result is not None  # fit always ends with a "done" event
    return result
