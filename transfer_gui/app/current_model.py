"""A session's model as one value (``CurrentModel``): what answers, its bundle, where it came
from and its figures, replaced whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine (torch, timm) loads after the page is served; see server.py
    from ..engine.calibration import Calibration
    from ..engine.evaluation import EvalReport
    from ..engine.inference import Predictor
    from ..engine.training import TrainResult
    from ..engine.workflow import SavedModel, TrainedModel

__all__ = ["CurrentModel"]


@dataclass(frozen=True)
class CurrentModel:
    """A session's model as one value: replaced whole (``Session.model``), never edited, and only
    once the new one exists. A step that reads ``session.model`` once sees one model's parts,
    whatever another step does meanwhile.

    Attributes:
        predictor: what answers pictures.
        folder: its bundle unpacked (what exports and the Hub upload use).
        zip_path: the same bundle as the zip the page offers for download.
        trained: the training in this session that made it (its result, calibration and
            cross-validated figures); None for an uploaded model.
        evaluation: the figures on show: the training's, or a measurement on step 1's images.
    """

    predictor: Predictor
    folder: Path | None = None
    zip_path: Path | None = None
    trained: TrainedModel | None = None
    evaluation: EvalReport | None = None

    @classmethod
    def of_training(cls, trained: TrainedModel) -> "CurrentModel":
        """A model trained (and saved) in this session."""
        return cls(trained.predictor, trained.folder, trained.zip_path, trained, trained.evaluation)

    @classmethod
    def of_upload(cls, saved: SavedModel) -> "CurrentModel":
        """A model the user uploaded: no figures until it is evaluated on step 1's images."""
        return cls(saved.predictor, saved.folder, saved.zip_path)

    @property
    def result(self) -> TrainResult | None:
        """The training run (config, curves, validation), for a model trained here."""
        return self.trained.result if self.trained else None

    @property
    def calibration(self) -> Calibration | None:
        """How its confidences were calibrated, for a model trained here."""
        return self.trained.calibration if self.trained else None
