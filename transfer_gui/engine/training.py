"""Training: ``fit()``, a generator of small progress events, runs one policy (policies.py).

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
            (see ``policies.lp_ft``: on small sets the winning number of epochs is then trained
            again on every image).

The policies are ``policies.POLICIES``, by ``TrainConfig.mode``.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, Split
from .distributed import pick_device
from .errors import ModelError, TrainingFailedError, without_paths
from .features import FeatureCache, cached_features
from .policies import POLICIES, STEP_FAILURES, Setup, Validation
from .preprocessing import model_data_config
from .progress import EpochRecord, ProgressEvent, Run
from .speed import fast_paths
from .weights import LoadedModel, create_model

__all__ = ["TrainResult", "fit", "train"]

_logger = logging.getLogger(__name__)

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
        history: one row per probe setting or finished epoch.
        best: the history row of what was kept, or None when nothing was trained (stopped early).
        stopped: True when the user stopped training early.
        train_seconds: wall seconds of the whole run.
        error: why training broke off early (what was kept before it stays), or None.
        validation: how the kept model's figures were measured (None when nothing was trained).
        features: the starting backbone's pooled features of every dataset image (what the head
            was first fitted on), or None when training stopped before they were read.
    """

    model: nn.Module
    labels: list[str]
    data_config: dict
    config: TrainConfig
    model_name: str
    create_kwargs: dict
    weights_source: str
    split: Split | None
    history: list[EpochRecord]
    best: EpochRecord | None
    stopped: bool
    train_seconds: float
    error: str | None = None
    validation: Validation | None = None
    features: torch.Tensor | None = None

    @property
    def backbone_trained(self) -> bool:
        """The kept model's backbone was fine-tuned, so ``features`` are not what it sees."""
        return self.best is not None and self.best.phase != "head"

    @property
    def val_accuracy(self) -> float:
        """Accuracy of the kept model on images it did not learn from (see ``validation``)."""
        return float(self.best.val_acc) if self.best else float("nan")


def fit(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
        stop: threading.Event | None = None, cache: FeatureCache | None = None
        ) -> Iterator[ProgressEvent]:
    """Train a classifier on ``dataset``; yields ProgressEvents, the last one carrying the result.

    Args:
        dataset: the labelled images.
        config: the one training configuration (``config.mode`` names the policy, see POLICIES).
        split: a train/validation split (computed from ``config`` when None).
        stop: set it (from any thread) to end training between batches, keeping the best weights.
        cache: a per-user FeatureCache, so retraining the same data and model skips the backbone.

    Yields:
        ProgressEvent values; the final one has phase "done" and ``result`` set.

    Raises:
        ModelError, WeightsUnavailableError: the model cannot be created.
        TrainingFailedError: a step failed before any model was trained.
    """
    # Seed the global RNGs: creating the model (a new head, or a whole random network) and dropout
    # while fine-tuning draw from them (augmentations are seeded per image, see TorchImages). They
    # are the process's: with one training slot (the default) a run has them to itself and repeats
    # exactly; with more slots, runs in parallel threads draw from the same generators, and a seed
    # then still fixes the split, the folds and the augmentations, but not those draws.
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = pick_device(config.device)
    run = Run(dataset, config, split, stop, cache, fast_paths(device, config.precision, config.loader_workers))
    _logger.info("Training on %s: %s", device, run.paths.describe())
    what = f"the saved model from {Path(config.init_bundle).name}" if config.init_bundle else config.model
    yield run.event("load", 0, 0, 0, 0, message=f"Loading {what}...")
    loaded, model = _build(run, device)
    data_config = model_data_config(model)
    validation = features = None
    try:
        features = yield from cached_features(run, model, loaded, data_config, device)
        if not run.stopped:
            setup = Setup(model, model.get_classifier(), features, data_config, device, split)
            validation = yield from POLICIES[config.mode](run, setup)
    except STEP_FAILURES as exc:
        # A file that vanished or broke since it was read, memory running out, a numerical error,
        # before the policy had a model to keep (after that, the policy keeps it).
        _logger.exception("Training %s failed after %.1f s", config.model, run.elapsed())
        raise TrainingFailedError(f"Training broke off before the first model was trained: {without_paths(str(exc))}. "
                                  "Nothing was kept; check the images and press Train again.") from exc
    yield _done(run, model, loaded, data_config, validation, features)


def _build(run: Run, device: torch.device) -> tuple[LoadedModel, nn.Module]:
    """The model to train (pretrained, or a continued bundle), on ``device``, the rows of a
    continued model's classes kept as they are."""
    config = run.config
    if config.init_bundle:
        from .bundle import continue_from

        loaded = continue_from(config.init_bundle, list(run.dataset.labels))
    else:
        loaded = create_model(config.model, len(run.dataset.labels), weights_file=config.weights_file,
                              pretrained=config.pretrained, builtin_cache=config.weights_cache)
    model = loaded.model.to(device)
    if run.paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ModelError(f"{config.model} has no single linear classifier head; pick another model.")
    run.keep_rows(head, loaded.known_classes)
    return loaded, model


def _done(run: Run, model: nn.Module, loaded: LoadedModel, data_config: dict,
          validation: Validation | None, features: torch.Tensor | None) -> ProgressEvent:
    """The last event: the kept weights back on the CPU, and the result."""
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    error = validation.error if validation is not None else None
    result = TrainResult(model, list(run.dataset.labels), dict(data_config), run.config, loaded.name,
                         loaded.create_kwargs, loaded.source, run.split, run.history, run.best,
                         run.stopped, run.elapsed(), error, validation,
                         features.cpu() if features is not None else None)
    if run.best is None or validation is None:  # stopped while reading the images: no model was trained
        return ProgressEvent("done", 0, 0, 0, 0, None, None, None, run.elapsed(), 0.0, False,
                             "Stopped before any model was trained.", result)
    what = "Broke off with an error" if error else "Stopped" if run.stopped else "Finished"
    best = run.best
    return ProgressEvent("done", best.epoch, best.epoch, 0, 0, best.train_loss, best.val_loss, best.val_acc,
                         run.elapsed(), 0.0, True, f"{what}: {validation.note}", result)


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
