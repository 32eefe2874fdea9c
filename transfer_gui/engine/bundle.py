"""Saving and loading a trained model: timm's Hugging Face layout plus our own metadata.

A bundle folder holds:
  config.json        timm's hub config: architecture, num_classes, label_names, model_args and
                     pretrained_cfg with the preprocessing (input size, interpolation, crop, mean, std)
  model.safetensors  the weights
  transfer_gui.json  our metadata: metrics, training history, dataset summary, training config,
                     seed, library versions
  README.md          the model card (see card.py)
  novelty.safetensors  training pictures' features for the "none of these" check (see novelty.py)

so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds the model on its own, and
the same folder can be pushed to the Hugging Face Hub as it is.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import timm
import torch
from safetensors import SafetensorError
from torch import nn

from .. import __version__
from .archive import ArchiveLimits, extract_zip
from .card import model_card
from .config import public_model_name
from .errors import DataError, ModelError, without_paths
from .names import ModelName, class_names
from .novelty import NOVELTY_FILE, Novelty, load_novelty
from .preprocessing import MAX_INPUT_SIDE, check_pretrained_cfg, model_data_config

if TYPE_CHECKING:  # training imports this module (continue_from)
    from .training import TrainResult

__all__ = ["METADATA_FILE", "CARD_FILE", "Bundle", "save_bundle", "read_card", "zip_bundle", "load_bundle", "library_versions",
           "continue_from"]

_logger = logging.getLogger(__name__)

METADATA_FILE = "transfer_gui.json"
CARD_FILE = "README.md"  # the model card: what the Hugging Face Hub shows on the model's page
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    """Versions that decide whether a bundle reproduces: Python, torch, timm, this package."""
    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "transfer_gui": __version__}


@dataclass
class Bundle:
    """A loaded bundle: the model, its labels, its preprocessing and its metadata."""

    model: nn.Module
    labels: list[str]
    data_config: dict
    metadata: dict
    folder: Path
    novelty: Novelty | None = None

    @property
    def temperature(self) -> float:
        """The calibration temperature saved with the model (1.0 for uncalibrated bundles); checked
        by ``load_bundle``."""
        return float((self.metadata.get("calibration") or {}).get("temperature", 1.0))


# What a bundle's config.json may pass to timm.create_model besides num_classes: what save_bundle
# writes (timm's in_chans and global_pool, and a catalog model's create_kwargs). Anything else
# (depth, widths, ...) could make timm build a model of any size before a single check.
_MODEL_ARGS = {"img_size": range(32, MAX_INPUT_SIDE + 1), "in_chans": (3,),
               "global_pool": ("", "avg", "max", "avgmax", "catavgmax", "fast", "token", "map", "avgmaxc")}
# Temperatures this app could have written, old bundles included (before the bounded fit, one was
# 0.145); outside this, probabilities are flipped (negative), NaN (zero) or meaningless.
_TEMPERATURES = (0.01, 100.0)


def _check_config(config: dict, folder: Path, limits: ArchiveLimits, max_params: int | None) -> list[str]:
    """The bundle's labels, after refusing a config.json that would build something unexpected:
    class names that are no ``ClassName``, preprocessing this app would not use (an input of
    4096 px costs gigabytes per picture), model arguments it does not write, a model too large."""
    import timm

    labels = config.get("label_names")
    if isinstance(labels, dict):
        labels = [labels[k] for k in sorted(labels, key=lambda k: int(k) if str(k).isdigit() else -1)]
    n = config.get("num_classes")
    if not isinstance(labels, list) or not labels or len(labels) != n:
        raise ModelError(f"config.json in {folder.name} has no label_names matching num_classes.")
    if n > limits.max_classes:
        raise ModelError(f"This model has {n} classes; the limit here is {limits.max_classes}.")
    try:
        labels = class_names(labels, f"config.json of {folder.name}")
    except DataError as exc:
        raise ModelError(str(exc)) from exc
    if len(set(labels)) != len(labels):
        raise ModelError(f"config.json in {folder.name} names a class twice; each class needs its own name.")
    check_pretrained_cfg(config.get("pretrained_cfg"), f"config.json of {folder.name}")
    arch = config.get("architecture")
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise ModelError(f"config.json in {folder.name} names the architecture {str(arch)[:80]!r}, which timm does not "
                         "have. Upload a bundle this app (or its command line) trained.")
    args = config.get("model_args") or {}
    if not isinstance(args, dict):
        raise ModelError(f"config.json in {folder.name} has model_args that are not a mapping.")
    unknown = sorted(k for k in args if k != "num_classes" and k not in _MODEL_ARGS)
    bad = sorted(k for k, allowed in _MODEL_ARGS.items() if k in args and args[k] not in allowed)
    if unknown or bad:
        raise ModelError(f"config.json in {folder.name} sets model_args this app does not write "
                         f"({', '.join(unknown + bad)[:200]}), which could build a different or far larger model. "
                         f"A bundle may set only: {', '.join(_MODEL_ARGS)}.")
    if max_params is not None:
        from .weights import count_parameters

        count = count_parameters(arch, n, {k: v for k, v in args.items() if k != "num_classes"})
        if count > max_params:
            raise ModelError(f"This model has {count / 1e6:,.0f} million parameters; this server allows up to "
                             f"{max_params / 1e6:,.0f} million.")
    return labels


def _read_metadata(folder: Path, architecture: str) -> dict:
    """transfer_gui.json (empty when absent), with what this app reads from it checked: the
    calibration temperature, the model name (which must name the architecture of config.json:
    continuing and retraining build that name) and the accuracy it reports."""
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{METADATA_FILE} in {folder.name} is not valid JSON ({exc}); remove it to load the "
                         "model without its training record.") from exc
    if not isinstance(metadata, dict):
        raise ModelError(f"{METADATA_FILE} in {folder.name} is not a JSON object; remove it to load the model.")
    calibration = metadata.get("calibration") or {}
    if not isinstance(calibration, dict):
        raise ModelError(f"The calibration entry of {METADATA_FILE} is not a JSON object; remove it to load the "
                         "model uncalibrated.")
    t = calibration.get("temperature", 1.0)
    low, high = _TEMPERATURES
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not low <= t <= high:
        raise ModelError(f"{METADATA_FILE} gives the calibration temperature {str(t)[:40]!r}; it must be a number "
                         f"from {low} to {high:g}. Remove the calibration entry to load the model uncalibrated.")
    if metadata.get("model_name") is not None:
        name = ModelName(metadata["model_name"], METADATA_FILE)
        if name.architecture is not None and name.architecture != architecture:
            raise ModelError(f"{METADATA_FILE} names the model {name}, but config.json holds a {architecture[:80]}. "
                             "Upload the .zip that this app (or its command line) wrote, unchanged.")
        metadata["model_name"] = name
    evaluation = metadata.get("evaluation")
    accuracy = evaluation.get("accuracy") if isinstance(evaluation, dict) else None
    if evaluation is not None and not (isinstance(evaluation, dict) and (accuracy is None or (
            isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) and 0 <= accuracy <= 1))):
        raise ModelError(f"The evaluation entry of {METADATA_FILE} is not one this app writes; remove it to load "
                         "the model without its figures.")
    return metadata


def save_bundle(result: TrainResult, folder: str | Path, *, dataset_report: dict | None = None,
                evaluation: dict | None = None, calibration: dict | None = None,
                estimate: dict | None = None, novelty: Novelty | None = None) -> Path:
    """Write a trained model as a bundle folder.

    Args:
        result: a ``training.TrainResult``.
        folder: where to write (created; existing bundle files are overwritten).
        dataset_report: ``DatasetReport.to_dict()`` of the training data.
        evaluation: ``EvalReport.to_dict()`` on the checked images (out-of-fold or held out).
        calibration: ``Calibration.to_dict()``; its temperature is applied when the bundle is loaded.
        estimate: ``workflow.Estimate.to_dict()``: the headline figures and how they were measured.
        novelty: the "none of these" check, written to ``novelty.safetensors`` (None: none).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    timm.models.save_for_hf(
        result.model, str(folder),
        model_config={"label_names": list(result.labels)},
        model_args=dict(result.create_kwargs) or None,
        safe_serialization=True,
        data_config=dict(result.data_config),
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_name": public_model_name(result.model_name),
        "weights_source": result.weights_source,
        "labels": list(result.labels),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in result.data_config.items()},
        "training": result.config.to_dict(),
        "seed": result.config.seed,
        "train_seconds": round(result.train_seconds, 3),
        "stopped_by_user": result.stopped,
        "best_epoch": result.best.to_dict() if result.best else None,
        "history": [row.to_dict() for row in result.history],
        "validation": result.validation.to_dict() if result.validation is not None else None,
        "split": {"train": len(result.split.train), "val": len(result.split.val),
                  "warnings": list(result.split.warnings)} if result.split is not None else None,
        "estimate": estimate,
        "dataset": dataset_report,
        "evaluation": evaluation,
        "calibration": calibration,
        "novelty": novelty.to_dict() if novelty is not None else None,
        "versions": library_versions(),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    if novelty is not None:
        novelty.save(folder)
    else:
        (folder / NOVELTY_FILE).unlink(missing_ok=True)  # an older check would not fit this model
    (folder / CARD_FILE).write_text(model_card(json.loads(json.dumps(metadata, default=str))))
    _logger.info("Saved bundle %s", folder.name)
    return folder


