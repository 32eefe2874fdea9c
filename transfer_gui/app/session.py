"""One browser session's state: its data, model, training run and files.

The server's registry holds one ``Session`` per browser tab (see registry.py), so nothing here is
shared between users. Its files live in its own folder, made when something is first stored
(a session that never stores anything costs no disk), removed by ``close()`` (when the registry
ends the session) and, failing that, when the Session object itself is garbage-collected or the
process exits. The folder's size is capped per session.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..engine.archive import size_text
from ..engine.errors import UserInputError
from .current_model import CurrentModel

if TYPE_CHECKING:  # the engine (torch, timm) loads after the page is served; see server.py
    from .check_step import Review
    from ..engine.calibration import Calibration
    from ..engine.comparison import Comparison
    from ..engine.data import ImageDataset
    from ..engine.evaluation import EvalReport
    from ..engine.inference import Predictor
    from ..engine.labelling import Pile
    from ..engine.feature_map import MapPicture
    from ..engine.features import FeatureCache
    from ..engine.training import TrainResult
    from ..engine.workflow import SavedModel, TrainedModel

__all__ = ["Session", "DiskQuotaError", "SessionClosedError", "TooManyEventsError", "folder_bytes"]

_logger = logging.getLogger(__name__)

class DiskQuotaError(UserInputError):
    """The session's folder would grow beyond its cap."""


class SessionClosedError(UserInputError):
    """The session ended (its tab closed or it expired) and its files are gone."""


class TooManyEventsError(UserInputError):
    """One session has as many events running or waiting as it may."""


# Gradio's queue here only ever holds short events (trainings wait in the server's own line, and
# their events start at once), so a place held longer than this belongs to an event that Gradio
# dropped before it started (its tab closed, or it was cancelled): the place is given back.
QUEUED_PLACE_S = 120.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed; a file with several hard
    links, such as a class builder's picture that the data set also uses, counts once)."""
    total, seen = 0, set()
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed meanwhile
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


