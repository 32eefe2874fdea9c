"""Saving and loading a trained model: timm's Hugging Face layout plus our own metadata.

A bundle folder holds:
  config.json        timm's hub config: architecture, num_classes, label_names, model_args and
                     pretrained_cfg with the preprocessing (input size, interpolation, crop, mean, std)
  model.safetensors  the weights
  transfer_gui.json  our metadata: metrics, training history, dataset summary, training config,
                     seed, library versions

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

import timm
import timm.data
import torch
from torch import nn

from . import __version__
from .archive import extract_zip
from .errors import ModelError

__all__ = ["METADATA_FILE", "Bundle", "save_bundle", "zip_bundle", "load_bundle", "library_versions"]

_logger = logging.getLogger(__name__)

METADATA_FILE = "transfer_gui.json"
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

    @property
    def temperature(self) -> float:
        """The calibration temperature saved with the model (1.0 for uncalibrated bundles)."""
        return float((self.metadata.get("calibration") or {}).get("temperature", 1.0))


def save_bundle(result, folder: str | Path, *, dataset_report: dict | None = None,
                evaluation: dict | None = None, calibration: dict | None = None) -> Path:
    """Write a trained model as a bundle folder.

    Args:
        result: a ``training.TrainResult``.
        folder: where to write (created; existing bundle files are overwritten).
        dataset_report: ``DatasetReport.to_dict()`` of the training data.
        evaluation: ``EvalReport.to_dict()`` on the validation images.
        calibration: ``Calibration.to_dict()``; its temperature is applied when the bundle is loaded.

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
        "model_name": result.model_name,
        "weights_source": result.weights_source,
        "labels": list(result.labels),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in result.data_config.items()},
        "training": result.config.to_dict(),
        "seed": result.config.seed,
        "train_seconds": round(result.train_seconds, 3),
        "stopped_by_user": result.stopped,
        "best_epoch": result.best,
        "history": result.history,
        "split": {"train": len(result.split.train), "val": len(result.split.val),
                  "warnings": list(result.split.warnings)},
        "dataset": dataset_report,
        "evaluation": evaluation,
        "calibration": calibration,
        "versions": library_versions(),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    _logger.info("Saved bundle to %s", folder)
    return folder


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (files at the zip's top level)."""
    folder, zip_path = Path(folder), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return zip_path


def _find_config(root: Path) -> Path:
    if (root / "config.json").is_file():
        return root
    found = sorted(p.parent for p in root.rglob("config.json"))
    if not found:
        raise ModelError(f"{root.name} is not a trained-model bundle: it has no config.json. "
                         "Upload the .zip that this app (or `python -m transfer_gui train`) produced.")
    return found[0]


def load_bundle(path: str | Path, workdir: str | Path | None = None) -> Bundle:
    """Load a bundle folder or .zip through timm's own ``local-dir:`` loader.

    Raises:
        ModelError: the path is not a bundle, or its weights do not match its config.
        ArchiveError: a zip that cannot be extracted safely.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist.")
    if path.is_file():
        dest = Path(workdir) / "bundle" if workdir else Path(tempfile.mkdtemp(prefix="tls-bundle-"))
        if dest.exists():
            shutil.rmtree(dest)
        extract_zip(path, dest)
        path = dest
    folder = _find_config(path)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"config.json in {folder.name} is not valid JSON: {exc}") from exc
    labels = config.get("label_names")
    if isinstance(labels, dict):
        labels = [labels[k] for k in sorted(labels, key=int)]
    if not labels or len(labels) != config.get("num_classes"):
        raise ModelError(f"config.json in {folder.name} has no label_names matching num_classes.")
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise ModelError(f"The bundle in {folder.name} could not be loaded: {str(exc).splitlines()[0]}") from exc
    metadata = {}
    if (folder / METADATA_FILE).is_file():
        metadata = json.loads((folder / METADATA_FILE).read_text())
    # JSON gives lists where timm gives tuples; tuples make configs compare equal to training's.
    data_config = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in timm.data.resolve_model_data_config(model).items()}
    return Bundle(model.eval(), list(labels), data_config, metadata, folder)