def read_card(folder: str | Path) -> str:
    """A bundle's model card as Markdown, without the YAML header the Hub reads ("" when it has
    none: a bundle written elsewhere)."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split("---", 2)[2].lstrip() if text.startswith("---") else text


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (files at the zip's top level)."""
    folder, zip_path = Path(folder), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return zip_path


# Weight formats a bundle must not carry: loading any of them can run code stored in the file
# (Python pickles), and a loader that falls back to one when model.safetensors is missing would.
_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")


def _find_config(root: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("config.json"))
    if not found:
        raise ModelError(f"{root.name} is not a trained-model bundle: it has no config.json. "
                         "Upload the .zip that this app (or `python -m transfer_gui train`) produced.")
    if len(found) > 1:
        raise ModelError(f"{root.name} holds {len(found)} config.json files, so it is not clear which model "
                         "to load. Upload the .zip of one bundle, as this app or the CLI wrote it.")
    return found[0]


def _check_weights(folder: Path) -> Path:
    """The bundle's ``model.safetensors``; refuse bundles without it or with pickled weights."""
    pickled = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in _PICKLE_SUFFIXES)
    if pickled:
        raise ModelError(f"This bundle contains {', '.join(pickled[:3])}: weights in that format can run code "
                         "when loaded, so they are not accepted. A bundle holds its weights in "
                         "model.safetensors only.")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{folder.name} has no model.safetensors, so it is not a bundle this app can load. "
                         "Upload the .zip that this app (or `python -m transfer_gui train`) produced.")
    return weights


