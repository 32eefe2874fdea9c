"""The workflows both front-ends run, one function each: the app and the CLI call these.

``finish`` turns a ``TrainResult`` into a ``TrainedModel``: a Predictor, its calibration, and the
figures measured on predictions for images that the model making them had not learned from
(out-of-fold predictions after cross-validation, or a holdout's): accuracy with a 95 % interval,
macro-F1, per-class figures, confusion matrix and mistakes, the expected calibration error, a
reliability table and what a "not sure" threshold means. ``save`` writes the bundle with all of
it; ``finish_training`` is both, and the bundle's zip. ``train_model`` is ``fit`` to the end
followed by ``finish``. ``open_model`` loads a saved bundle with its metadata as a ``SavedModel``,
and ``continuing`` turns a training config into one that continues such a model. ``novelty_check``
fits the "none of these" check that every trained model carries (see novelty.py).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .calibration import Calibration, cross_fitted_probabilities, fit_temperature
from .checks import Check, leakage_check
from .config import TrainConfig
from .data import ImageDataset, Split
from .errors import NothingTrainedError
from .evaluation import (INTERVAL_NAME, EvalReport, ReliabilityBin, ThresholdMeaning, evaluate_predictions,
                         expected_calibration_error, reliability_bins, threshold_meaning, wilson_interval)
from .inference import Predictor
from .features import FeatureCache, extract_features, make_loader
from .distributed import pick_device
from .novelty import MAX_BANK, Novelty, fit_novelty
from .transforms import eval_transform
from .progress import ProgressEvent
from .training import TrainResult, train

__all__ = ["Estimate", "TrainedModel", "SavedModel", "finish", "finish_training", "train_model", "save",
           "open_model", "continuing", "novelty_check"]


@dataclass(frozen=True)
class Estimate:
    """How well the kept model is expected to do on new pictures like these, and how that was
    measured.

    Attributes:
        method: "cross-validation" or "holdout".
        k: folds (1 for a holdout).
        n_images: predictions the figures rest on.
        accuracy: share of them that were right.
        low, high: the 95 % Wilson score interval of the accuracy.
        macro_f1: unweighted mean of the per-class F1 scores.
        ece: expected calibration error (15 bins) of the calibrated confidences, each fold's
            temperature fitted on the other folds (so no prediction helped calibrate itself).
        trained_on_all: the kept model learned from every image.
        note: what was kept and why, in one sentence.
    """

    method: str
    k: int
    n_images: int
    accuracy: float
    low: float
    high: float
    macro_f1: float
    ece: float
    trained_on_all: bool
    note: str

    def how(self) -> str:
        """E.g. "estimated by 5-fold cross-validation on all 80 images"."""
        if self.method == "cross-validation":
            return f"estimated by {self.k}-fold cross-validation on all {self.n_images} images"
        return f"measured on {self.n_images} held-out images"

    def sentence(self) -> str:
        """E.g. "About 82 % right (74-88 %), estimated by 5-fold cross-validation on all 80 images"."""
        return (f"About {self.accuracy:.0%} right ({self.low:.0%}-{self.high:.0%}), {self.how()}")

    def to_dict(self) -> dict:
        """JSON-ready form (the CLI's output and the bundle)."""
        return {"method": self.method, "folds": self.k, "n_images": self.n_images, "accuracy": self.accuracy,
                "interval": [self.low, self.high], "interval_kind": INTERVAL_NAME, "macro_f1": self.macro_f1,
                "ece": self.ece, "trained_on_all_images": self.trained_on_all, "note": self.note}


@dataclass
class TrainedModel:
    """A trained model ready to use and to describe.

    Attributes:
        result: what training returned.
        predictor: the model with its calibration, answering with the training preprocessing.
        calibration: the temperature and the evidence it was fitted on.
        evaluation: per-image results on the checked images (calibrated confidences).
        estimate: the headline figures.
        checked_probs: calibrated, cross-fitted probabilities of the checked images.
        checked_targets: their true classes.
        leakage: checked images byte-identical to an image their model learned from (a copy in
            another fold, or in the training part of a holdout).
        folder, zip_path: the saved bundle and its zip (``finish_training``), else None.
        dataset: the images it was trained on (``result.validation.indices`` index into it).
    """

    result: TrainResult
    predictor: Predictor
    calibration: Calibration
    evaluation: EvalReport
    estimate: Estimate
    checked_probs: np.ndarray
    checked_targets: np.ndarray
    leakage: Check
    folder: Path | None = None
    zip_path: Path | None = None
    dataset: ImageDataset | None = None

    def reliability(self) -> list[ReliabilityBin]:
        """Confidence against observed accuracy on the checked images (15 bins)."""
        return reliability_bins(self.checked_probs, self.checked_targets)

    def threshold(self, threshold: float) -> ThresholdMeaning:
        """What answering "not sure" below ``threshold`` means on the checked images."""
        return threshold_meaning(self.checked_probs, self.checked_targets, threshold)

    def summary(self) -> dict:
        """JSON-ready description of the model and its figures (the command line's ``train``
        output; the page says the same in words with ``estimate.sentence()``)."""
        result, estimate, split = self.result, self.estimate, self.result.split
        if estimate.trained_on_all:  # every image: cross-validated ones, or a holdout's both parts
            n_train = len(split.train) + len(split.val) if split is not None else estimate.n_images
        else:
            n_train = len(split.train)
        return {"model": result.model_name, "mode": result.config.mode, "labels": result.labels,
                "estimate": estimate.to_dict(), "val_accuracy": estimate.accuracy, "val_macro_f1": estimate.macro_f1,
                "ece": estimate.ece, "n_train": n_train, "n_checked": estimate.n_images,
                "best_epoch": result.best.to_dict() if result.best else None,
                "kept": result.best.phase if result.best else None, "train_seconds": round(result.train_seconds, 3),
                "calibration": self.calibration.to_dict()}


def finish(result: TrainResult, dataset: ImageDataset, device: str = "auto") -> TrainedModel:
    """A Predictor for ``result``, calibrated on its checked predictions, and its figures.

    Args:
        result: a finished ``fit`` (its ``validation`` holds the checked predictions).
        dataset: the images it was trained on (``validation.indices`` index into it).
        device: where the Predictor answers.

    Raises:
        NothingTrainedError: the training was stopped before any model was trained.
    """
    validation = result.validation
    if validation is None:
        raise NothingTrainedError("Training was stopped before any model was trained; there is nothing to keep.")
    indices = list(validation.indices)
    all_targets = dataset.targets
    targets = np.array([all_targets[i] for i in indices], dtype=int)
    logits = np.asarray(validation.logits, dtype=np.float64)
    calibration = dataclasses.replace(fit_temperature(logits, targets), fitted_on=validation.method)
    predictor = Predictor(result.model, result.labels, result.data_config, device=device,
                          temperature=calibration.temperature, novelty=novelty_check(result, dataset, device))
    probs = torch.as_tensor(logits / calibration.temperature).softmax(dim=1).numpy()
    evaluation = evaluate_predictions(targets, probs, list(result.labels), [dataset.items[i].rel for i in indices])
    honest = cross_fitted_probabilities(logits, targets, validation.folds)
    right = int((probs.argmax(1) == targets).sum())
    low, high = wilson_interval(right, len(targets))
    estimate = Estimate(validation.method, validation.k, len(targets), evaluation.accuracy, low, high,
                        evaluation.macro_f1, expected_calibration_error(honest, targets), validation.trained_on_all,
                        validation.note)
    if validation.method == "cross-validation":
        leakage = leakage_check(dataset, groups=[int(f) for f in validation.folds])
    else:
        split = result.split
        leakage = split.leakage if split.leakage is not None else leakage_check(dataset, split)
    return TrainedModel(result, predictor, calibration, evaluation, estimate, honest, targets, leakage,
                        dataset=dataset)


def _kept_features(result: TrainResult, dataset: ImageDataset, chosen: list[int], device: str) -> torch.Tensor:
    """The kept model's pooled features of the ``chosen`` images: the ones training started from
    when only the head was trained, else read again through the fine-tuned backbone."""
    if result.features is not None and not result.backbone_trained:
        return result.features[torch.tensor(chosen)]
    dev = pick_device(device)
    model = result.model if dev.type == "cpu" else copy.deepcopy(result.model).to(dev)  # the result stays on the CPU
    loader = make_loader(dataset, chosen, eval_transform(result.data_config), 32, False, result.config.seed)
    *_, (_, features) = extract_features(model, loader, dev)
    return features


def novelty_check(result: TrainResult, dataset: ImageDataset, device: str = "auto") -> Novelty:
    """The "none of these" check of a trained model, its line drawn on its training images (past
    ``MAX_BANK`` of them, on an even sample: the bundle keeps no more, and a fine-tuned model then
    reads only those again)."""
    n = len(dataset.items)
    chosen = list(range(n)) if n <= MAX_BANK else np.linspace(0, n - 1, MAX_BANK).round().astype(int).tolist()
    targets = np.asarray(dataset.targets)[chosen]
    return fit_novelty(_kept_features(result, dataset, chosen, device), targets, result.config.seed,
                       [dataset.items[i].sha1 for i in chosen])


def train_model(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
                stop: threading.Event | None = None, cache: FeatureCache | None = None,
                on_event: Callable[[ProgressEvent], None] | None = None) -> TrainedModel:
    """``training.train`` (``fit`` to its end), then ``finish``: the whole training workflow without a UI."""
    result = train(dataset, config, split=split, stop=stop, cache=cache, on_event=on_event)
    return finish(result, dataset, device=config.device)


def save(trained: TrainedModel, dataset: ImageDataset, folder: str | Path) -> Path:
    """Write ``trained`` as a bundle folder (timm / Hugging Face layout plus its metadata)."""
    from .bundle import save_bundle

    return save_bundle(trained.result, folder, dataset_report=dataset.report.to_dict(),
                       evaluation=trained.evaluation.to_dict(), calibration=trained.calibration.to_dict(),
                       estimate=trained.estimate.to_dict(), novelty=trained.predictor.novelty)


def finish_training(result: TrainResult, dataset: ImageDataset, folder: str | Path, *, device: str = "auto",
                    zip_path: str | Path | None = None) -> TrainedModel:
    """What follows every training: evaluate and calibrate (``finish``), write the bundle to
    ``folder`` and, with ``zip_path``, its zip; the returned model knows both paths."""
    from .bundle import zip_bundle

    trained = finish(result, dataset, device=device)
    trained.folder = save(trained, dataset, folder)
    if zip_path is not None:
        trained.zip_path = zip_bundle(trained.folder, zip_path)
    return trained


@dataclass(frozen=True)
class SavedModel:
    """A bundle from disk, opened: its model ready to answer, and what it says of itself.

    Attributes:
        predictor: the model with its labels, preprocessing and calibration.
        folder: the unpacked bundle (timm / Hugging Face layout).
        zip_path: the bundle's .zip (a copy kept beside the folder), or None when opened from a folder.
        metadata: its ``transfer_gui.json`` (empty for a bundle written elsewhere).
    """

    predictor: Predictor
    folder: Path
    zip_path: Path | None
    metadata: dict

    @property
    def model_name(self) -> str | None:
        """The timm model it was built from, as saved."""
        return self.metadata.get("model_name")

    @property
    def trained_accuracy(self) -> float | None:
        """Its accuracy on the checked images when it was trained, if it says."""
        return (self.metadata.get("evaluation") or {}).get("accuracy")


def open_model(path: str | Path, workdir: str | Path | None = None, *, device: str = "auto", limits=None,
               max_params: int | None = None) -> SavedModel:
    """Open a bundle (folder or .zip) as a ``SavedModel``.

    A .zip is unpacked in ``workdir`` and a copy of it kept there, so it can be downloaded again
    (without ``workdir``: a new temporary folder, and the .zip stays where it is).
    ``limits`` (an ``ArchiveLimits``) and ``max_params`` are ``bundle.load_bundle``'s.

    Raises:
        ModelError, ArchiveError: not a bundle this app can load safely (see ``load_bundle``).
    """
    from .bundle import load_bundle

    path = Path(path)
    bundle = load_bundle(path, workdir, limits, max_params)
    predictor = Predictor(bundle.model, bundle.labels, bundle.data_config, device=device,
                          temperature=bundle.temperature, novelty=bundle.novelty)
    kept = None
    if path.is_file():
        kept = path if workdir is None else Path(workdir) / path.name
        if kept != path:
            shutil.copyfile(path, kept)
    return SavedModel(predictor, bundle.folder, kept, bundle.metadata)


def continuing(config: TrainConfig, saved: SavedModel) -> TrainConfig:
    """``config`` changed to continue training ``saved``: its architecture and its weights (new
    classes are added to its head), whatever model and weights file ``config`` named."""
    return dataclasses.replace(config, model=saved.model_name or config.model, weights_file=None,
                               init_bundle=str(saved.folder))
