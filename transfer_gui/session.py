"""One browser session's state: its data, model, training run and files.

A ``Session`` is the value of the app's ``gr.State``: Gradio creates one per page load, so nothing
here is shared between users. Its files live in its own temporary folder, removed by ``close()``
(called when the tab closes, or when Gradio expires the state).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .calibration import Calibration
from .data import ImageDataset
from .evaluation import EvalReport
from .inference import Predictor
from .training import FeatureCache, TrainResult

__all__ = ["Session", "new_session"]

_logger = logging.getLogger(__name__)

class Session:
    """Everything one user has built so far.

    A plain class, not a dataclass: Gradio serialises dataclass values of components, and a lock
    cannot be serialised.

    Attributes:
        id: a short random id (log lines, folder names).
        workdir: this session's private folder for uploads, extractions and bundles.
        dataset: the image set in use, or None.
        classes: the Teachable-Machine-style class builder: class name -> image files.
        result: the last training result (kept even when training was stopped).
        predictor: a Predictor for ``result``.
        evaluation: the validation report of ``result``.
        calibration: the temperature fitted for ``predictor`` on the validation images.
        heat_cache: (image path, class) -> heat-map overlay, so toggling heat maps is instant.
        bundle_zip: the downloadable bundle of the current model (trained or loaded).
        bundle_folder: the same bundle unpacked (what exports and the Hub upload use).
        loaded: a bundle the user uploaded: (predictor, folder, zip) or None. It stays the current
            model until a new training finishes, and is what "continue training" starts from.
        export_zip: the last export (TorchScript + ONNX + labels) as a zip.
        stop: set to stop the running training between batches.
        training: held while this session trains; a new run waits for a stopped one to finish.
        cache: frozen-backbone features of this session's data, reused by later runs.
        closed: the session ended; its files are gone.
        last_error: the message of the last failed training, for the status line.
    """

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"tls-session-{self.id}-"))
        self.dataset: ImageDataset | None = None
        self.classes: dict[str, list[Path]] = {}
        self.result: TrainResult | None = None
        self.predictor: Predictor | None = None
        self.evaluation: EvalReport | None = None
        self.calibration: Calibration | None = None
        self.heat_cache: dict[tuple[str, str], object] = {}
        self.bundle_zip: Path | None = None
        self.bundle_folder: Path | None = None
        self.loaded: tuple[Predictor, Path, Path] | None = None
        self.export_zip: Path | None = None
        self.stop = threading.Event()
        self.training = threading.Lock()
        self.cache = FeatureCache()
        self.closed = False
        self.last_error: str | None = None

    def __deepcopy__(self, memo):
        # Gradio deep-copies a State's initial value per session; ours is built fresh per session
        # by the factory already, and locks/events cannot be copied.
        return self

    def new_folder(self, name: str) -> Path:
        """A fresh, empty sub-folder of this session's workdir."""
        folder = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        return folder

    def reset_model(self) -> None:
        """Forget the trained model (the data changed, or a new training starts); an uploaded
        model, if any, becomes the current one again."""
        self.result = self.evaluation = self.calibration = self.export_zip = None
        self.predictor, self.bundle_folder, self.bundle_zip = self.loaded or (None, None, None)
        self.heat_cache = {}

    def close(self) -> None:
        """Stop any training and delete this session's files. Safe to call more than once."""
        self.closed = True
        self.stop.set()
        if self.training.acquire(timeout=30):  # let a running step finish before deleting its files
            self.training.release()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _logger.info("Session %s closed", self.id)


def new_session() -> Session:
    """A fresh Session: the ``gr.State`` factory, called once per page load."""
    return Session()