def load_bundle(path: str | Path, workdir: str | Path | None = None,
                limits: ArchiveLimits | None = None, max_params: int | None = None) -> Bundle:
    """Load a bundle folder or .zip: the architecture from its ``config.json`` (timm's
    ``local-dir:`` layout), the weights from its ``model.safetensors`` only.

    Nothing is built before the config passed its checks: a known timm architecture, no
    ``model_args`` but the ones this app writes, and (with ``max_params``) a size counted on the
    ``meta`` device.

    Args:
        path: a bundle folder or its .zip.
        workdir: where a .zip is unpacked (a new temporary folder when None).
        limits: what a .zip may unpack to, and the most classes (defaults when None).
        max_params: the largest model allowed (None: no cap).

    Raises:
        ModelError: the path is not a bundle, it has no model.safetensors, it holds pickled
            weights or more than one config.json, its config or calibration is not one this app
            writes, it is over a limit, or its weights do not match its config.
        ArchiveError: a zip that cannot be extracted safely.
    """
    limits = limits or ArchiveLimits()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist.")
    if path.is_file():
        dest = Path(workdir) / "bundle" if workdir else Path(tempfile.mkdtemp(prefix="tls-bundle-"))
        if dest.exists():
            shutil.rmtree(dest)
        extract_zip(path, dest, limits)
        path = dest
    folder = _find_config(path)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"config.json in {folder.name} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"config.json in {folder.name} is not a JSON object.")
    labels = _check_config(config, folder, limits, max_params)
    weights = _check_weights(folder)
    metadata = _read_metadata(folder, config["architecture"])
    try:
        # the architecture from config.json, the weights only from model.safetensors (never through
        # a loader that could fall back to a pickle)
        model = timm.create_model(f"local-dir:{folder}", pretrained=False)
        model.load_state_dict(safetensors.torch.load_file(str(weights)), strict=True)
    except (RuntimeError, OSError, KeyError, ValueError, SafetensorError) as exc:
        raise ModelError(f"The bundle in {folder.name} could not be loaded: {without_paths(str(exc).splitlines()[0])}") from exc
    data_config = model_data_config(model, f"config.json of {folder.name}")
    novelty = load_novelty(folder, int(getattr(model, "head_hidden_size", None) or model.num_features))
    return Bundle(model.eval(), list(labels), data_config, metadata, folder, novelty)


def continue_from(folder: str | Path, labels: list[str], max_params: int | None = None):
    """A bundle's model, ready to train further on data with ``labels``.

    The head grows to ``labels``: each class the bundle knows keeps its trained row (matched by
    name, wherever it now sorts; training leaves these rows as they are), each new class starts at
    zero, so before any training the model answers exactly as before for its old classes.

    Returns:
        a ``weights.LoadedModel`` (source "bundle").

    Raises:
        DataError: the data lacks classes the model knows (training on it would make the model
            forget them).
        ModelError: not a bundle, or its model has no single linear head.
    """
    from .weights import LoadedModel

    bundle = load_bundle(folder, max_params=max_params)
    missing = [label for label in bundle.labels if label not in labels]
    if missing:
        raise DataError(
            f"The model knows classes that have no images here: {', '.join(missing)}. Add some images "
            "of every class it knows (training without them would make it forget them), or train a "
            "new model instead.")
    model = bundle.model
    old = model.get_classifier()
    if not isinstance(old, nn.Linear):
        raise ModelError("This bundle's model has no single linear classifier head; it cannot grow new classes.")
    weight, bias = old.weight.detach().clone(), old.bias.detach().clone()
    model.reset_classifier(len(labels))
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for i, label in enumerate(bundle.labels):
            j = labels.index(label)
            head.weight[j] = weight[i]
            head.bias[j] = bias[i]
    config = json.loads((bundle.folder / "config.json").read_text())
    name = bundle.metadata.get("model_name") or config.get("architecture")
    new = [label for label in labels if label not in bundle.labels]
    _logger.info("Continuing from %s: %d known classes, %d new (%s)", bundle.folder.name, len(bundle.labels),
                 len(new), ", ".join(new))
    # num_classes is the head's, which just grew; the rest (e.g. img_size) still describes the model
    kwargs = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    return LoadedModel(model.eval(), name, "bundle", kwargs,
                       tuple(labels.index(label) for label in bundle.labels))