class Session:
    """Everything one user has built so far.

    A plain class, not a dataclass: Gradio serialises dataclass values of components, and a lock
    cannot be serialised.

    Attributes:
        id: a short random id (log lines, folder names).
        workdir: this session's private folder for uploads, extractions and bundles.
        dataset: the image set in use, or None.
        classes: the Teachable-Machine-style class builder: class name -> image files.
        model: the current model (trained here, or uploaded) as one value, or None; ``trained``,
            ``result``, ``predictor``, ``evaluation``, ``calibration``, ``bundle_folder`` and
            ``bundle_zip`` read its parts.
        heat_cache: (image path, class) -> heat-map overlay, so toggling heat maps is instant.
        comparison: the last pretrained-vs-scratch comparison (its random-weight features feed
            the map of what the model sees), or None.
        model_trials: the last "try every built-in model", best first, or None.
        feature_map: the map picture on show in the Results step (to turn a click into an image).
        pile: unlabelled pictures being sorted (step 7), with the decisions so far, or None.
        filed: test pictures filed under a class (step 5), by class: they join the next training.
        review: the current model's pictures to check and the label changes made (step 4), or None.
        sorted_zip: the last zip of sorted pictures (step 7), or None.
        loaded: a model the user uploaded, or None. It stays the current model until a new
            training finishes, and is what "continue training" starts from.
        export_zip: the last export (TorchScript + ONNX + labels) as a zip.
        stop: set to stop the running training between batches.
        training: held while this session trains; a new run waits for a stopped one to finish.
        cache: frozen-backbone features of this session's data, reused by later runs.
        closed: the session ended; its files are gone.
        last_error: the message of the last failed training, for the status line.
        disk_limit: the most bytes this session's folder may hold.

    Args:
        root: the folder to create the session's folder in (the app's own; the system temp
            folder when None).
        disk_limit: bytes the session may store.
        server_room: bytes the whole server may still store (all sessions share it); None: no
            server-wide budget.
    """

    def __init__(self, root: str | Path | None = None, disk_limit: int = 3 * 1024**3,
                 server_room: Callable[[], int] | None = None, queued_place_s: float = QUEUED_PLACE_S) -> None:
        self.id = uuid.uuid4().hex[:8]
        self._workdir = Path(root or tempfile.gettempdir()) / f"tls-session-{self.id}-{uuid.uuid4().hex[:8]}"
        # Whatever way the session ends (closed, expired, evicted, process exit), its folder goes
        # with it.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._workdir), True)
        self.disk_limit = disk_limit
        self._server_room = server_room
        self._filling: set[Path] = set()  # folders from new_folder not kept or dropped yet
        self._events = 0  # running now
        self._queued: deque[float] = deque()  # when each event admitted to the queue (not started) was
        self._queued_place_s = queued_place_s
        self._events_lock = threading.Lock()
        self._current: dict[str, Path] = {}
        self.dataset: ImageDataset | None = None
        self.classes: dict[str, list[Path]] = {}
        self.model: CurrentModel | None = None
        self.heat_cache: dict[tuple[str, str], object] = {}
        self.comparison: Comparison | None = None
        self.model_trials: list | None = None  # engine.model_trials.ModelTrial, best first
        self.pile: Pile | None = None
        self.filed: dict[str, list[Path]] = {}
        self.review: Review | None = None
        self.sorted_zip: Path | None = None
        self.feature_map: MapPicture | None = None
        self.loaded: SavedModel | None = None
        self.export_zip: Path | None = None
        self.stop = threading.Event()
        self.training = threading.Lock()
        self._cache: FeatureCache | None = None
        self.closed = False
        self.last_error: str | None = None

    @property
    def workdir(self) -> Path:
        """This session's private folder, made on first use (never again once the session closed:
        a step still in flight must not bring back a deleted folder)."""
        if not self.closed and not self._workdir.is_dir():
            self._workdir.mkdir(mode=0o700, exist_ok=True)
        return self._workdir

    # The current model's parts, read-only: the model changes only as a whole (use_trained,
    # use_evaluation, use_loaded).
    @property
    def trained(self) -> TrainedModel | None:
        """The model trained in this session with its figures, or None."""
        return self.model.trained if self.model else None

    @property
    def result(self) -> TrainResult | None:
        """The current model's training run, or None."""
        return self.model.result if self.model else None

    @property
    def predictor(self) -> Predictor | None:
        """What answers pictures, or None before any model."""
        return self.model.predictor if self.model else None

    @property
    def evaluation(self) -> EvalReport | None:
        """The current model's figures on show, or None."""
        return self.model.evaluation if self.model else None

    @property
    def calibration(self) -> Calibration | None:
        """The current model's calibration, or None."""
        return self.model.calibration if self.model else None

    @property
    def bundle_folder(self) -> Path | None:
        """The current model's bundle, unpacked."""
        return self.model.folder if self.model else None

    @property
    def bundle_zip(self) -> Path | None:
        """The current model's bundle as a zip."""
        return self.model.zip_path if self.model else None

    @property
    def is_empty(self) -> bool:
        """Nothing of the user's is here yet: no images, classes, model or pile, no job running.
        Such a session costs nothing to lose, and ends after a few idle minutes."""
        return (self.dataset is None and not self.classes and self.loaded is None and self.trained is None
                and self.pile is None and not self.training.locked() and not self._workdir.exists())

    @property
    def cache(self) -> FeatureCache:
        """This session's feature cache, made on first use: the page builds a Session before the
        engine (torch) is imported."""
        if self._cache is None:
            from ..engine.features import FeatureCache

            self._cache = FeatureCache()
        return self._cache

    def __deepcopy__(self, memo):
        # Gradio deep-copies a State's value when it stores it; a Session is the server's, found
        # by the registry (Server.event), and its locks and events cannot be copied.
        return self

    def new_folder(self, name: str) -> Path:
        """A fresh, empty sub-folder of this session's workdir.

        Folders of the same ``name`` left by failed attempts are removed first; the one in use
        (see ``keep_folder``) stays until a new one replaces it, and so do folders that another
        request of this session is still filling (two batches at once must not delete each
        other's files).
        """
        self.check_open()
        with self._events_lock:
            busy = {self._current.get(name), *self._filling}
            for old in self.workdir.glob(f"{name}-*"):
                if old not in busy:
                    shutil.rmtree(old, ignore_errors=True)
            folder = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
            # No parents=True: a step still in flight when the session closed must not re-create the
            # deleted workdir (seen in CI: a closed tab's folder came back and was never removed).
            folder.mkdir()
            self._filling.add(folder)
        return folder

    def check_open(self) -> None:
        """Raise SessionClosedError if this session has ended; call before writing files."""
        if self.closed:
            raise SessionClosedError("This session has ended and its files were deleted. "
                                     "Reload the page to start again.")

    def keep_folder(self, name: str, folder: Path) -> None:
        """``folder`` (from ``new_folder(name)``) is now the one in use; the previous one is deleted,
        so replacing data or models does not pile up copies."""
        with self._events_lock:
            previous = self._current.get(name)
            self._current[name] = folder
            self._filling.discard(folder)
        if previous is not None and previous != folder:
            shutil.rmtree(previous, ignore_errors=True)

    def drop_folder(self, folder: Path) -> None:
        """Delete a folder from ``new_folder`` that will not be kept (its request failed)."""
        with self._events_lock:
            self._filling.discard(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def disk_used(self) -> int:
        """Bytes this session's folder holds now."""
        return folder_bytes(self.workdir)

    def room(self) -> int:
        """Bytes this session may still store: its own room, or the server's if that is less."""
        own = max(0, self.disk_limit - self.disk_used())
        return min(own, self._server_room()) if self._server_room is not None else own

    def require_room(self, needed: int, what: str) -> None:
        """Raise DiskQuotaError unless ``needed`` more bytes fit under this session's cap and the
        server's budget."""
        used = self.disk_used()
        if used + needed > self.disk_limit:
            raise DiskQuotaError(
                f"{what} needs {size_text(needed)}, and this session already stores {size_text(used)} "
                f"of its {size_text(self.disk_limit)}. Use fewer or smaller images, or reload the page "
                "to start a fresh session.")
        self.require_server_room(needed, what)

    def require_server_room(self, needed: int, what: str) -> None:
        """Raise DiskQuotaError unless ``needed`` more bytes fit in the server's budget."""
        if self._server_room is not None and needed > self._server_room():
            raise DiskQuotaError(f"{what} needs {size_text(needed)}, and the server's disk budget for all its "
                                 "users is nearly used up. Try again later, or with fewer or smaller images.")

    def admit_event(self, most: int) -> None:
        """Let one more event of this session into the server's queue, unless ``most`` of its
        events already wait or run: one user flooding the queue gets refusals, while everyone
        else's events still find room in it.

        Raises:
            TooManyEventsError: ``most`` events of this session wait or run.
        """
        with self._events_lock:
            queued = self._waiting()
            if queued + self._events >= most:
                raise TooManyEventsError(f"This session already has {queued + self._events} requests waiting "
                                         "or running; wait for them to finish, then try again.")
            self._queued.append(time.monotonic())

    def _waiting(self) -> int:
        """Events admitted to the queue and not started, without those Gradio dropped meanwhile
        (held longer than ``QUEUED_PLACE_S``). Call with ``_events_lock`` held."""
        deadline = time.monotonic() - self._queued_place_s
        while self._queued and self._queued[0] < deadline:
            self._queued.popleft()
        return len(self._queued)

    def check_room_for_event(self, most: int) -> None:
        """Raise ``TooManyEventsError`` when ``most`` events of this session wait or run, without
        taking a place (for events that are not counted: they start and end in a moment)."""
        with self._events_lock:
            if self._waiting() + self._events >= most:
                raise TooManyEventsError(f"This session already has {self._waiting() + self._events} requests "
                                         "waiting or running; wait for them to finish, then try again.")

    def begin_event(self, most: int) -> None:
        """Count one event of this session as running: one admitted to the queue moves from
        waiting to running; one that bypassed the queue is refused when ``most`` already run.
        Each call that returns is matched by one ``end_event``.

        Raises:
            TooManyEventsError: ``most`` events of this session are running.
        """
        with self._events_lock:
            if self._waiting():
                self._queued.popleft()
            elif self._events >= most:
                raise TooManyEventsError(f"This session already has {self._events} requests running; wait for "
                                         "them to finish, then try again.")
            self._events += 1

    def end_event(self) -> None:
        """One event of this session has finished."""
        with self._events_lock:
            self._events = max(0, self._events - 1)

    def use_trained(self, trained: TrainedModel) -> None:
        """A training finished (and was saved): its model replaces the current one whole, with
        everything drawn from or exported of the old one."""
        self.model = CurrentModel.of_training(trained)
        self.heat_cache, self.feature_map, self.export_zip = {}, None, None

    def use_evaluation(self, evaluation: EvalReport) -> None:
        """The current model was measured on new images: those figures are the ones shown (the
        same model, its training's figures set aside)."""
        if self.model is not None:
            self.model = replace(self.model, trained=None, evaluation=evaluation)
        self.heat_cache, self.feature_map = {}, None

    def use_loaded(self, saved: SavedModel | None) -> None:
        """``saved`` (an uploaded model) becomes the current model, or, with None, the upload
        kept before (the data changed, so a model trained on the old data goes): none if there
        is none."""
        if saved is not None:
            self.loaded = saved
        self.model = CurrentModel.of_upload(self.loaded) if self.loaded else None
        self.heat_cache, self.feature_map, self.export_zip = {}, None, None

    def close(self, wait_s: float = 30) -> None:
        """Stop any training and delete this session's files. Safe to call more than once.

        Waits up to ``wait_s`` for a running training step to finish first; a run still going
        after that finds the session closed when it ends and deletes whatever it wrote meanwhile
        (see ``remove_files``)."""
        self.closed = True
        self.stop.set()
        if self.training.acquire(timeout=wait_s):  # let a running step finish before deleting its files
            self.training.release()
        self.remove_files()
        _logger.info("Session %s closed", self.id)

    def remove_files(self) -> None:
        """Delete this session's folder (again, if a late step wrote into it)."""
        shutil.rmtree(self._workdir, ignore_errors=True)
