"""Event functions: UI values in, engine calls, UI values out.

Every function here is a plain ``def`` (Gradio runs it in a worker thread, so torch work never
blocks the event loop) and can be called directly in tests. Engine errors a user can fix
(``UserInputError``) become ``gr.Error`` with the engine's message; nothing else is caught, so a
bug keeps its traceback in the server log while the page shows only a generic error.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import gradio as gr
import pandas as pd
from PIL import Image

from ..engine.images import IMAGE_EXTENSIONS, restrict_image_formats
from ..engine.catalog import CATALOG, DEFAULT_MODEL, get_info
from ..engine.checks import Check
from ..engine.config import TrainConfig
from ..engine.evaluation import INTERVAL_NAME
from ..engine.errors import UserInputError
from ..engine.figures import confusion_picture
from ..engine.hub import push_bundle
from ..settings import Limits
from .session import Session, SessionRegistry, folder_bytes
from .slots import AlreadyInLineError, TrainingSlots
from ..engine.weights import availability, check_available, check_model_allowed, count_parameters, hub_cached_file

# The engine (torch, timm: ~7 s to import on a 2-core machine) is imported inside the handlers
# that use it, so the page is served first; app.py then loads it in the background
# (preload_engine) before the first click needs it.
if TYPE_CHECKING:
    from ..engine.progress import ProgressEvent

__all__ = ["Handlers", "MODE_CHOICES", "model_choices", "model_card", "preload_engine", "ROOT"]

_logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DATASET = ROOT / "assets" / "example_dataset"
TEST_IMAGES = ROOT / "assets" / "test_images"

MODE_CHOICES = [
    ("Quick: train only the last layer (seconds)", "quick"),
    ("Fine-tune: also adjust the whole model (minutes; kept only if it beats Quick on held-out images)",
     "finetune"),
]
# Column names of the app's tables, also their headers while empty (ui.py).
COUNTS_COLUMNS = ["class", "images"]
SKIPPED_COLUMNS = ["file", "reason"]
PER_CLASS_COLUMNS = ["class", "precision", "recall", "F1", "images"]
_GALLERY_PER_CLASS = 4
# Words, not emoji: a browser without an emoji font (seen in headless Chromium) shows empty boxes.
_OK, _WARN = "OK ·", "**Look at this** ·"
_MIN_BIN_ANSWERS = 3  # reliability chart: confidence bins with fewer answers are left out
_PARITY_IMAGES = 64  # exports are checked against the app's answers on this many images
_MAX_MISTAKES = 24  # the mistakes gallery shows the worst ones; heat maps cost ~0.1 s each on a CPU
_REFIT_SERIES = "training loss, all images"  # fine-tuning again on every image, after the evidence run
_MIN_YIELD_S = 0.4  # at most ~2 UI updates a second: the plot stays smooth, the socket quiet
_WAIT_FOR_STOPPED_S = 60  # how long a new run waits for a stopped one to finish its last step
_APP_PREFIX = "tls-app-"
_OWNER_FILE = "owner.pid"


def _remove_orphans() -> None:
    """Delete app folders whose server process is gone (killed before it could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_APP_PREFIX}*"):
        try:
            pid = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now: leave it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            _logger.info("Removed %s, left by a server that is gone", folder.name)
        except PermissionError:
            pass  # alive, another user's


def preload_engine() -> threading.Thread:
    """Import the engine (torch, timm and our modules built on them) in a background thread.

    The app calls this once its page is served, so the first click does not wait ~7 s for the
    imports. A handler that runs before it finishes waits for the same modules at its own import.
    Our modules import each other without cycles, so the two threads cannot deadlock on them.
    """
    def load() -> None:
        start = time.perf_counter()
        from ..engine import batch, bundle, experiments, data, explain, export, inference, training# noqa: F401

        _logger.info("Engine loaded in %.1f s", time.perf_counter() - start)

    thread = threading.Thread(target=load, name="tls-preload-engine", daemon=True)
    thread.start()
    return thread


def model_choices() -> list[tuple[str, str]]:
    """Dropdown entries: a readable line per catalog model, value = timm name."""
    out = []
    for m in CATALOG:
        where = "works offline" if m.builtin else "downloads once"
        out.append((f"{m.title}: {m.params_m:.1f}M parameters, {m.speed}, {where}", m.name))
    return out


def model_card(name: str) -> str:
    """What a non-programmer needs to choose a model, in Markdown."""
    info = get_info(name)
    if info is None:
        return f"**{name}**: any timm model name; availability: {availability(name)}."
    return (
        f"**{info.title}** (`{info.name}`)  \n"
        f"Size: {info.params_m:.1f} million parameters · Speed on a laptop CPU: {info.speed} · "
        f"Input: {info.input_size}×{info.input_size} px  \n"
        f"Learned from: {info.trained_on} · Licence: {info.licence}  \n"
        f"Weights: {info.source} · **{availability(info.name)}**"
    )


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _user_error(exc: UserInputError, session: Session | None = None) -> gr.Error:
    if session is not None:
        session.last_error = str(exc)
    return gr.Error(str(exc), print_exception=False)


def _refuse_while_training(session: Session, what: str) -> None:
    """Data and models may not change under a running job: it would train or measure on files
    that are gone, or on a different image set than its split."""
    if session.training.locked():
        raise gr.Error(f"{what} has to wait: a training, export or learning curve is running on the current "
                       "images. Press Stop and wait for it to end, then try again.", print_exception=False)


class _Budget:
    """A public server's time limit for one training: past it, the run is stopped the way the Stop
    button stops it (the best model so far is kept)."""

    def __init__(self, seconds: float | None, session: Session):
        self.seconds, self.session = seconds, session
        self.start = time.monotonic()
        self.ran_out = False

    def check(self) -> None:
        """Stop the run once its time is up."""
        if self.seconds is not None and not self.ran_out and time.monotonic() - self.start > self.seconds:
            self.ran_out = True
            self.session.stop.set()

    def sentence(self) -> str:
        """What happened, for the status line."""
        return (f"Stopped at this server's limit of {self.seconds / 60:g} minutes per training; the best model "
                "so far is kept.")


def _new_folder(session: Session, name: str) -> Path:
    """``session.new_folder``, with a closed session's message shown to the user."""
    try:
        return session.new_folder(name)
    except UserInputError as exc:
        raise _user_error(exc) from exc


class _GaveUp(Exception):
    """A job stopped (Stop pressed, or the tab closed) while it waited for its turn."""


class Handlers:
    """The app's event functions, with the server's limits, sessions and training slots.

    Args:
        training_slots: trainings that may run at once (default: ``limits.training_slots``).
        device: where trained models answer (predictions, heat maps): "auto", or "cpu" on a
            ZeroGPU Space, where the GPU is only lent to the training function.
        limits: the server's limits (default: ``Limits.from_env()``).
        disk_limit: bytes one session may store (default: ``limits.session_disk_mb``).
    """

    def __init__(self, training_slots: int | None = None, device: str = "auto",
                 limits: Limits | None = None, disk_limit: int | None = None):
        self.limits = limits or Limits.from_env()
        if training_slots:
            self.limits = dataclasses.replace(self.limits, training_slots=training_slots)
        self.device = device
        self.disk_limit = disk_limit or int(self.limits.session_disk_mb * 1024**2)
        # Gradio decodes a picture dropped on the page itself: Pillow must not try formats (such
        # as PostScript, read through Ghostscript) that we never accept.
        restrict_image_formats()
        # All session folders of this server live in one folder of its own, removed when the
        # server object goes or the process exits; a crashed server's folder is removed by the
        # next one that starts (see _remove_orphans).
        _remove_orphans()
        self.root = Path(tempfile.mkdtemp(prefix=_APP_PREFIX))
        (self.root / _OWNER_FILE).write_text(str(os.getpid()))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        # Held by each long job from its first to its last step, also after Gradio gave up on the
        # event (a closed tab frees Gradio's concurrency slot while the step in flight still runs).
        self.slots = TrainingSlots(self.limits.training_slots, self.limits.training_waiting)
        # Every event finds its Session here by the tab's session hash (see SessionRegistry).
        self.sessions = SessionRegistry(self.new_session, idle_s=self.limits.session_idle_min * 60,
                                        max_sessions=self.limits.max_sessions)

    def new_session(self) -> Session:
        """A fresh Session in this server's folder, under the server's disk budget."""
        return Session(root=self.root, disk_limit=self.disk_limit, server_room=self.server_room)

    def server_room(self) -> int:
        """Bytes all sessions together may still store: the server's budget less what its
        session folders, the upload cache and downloaded hub models take."""
        from huggingface_hub import constants

        used = sum(folder_bytes(Path(p)) for p in (self.root, gr.utils.get_upload_folder(), constants.HF_HUB_CACHE))
        return max(0, int(self.limits.server_disk_mb * 1024**2) - used)

    def close(self) -> None:
        """Delete every session folder of this server (its sessions are over)."""
        self._cleanup()

    def limits_note(self) -> str:
        """The limits a user of this server meets, in one line for the training step ("" when
        there are none worth saying)."""
        parts = []
        if self.limits.train_seconds is not None:
            parts.append(f"a training runs at most {self.limits.train_minutes:g} minutes (then it stops and keeps "
                         "the best model so far)")
        if self.limits.max_params is not None:
            parts.append(f"models of up to {self.limits.model_params_m:g} million parameters")
        if self.limits.public:
            parts.append("a model name must be one of the list or a Hugging Face Hub model")
        return ("On this server " + "; ".join(parts) + ".") if parts else ""

    # --- session lifecycle ---------------------------------------------------------------------

    def event(self, fn: Callable) -> Callable:
        """``fn``, a handler whose first argument is the session, as a Gradio event function.

        The event's Session comes from this server's registry by the request's session hash,
        whatever the page's state holds; called directly (tests), a handler uses the Session it is
        given. Generators stay generators (Gradio streams those).
        """
        most = self.limits.user_events

        def session_of(request: gr.Request | None, session: Session | None) -> Session:
            try:
                if request is not None and request.session_hash:
                    return self.sessions.get(request.session_hash)
            except UserInputError as exc:
                raise _user_error(exc) from exc
            return session if isinstance(session, Session) else self.new_session()

        def begin(session: Session) -> None:
            try:
                session.begin_event(most)
            except UserInputError as exc:
                raise _user_error(exc) from exc

        # The request comes first: Gradio passes it to the positional parameter annotated with it.
        # Each event counts against its session's limit of events at once while it runs.
        if inspect.isgeneratorfunction(fn):
            def bound(request: gr.Request, session, *args):
                s = session_of(request, session)
                begin(s)
                try:
                    yield from fn(s, *args)
                finally:
                    s.end_event()
        else:
            def bound(request: gr.Request, session, *args):
                s = session_of(request, session)
                begin(s)
                try:
                    return fn(s, *args)
                finally:
                    s.end_event()
        bound.__name__, bound.__qualname__, bound.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        bound.counts_events = True  # its start and end are counted: ``admit`` may guard it (ui.py)
        return bound

    def admit(self, request: gr.Request, *inputs) -> list[None]:
        """Gradio's validator for every queued event: runs before the event joins the queue and
        refuses it (nothing is queued) when the server has no room for a new session, or this
        session already has ``limits.user_events`` events waiting or running. Returns one
        "valid" (None) per input, as Gradio expects of a validator."""
        if request is not None and request.session_hash:
            try:
                self.sessions.get(request.session_hash).admit_event(self.limits.user_events)
            except UserInputError as exc:
                raise _user_error(exc) from exc
        return [None] * len(inputs)

    @staticmethod
    def on_load(session: Session) -> Session:
        """A page opened: its Session (made by ``event``) goes into the page's state."""
        return session

    def on_unload(self, request: gr.Request) -> None:
        """The tab closed: stop its training (freeing the slot) and delete its files."""
        if request is not None and request.session_hash:
            self.sessions.close(request.session_hash)

    def on_state_deleted(self, session: Session | None) -> None:
        """Gradio expired the page's state: end its session."""
        if isinstance(session, Session):
            self.sessions.discard(session)

    # --- step 1: data --------------------------------------------------------------------------

    @staticmethod
    def data_view(session: Session):
        """(summary, counts table, gallery, skipped table, checks, check images, train button)
        for the current dataset."""
        ds = session.dataset
        if ds is None:
            return ("No images yet: upload a zip, build classes, or use the example.",
                    pd.DataFrame(columns=COUNTS_COLUMNS), [],
                    pd.DataFrame(columns=SKIPPED_COLUMNS), "", gr.update(value=[], visible=False),
                    gr.Button(interactive=False))
        report = ds.report
        lines = [f"**{report.n_images} images in {len(ds.labels)} classes** are ready"
                 + (f"; **{len(report.skipped)} files were skipped** (listed below)." if report.skipped else ".")]
        checks = report.checks
        lines += [f"{_WARN} {note}" for note in report.notes]
        counts = pd.DataFrame({"class": list(report.counts), "images": list(report.counts.values())})
        gallery = []
        for label in ds.labels:
            items = [i for i in ds.items if i.label == label][:_GALLERY_PER_CLASS]
            gallery += [(str(i.path), label) for i in items]
        skipped = pd.DataFrame([{"file": s.path, "reason": s.reason} for s in report.skipped],
                               columns=SKIPPED_COLUMNS)
        checks_md, check_images = checks_view(checks)
        # the gallery only takes room when there is something to look at
        return ("\n\n".join(lines), counts, gallery, skipped, checks_md,
                gr.update(value=check_images, visible=bool(check_images)), gr.Button(interactive=True))

    def load_zip(self, session: Session, zip_file: str | None):
        """Read an uploaded .zip with one folder per class."""
        from ..engine.data import open_dataset

        if not zip_file:
            raise gr.Error("Choose a .zip file first: one folder per class, images inside.")
        _refuse_while_training(session, "Loading new images")
        folder = _new_folder(session, "upload")
        try:
            session.require_server_room(Path(zip_file).stat().st_size, "Unpacking this zip")
            # the zip may unpack to no more than the session's free room (and the upload limits)
            dataset = open_dataset(zip_file, workdir=folder, limits=self.limits.archive.within(session.room()))
        except UserInputError as exc:
            session.drop_folder(folder)
            raise _user_error(exc) from exc
        session.keep_folder("upload", folder)
        return self._use_dataset(session, dataset)

    def load_example(self, session: Session):
        """Use the bundled example dataset (6 classes of public-domain drawings)."""
        from ..engine.data import open_dataset

        _refuse_while_training(session, "Using the example images")
        try:
            dataset = open_dataset(EXAMPLE_DATASET)
        except UserInputError as exc:
            raise _user_error(exc) from exc
        return self._use_dataset(session, dataset)

    def _use_dataset(self, session: Session, dataset):
        session.dataset = dataset
        session.reset_model()
        return (*self.data_view(session), session)

    @staticmethod
    def classes_table(session: Session) -> pd.DataFrame:
        """The class builder's classes and image counts."""
        return pd.DataFrame({"class": list(session.classes),
                             "images": [len(v) for v in session.classes.values()]},
                            columns=COUNTS_COLUMNS)

    def add_images(self, session: Session, class_name: str, files: list[str] | None,
                   snapshot: str | Image.Image | None):
        """Add uploaded files and/or a webcam/clipboard snapshot (a file path or an image) to a
        named class. Unreadable files are kept out later, with reasons, when the classes are used."""
        from ..engine.images import load_image, read_failure

        name = (class_name or "").strip().strip("/\\")
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise gr.Error("Type a class name first (letters, numbers, spaces; no slashes).")
        files = list(files or [])
        if not files and snapshot is None:
            raise gr.Error(f"Add some images for '{name}': upload files, take a webcam photo or paste one.")
        if snapshot is not None and (why := read_failure(snapshot)):
            raise gr.Error(f"The webcam/pasted picture cannot be used: {why}.")
        try:
            session.check_open()
            session.require_room(sum(Path(f).stat().st_size for f in files), "Adding these pictures")
        except UserInputError as exc:
            raise _user_error(exc) from exc
        folder = session.workdir / "classes" / name
        folder.mkdir(parents=True, exist_ok=True)
        added = session.classes.setdefault(name, [])
        for f in files:
            src = Path(f)
            dest = folder / f"{len(added):04d}_{src.name}"
            shutil.copyfile(src, dest)
            added.append(dest)
        if snapshot is not None:
            dest = folder / f"{len(added):04d}_snapshot.png"
            load_image(snapshot).save(dest)
            added.append(dest)
        gr.Info(f"'{name}' now has {len(added)} images.")
        return self.classes_table(session), None, None, session

    def clear_classes(self, session: Session):
        """Empty the class builder."""
        _refuse_while_training(session, "Starting over")
        session.classes.clear()
        shutil.rmtree(session.workdir / "classes", ignore_errors=True)
        return self.classes_table(session), session

    def use_classes(self, session: Session):
        """Use the classes built in the browser as the dataset."""
        from ..engine.data import scan_files

        _refuse_while_training(session, "Using new classes")
        if not session.classes:
            raise gr.Error("Create at least two classes and add images to each first.")
        try:
            dataset = scan_files({k: v for k, v in session.classes.items()},
                                 root=session.workdir / "classes", limits=self.limits.archive)
        except UserInputError as exc:
            raise _user_error(exc) from exc
        return self._use_dataset(session, dataset)

    # --- step 3: train -------------------------------------------------------------------------

    @staticmethod
    def make_config(model_choice: str, custom_model: str, weights_file: str | None, mode: str,
                    epochs: float | None, lr: float | None, val_fraction: float, seed: float,
                    init_bundle: Path | None = None) -> TrainConfig:
        """Build the TrainConfig from the form; blank/0 advanced fields mean "use the default".
        With ``init_bundle`` (continue an uploaded model) its architecture replaces the choice."""
        from ..engine.bundle import METADATA_FILE

        model = (custom_model or "").strip() or model_choice or DEFAULT_MODEL
        if init_bundle is not None:
            metadata = json.loads((init_bundle / METADATA_FILE).read_text()) \
                if (init_bundle / METADATA_FILE).is_file() else {}
            model = metadata.get("model_name") or model
        return TrainConfig(
            model=model, mode=mode or "quick",
            epochs=int(epochs) if epochs else None,
            lr=float(lr) if lr else None,
            val_fraction=float(val_fraction) if val_fraction else TrainConfig.val_fraction,
            seed=int(seed or 0),
            weights_file=str(weights_file) if weights_file and init_bundle is None else None,
            init_bundle=str(init_bundle) if init_bundle is not None else None,
        )

    @staticmethod
    def _x(event: ProgressEvent, config: TrainConfig) -> float:
        """Plot position. Quick: the head setting tried (1, 2, ...). Fine-tune: the head's settings
        squeezed into 0-1, then epochs (of the evidence run, then of the refit on all images)."""
        if event.phase == "head":
            return float(event.epoch) if config.mode == "quick" else event.epoch / max(1, event.epochs)
        if event.step < event.steps:  # mid-epoch: a fraction of the running epoch
            return 1.0 + event.epoch + event.step / max(1, event.steps)
        return 1.0 + event.epoch

    @staticmethod
    def _status(event: ProgressEvent, best_acc: float | None) -> str:
        parts = [f"**{event.message}**", f"elapsed {_fmt_s(event.elapsed_s)}"]
        if event.eta_s is not None and event.phase != "done":
            parts.append(f"about {_fmt_s(event.eta_s)} left")
        if best_acc is not None:
            parts.append(f"best validation accuracy so far {best_acc:.0%}")
        return " · ".join(parts)

    @staticmethod
    def _plots(rows: list[dict], x_title: str = "epoch"):
        if not rows:
            # No update rather than an empty table: a plot whose first data is empty draws its
            # axes later but never its lines or legend (seen in the browser test).
            return gr.skip(), gr.skip()
        # Explicit dtypes: an empty first update would otherwise be "object" columns, which the
        # plot reads as categories and keeps for the rest of the run (seen in the browser test).
        df = pd.DataFrame(rows, columns=["epoch", "value", "series"]).astype(
            {"epoch": float, "value": float, "series": str})
        is_acc = df["series"].str.endswith("validation accuracy")
        loss = df[~is_acc].reset_index(drop=True)
        acc = df[is_acc].reset_index(drop=True)
        return gr.LinePlot(value=loss, x_title=x_title), gr.LinePlot(value=acc, x_title=x_title)

    def train(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None,
              mode: str, epochs: float | None, lr: float | None, val_fraction: float, seed: float,
              continue_loaded: bool = False, compare_scratch: bool = False) -> Iterator[tuple]:
        """Train with live updates. Yields (status, loss plot, accuracy plot, train button,
        stop button, download button, session); ``results_view`` then fills the Results step.
        With ``compare_scratch`` the same architecture is also trained from random weights for
        the same time, drawn on the same plots (the pretrained model is the one kept)."""
        if session.dataset is None:
            raise gr.Error("Load some images first (step 1).")
        base = session.loaded[1] if continue_loaded and session.loaded else None
        try:
            config = self.make_config(model_choice, custom_model, weights_file, mode, epochs, lr,
                                      val_fraction, seed, init_bundle=base)
            if base is None:
                self._check_model(session, config)
        except UserInputError as exc:
            raise _user_error(exc, session) from exc
        busy = (gr.Button(interactive=False), gr.Button(interactive=True), gr.DownloadButton(interactive=False))
        rows: list[dict] = []
        turn = self._turn(session, "A training")
        try:
            for waiting in turn:
                yield waiting, *self._plots(rows), *busy, session
        except _GaveUp:
            yield ("**Stopped before it started.** Press Train to try again.", *self._plots(rows),
                   gr.Button(interactive=True), gr.Button(interactive=False), gr.DownloadButton(interactive=False),
                   session)
            return
        finally:
            turn.close()  # gave up while waiting (a closed tab): its place in the line is freed now
        try:
            yield from self._run(session, config, rows, busy, compare_scratch and base is None)
        finally:
            self._done(session)

    def _check_model(self, session: Session, config: TrainConfig) -> None:
        """Refuse, before anything is built, a model this server must not create (see Limits), and
        one whose download would not fit the server's disk budget."""
        limits = self.limits
        n = len(session.dataset.labels) if session.dataset is not None else 1000
        count = check_model_allowed(config.model, public=limits.public, max_params=limits.max_params,
                                    from_page=True, num_classes=n)
        check_available(config.model, weights_file=config.weights_file)
        info = get_info(config.model)
        downloads = config.weights_file is None and not (info is not None and info.builtin)
        if limits.public and downloads and hub_cached_file(config.model) is None:
            count = count if count is not None else count_parameters(config.model, n)
            session.require_room(4 * count, f"Downloading {config.model}")

    def _turn(self, session: Session, what: str) -> Iterator[str]:
        """Wait for this session's turn at a training slot, yielding a status line about every
        second; on return the session holds its training lock and a slot, which ``_done`` frees.

        A session has one long job at a time: a second is refused, except right after Stop, when
        it waits for the stopped one's last step.

        Raises:
            gr.Error: this session's job is still running, or the line is full.
            _GaveUp: Stop was pressed (or the tab closed) while waiting.
        """
        if not session.training.acquire(blocking=False):
            if not session.stop.is_set():
                raise _user_error(AlreadyInLineError(what))
            yield "Waiting for the previous training to finish its last step..."
            if not session.training.acquire(timeout=_WAIT_FOR_STOPPED_S):
                raise gr.Error("The previous training is still stopping; try again in a minute.")
        try:
            self.slots.join(session.id, what)
        except UserInputError as exc:
            session.training.release()
            raise _user_error(exc) from exc
        try:
            session.stop.clear()
            while not self.slots.take(session.id, timeout=1.0):
                if session.closed or session.stop.is_set():
                    raise _GaveUp
                running, _ = self.slots.busy()
                ahead = self.slots.ahead(session.id)
                yield (f"**Waiting for a free training slot**: {running} running"
                       + (f", {ahead} waiting before you" if ahead else ", you are next") + ". Stop cancels.")
        except BaseException:
            self._done(session)
            raise

    def _done(self, session: Session) -> None:
        """Free the slot and the training lock that ``_turn`` took."""
        self.slots.leave(session.id)
        session.training.release()
        if session.closed:  # the tab closed while this job's last step was still going
            session.remove_files()

    def _run(self, session: Session, config: TrainConfig, rows: list[dict], busy: tuple, with_scratch: bool):
        from ..engine.bundle import zip_bundle
        from ..engine.experiments import RUNS, RUN_TITLES, compare, compare_sentence
        from ..engine.training import fit
        from ..engine.workflow import finish, save

        session.reset_model()
        clock = _Budget(self.limits.train_seconds, session)
        best_acc = None
        last_yield = 0.0
        results: dict[str | None, object] = {}
        # Compared runs share the plots on a time axis (their budget is time); a single run is
        # drawn by epoch.
        x_title = ("seconds of training" if with_scratch else
                   "head setting tried (1 = simplest)" if config.mode == "quick" else
                   "epoch (0-1: the new head's settings)")
        # The browser's plot fixes its colours (series) with the first data it gets and keeps them
        # for the rest of a run (seen in the browser test: later series were drawn invisible).
        # So each run first clears the plots, then starts with every series it will draw, each
        # as one empty (NaN) point.
        prefixes = [f"{RUN_TITLES[r]}: " for r in RUNS] if with_scratch else [""]
        names = ["training loss", "validation loss", "validation accuracy"]
        if config.mode == "finetune" and not with_scratch:
            names.insert(1, _REFIT_SERIES)
        rows[:] = [{"epoch": 0.0, "value": float("nan"), "series": p + name} for p in prefixes for name in names]
        cleared = gr.LinePlot(value=None, x_title=x_title)
        yield ("**Starting...**", cleared, cleared, *busy, session)
        if with_scratch:
            stream = ((tagged.run, tagged.event) for tagged in
                      compare(session.dataset, config, stop=session.stop, cache=session.cache))
        else:
            stream = ((None, event) for event in fit(session.dataset, config, stop=session.stop, cache=session.cache))
        try:
            for run, event in stream:
                clock.check()
                prefix = f"{RUN_TITLES[run]}: " if run else ""
                if event.phase in ("head", "finetune", "refit"):
                    x = event.elapsed_s if run else self._x(event, config)
                    loss_series = _REFIT_SERIES if event.phase == "refit" else "training loss"
                    if event.train_loss is not None:
                        rows.append({"epoch": x, "value": event.train_loss, "series": prefix + loss_series})
                    if event.val_loss is not None:
                        rows.append({"epoch": x, "value": event.val_loss, "series": prefix + "validation loss"})
                        rows.append({"epoch": x, "value": event.val_acc, "series": prefix + "validation accuracy"})
                        if event.is_best and run in (None, "pretrained"):
                            best_acc = event.val_acc
                if event.result is not None:
                    results[run] = event.result
                    if not with_scratch:
                        break
                    continue
                now = time.perf_counter()
                # Fast head epochs and mid-epoch reports are thinned out; a fine-tune epoch's
                # result is always shown.
                epoch_end = event.phase in ("finetune", "refit") and event.step == event.steps > 0
                if now - last_yield >= _MIN_YIELD_S or epoch_end or event.phase in ("load", "features"):
                    last_yield = now
                    status = self._status(event, best_acc)
                    if run:
                        status = f"**{RUN_TITLES[run].capitalize()} run** · {status}"
                    yield (status, *self._plots(rows, x_title), *busy, session)
        except UserInputError as exc:
            raise _user_error(exc, session) from exc
        if session.closed:  # nobody is listening, and the session's files are gone
            return
        result = results.get("pretrained" if with_scratch else None)
        limit = f"{clock.sentence()}  \n" if clock.ran_out else ""
        if result is None:  # the compared pretrained run never started (stopped at once)
            yield (limit + "**Stopped before the first epoch finished**: there is no model to keep yet. "
                   "Press Train again.", *self._plots(rows, x_title), gr.Button(interactive=True),
                   gr.Button(interactive=False), gr.DownloadButton(interactive=False), session)
            return
        comparison = compare_sentence({k: v for k, v in results.items() if k}) if with_scratch else ""
        if result.validation is None:  # stopped while reading images: there is no trained model to keep
            yield (limit + "**Stopped before the first model was trained**: there is nothing to keep yet. "
                   "Press Train again.", *self._plots(rows, x_title), gr.Button(interactive=True),
                   gr.Button(interactive=False), gr.DownloadButton(interactive=False), session)
            return
        yield (f"**Measuring the model...** elapsed {_fmt_s(result.train_seconds)}",
               *self._plots(rows, x_title), *busy, session)
        trained = finish(result, session.dataset, device=self.device)
        session.use_trained(trained)
        if session.closed:
            return
        folder = save(trained, session.dataset, session.new_folder("bundle") / "model")
        session.bundle_folder = folder
        session.bundle_zip = zip_bundle(folder, folder.parent / "trained-model.zip")
        session.keep_folder("bundle", folder.parent)
        what = ("Broke off with an error" if result.error else "Stopped" if result.stopped else "Done")
        status = (f"**{what}.** **{trained.estimate.sentence()}** (details in step 4). {trained.estimate.note} "
                  f"Trained in {_fmt_s(result.train_seconds)}. Test it in step 5, download it in step 6.")
        if comparison:
            status = f"**{comparison}** (The pretrained model is the one kept.)  \n" + status
        if clock.ran_out:
            status = f"**{clock.sentence()}**  \n" + status
        if result.error:
            status += (f"  \nThe error was: `{result.error}`. Train again to continue; if it repeats, "
                       "check the images (or try Quick mode, which needs less memory).")
        yield (status, *self._plots(rows, x_title), gr.Button(interactive=True), gr.Button(interactive=False),
               gr.DownloadButton(value=str(session.bundle_zip), interactive=True), session)

    def curve(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None,
              seed: float):
        """"Would more images help?": Quick training on 25/50/75/100 % of the training images.
        Yields (status, curve plot, session)."""
        from ..engine.experiments import learning_curve

        if session.dataset is None:
            raise gr.Error("Load some images first (step 1).")
        try:
            config = self.make_config(model_choice, custom_model, weights_file, "quick", 0, 0,
                                      TrainConfig.val_fraction, seed)
            self._check_model(session, config)
        except UserInputError as exc:
            raise _user_error(exc) from exc
        turn = self._turn(session, "A learning curve")
        try:
            for waiting in turn:
                yield waiting, gr.skip(), session
        except _GaveUp:
            yield "Stopped before it started.", gr.skip(), session
            return
        finally:
            turn.close()  # gave up while waiting (a closed tab): its place in the line is freed now
        try:
            found = None
            clock = _Budget(self.limits.train_seconds, session)
            for fraction, repeat, found in learning_curve(session.dataset, config, stop=session.stop,
                                                          cache=session.cache):
                clock.check()
                if found is None:
                    yield (f"Training on {fraction:.0%} of the training images (try {repeat + 1})...",
                           gr.skip(), session)
        finally:
            self._done(session)
        if found is None:
            yield "Stopped.", gr.skip(), session
            return
        rows = []
        for p in found.points:
            for series, value in (("mean accuracy", p.mean), ("worst try", min(p.accuracies)),
                                  ("best try", max(p.accuracies))):
                rows.append({"images per class": p.images_per_class, "accuracy": value, "series": series})
        df = pd.DataFrame(rows).astype({"images per class": float, "accuracy": float, "series": str})
        tries = max(len(p.accuracies) for p in found.points)
        note = (f"**{found.sentence}** (Validation accuracy on the same {found.n_val} held-out images; "
                f"{tries} random subsets per point, all images once.)")
        yield note, gr.update(value=df, visible=True), session

    # --- step 4: results ------------------------------------------------------------------------

    @staticmethod
    def results_view(session: Session):
        """The Results step: (summary, per-class table, confusion picture, true-class picker,
        predicted-class picker, cell note, cell gallery, mistakes gallery, heat-map switch,
        reliability plot)."""
        ev = session.evaluation
        if ev is None:
            picker = gr.Dropdown(choices=[], value=None)
            return ("Train a model (step 3) to see how it does on the images it did not learn from.",
                    None, None, picker, picker, "", [], [], False, gr.update(value=None, visible=False))
        correct = round(ev.accuracy * ev.n_images)
        trained = session.trained
        if trained is None:  # an uploaded model, evaluated on every image of step 1
            lines = [f"**Accuracy {ev.accuracy:.0%}** of the uploaded model on all {ev.n_images} images "
                     f"from step 1 ({correct} right) · macro-F1 {ev.macro_f1:.2f}"]
        else:
            est = trained.estimate
            lines = [f"**{est.sentence()}** ({correct} of {ev.n_images} right) · macro-F1 {est.macro_f1:.2f}. "
                     f"The range is a {INTERVAL_NAME}: with this many images, the share the model gets right on "
                     "new pictures like these most likely lies in it.",
                     est.note]
            if est.method == "cross-validation":
                lines.append("Every image below was judged by a model trained without it (the folds it was not "
                             "in), so the tables, the matrix and the mistakes cover all your images.")
            elif est.trained_on_all:
                lines.append("The figures below come from the held-out images of the evidence run, before the "
                             "final fine-tuning on all images.")
        if session.calibration is not None:
            lines.append(session.calibration.sentence())
        if trained is not None:
            lines.append(f"Expected calibration error: **{trained.estimate.ece:.3f}** (confidences are off from "
                         f"the observed accuracy by about {trained.estimate.ece:.0%} on average; the chart below "
                         "shows where). The \"not sure\" threshold in step 5 says what it means on your images.")
            leakage = trained.leakage(session.dataset)
            lines.append(f"{_OK if leakage.ok else _WARN} {leakage.message}")
        table = pd.DataFrame([{"class": k, "precision": round(v["precision"], 2), "recall": round(v["recall"], 2),
                               "F1": round(v["f1"], 2), "images": v["support"]} for k, v in ev.per_class.items()],
                             columns=PER_CLASS_COLUMNS)
        picture = confusion_picture(ev.labels, ev.confusion).image
        # Start on the cell with the most mistakes: the first thing worth looking at.
        off = [(ev.confusion[i][j], i, j) for i in range(len(ev.labels)) for j in range(len(ev.labels)) if i != j]
        n, i, j = max(off) if off else (0, 0, 0)
        true_label, predicted = (ev.labels[i], ev.labels[j]) if n else (ev.labels[0], ev.labels[0])
        note, cell = Handlers.cell_view(session, true_label, predicted)
        return ("  \n".join(lines), table, picture,
                gr.Dropdown(choices=ev.labels, value=true_label), gr.Dropdown(choices=ev.labels, value=predicted),
                note, cell, Handlers.mistakes_view(session, False), False, Handlers._reliability(session))

    @staticmethod
    def _reliability(session: Session):
        """The reliability chart: confidence against how often the model was right, beside the
        diagonal where the two agree."""
        if session.trained is None:
            return gr.update(value=None, visible=False)
        rows = [{"confidence": 0.0, "accuracy": 0.0, "series": "perfectly calibrated"},
                {"confidence": 1.0, "accuracy": 1.0, "series": "perfectly calibrated"}]
        # a bin of one or two answers is 0 % or 100 % by chance and makes the line jump; the
        # expected calibration error above still counts every answer
        rows += [{"confidence": b.confidence, "accuracy": b.accuracy, "series": "your model"}
                 for b in session.trained.reliability() if b.count >= _MIN_BIN_ANSWERS]
        df = pd.DataFrame(rows).astype({"confidence": float, "accuracy": float, "series": str})
        return gr.update(value=df, visible=True)

    @staticmethod
    def threshold_note(session: Session, threshold: float) -> str:
        """What the "not sure" threshold means, measured on the images of step 1."""
        if session.trained is None:
            return ""
        meaning = session.trained.threshold(float(threshold or 0.0))
        return meaning.sentence()

    @staticmethod
    def _image_path(session: Session, rel: str) -> str:
        root = session.dataset.root if session.dataset else Path(".")
        return rel if Path(rel).is_absolute() else str(root / rel)

    @staticmethod
    def cell_view(session: Session, true_label: str | None, predicted: str | None):
        """(note, gallery) of the checked images of one confusion-matrix cell."""
        ev = session.evaluation
        if ev is None or not true_label or not predicted:
            return "", []
        try:
            cell = ev.cell(true_label, predicted)
        except KeyError:
            return "", []
        what = "correctly recognised" if true_label == predicted else f"taken for '{predicted}'"
        note = f"**{len(cell)} checked image(s) of '{true_label}' were {what}**"
        note += ", most confident first." if cell else "."
        gallery = [(Handlers._image_path(session, r.path), f"{r.predicted_label} {r.confidence:.0%} · {r.path}")
                   for r in cell]
        return note, gallery

    @staticmethod
    def select_cell(session: Session, evt: gr.SelectData):
        """A click on the confusion matrix picture: pick that cell."""
        ev = session.evaluation if isinstance(session, Session) else None
        if ev is None or not isinstance(evt.index, (list, tuple)) or len(evt.index) != 2:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        found = confusion_picture(ev.labels, ev.confusion).cell_at(*evt.index)
        if found is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (found[0], found[1], *Handlers.cell_view(session, *found))

    @staticmethod
    def mistakes_view(session: Session, show_heat: bool):
        """The most confident mistakes (top losses) as a gallery; with ``show_heat``, each one
        drawn with the heat map of the class the model wrongly chose."""
        from ..engine.explain import heat_map

        ev = session.evaluation
        if ev is None:
            return []
        out = []
        for m in ev.mistakes[:_MAX_MISTAKES]:
            caption = (f"{m.true_label} → {m.predicted_label} ({m.confidence:.0%}; "
                       f"{m.true_confidence:.0%} for {m.true_label})")
            path = Handlers._image_path(session, m.path)
            predictor = session.predictor  # a training starting meanwhile forgets the session's model
            if show_heat and predictor is not None:
                key = (path, m.predicted_label)
                if key not in session.heat_cache:
                    session.heat_cache[key] = heat_map(predictor, path, m.predicted_label).overlay()
                out.append((session.heat_cache[key], caption))
            else:
                out.append((path, caption))
        return out

    @staticmethod
    def after_failure(session: Session):
        """Training failed: keep the reason on the status line and make Train usable again."""
        reason = session.last_error or "Training failed; see the message above."
        session.last_error = None
        return (f"**Could not train:** {reason}", gr.Button(interactive=session.dataset is not None),
                gr.Button(interactive=False))

    @staticmethod
    def stop(session: Session) -> str:
        """Ask the running training to stop after the current batch, keeping the best model."""
        session.stop.set()
        return "**Stopping after this batch...** the best model so far will be kept."

    # --- a model trained before: load, evaluate, continue ---------------------------------------

    def load_model(self, session: Session, zip_file: str | None):
        """Upload a bundle .zip: it becomes the current model (test, evaluate, export, continue).
        Returns (status, continue checkbox, download button, session)."""
        from ..engine.bundle import METADATA_FILE
        from ..engine.inference import Predictor

        if not zip_file:
            raise gr.Error("Choose the .zip of a model this app (or the CLI) trained.")
        _refuse_while_training(session, "Loading a model")
        folder = _new_folder(session, "loaded")
        try:
            session.require_room(2 * Path(zip_file).stat().st_size, "Loading this model")  # zip + unpacked
            predictor = Predictor.from_bundle(zip_file, folder, device=self.device,
                                              limits=self.limits.archive.within(session.room()),
                                              max_params=self.limits.max_params)
        except UserInputError as exc:
            session.drop_folder(folder)
            raise _user_error(exc) from exc
        bundle_folder = next(p.parent for p in sorted((folder / "bundle").rglob("config.json")))
        saved = folder / Path(zip_file).name
        shutil.copyfile(zip_file, saved)
        session.loaded = (predictor, bundle_folder, saved)
        session.keep_folder("loaded", folder)
        session.reset_model()
        meta = json.loads((bundle_folder / METADATA_FILE).read_text()) if (bundle_folder / METADATA_FILE).is_file() else {}
        accuracy = (meta.get("evaluation") or {}).get("accuracy")
        status = (f"**Loaded {meta.get('model_name', 'a model')}** with {len(predictor.labels)} classes: "
                  f"{', '.join(predictor.labels)}"
                  + (f" (validation accuracy when it was trained: {accuracy:.0%})" if accuracy is not None else "")
                  + ". Test it in step 5, evaluate it on the images of step 1 below, or continue training "
                    "it in step 3 (new classes are added).")
        return (status, gr.Checkbox(visible=True, value=True),
                gr.DownloadButton(value=str(saved), interactive=True), session)

    def evaluate_model(self, session: Session):
        """Measure the current model on every image from step 1 (e.g. new data for an uploaded model)."""
        if session.predictor is None:
            raise gr.Error("Upload a trained model (above) or train one in step 3 first.")
        if session.dataset is None:
            raise gr.Error("Load the images to evaluate on in step 1 first (one folder per class, "
                           "named like the model's classes).")
        _refuse_while_training(session, "Evaluating")
        try:
            evaluation = session.predictor.evaluate(session.dataset)
        except UserInputError as exc:
            raise _user_error(exc) from exc
        session.trained, session.result, session.calibration, session.evaluation = None, None, None, evaluation
        session.heat_cache = {}
        return (f"Evaluated on {evaluation.n_images} images: accuracy **{evaluation.accuracy:.0%}**. "
                "The details are in step 4. If these include images the model was trained on, the "
                "figure is optimistic: measure on new pictures.", *self.results_view(session))

    # --- step 6: export and publish --------------------------------------------------------------

    def export(self, session: Session):
        """TorchScript + ONNX with preprocessing inside, each checked against the app's own
        predictions. Returns (report, download button)."""
        if session.predictor is None or session.bundle_folder is None:
            raise gr.Error("Train a model (step 3) or upload one (step 2) first.")
        try:
            for _ in self._turn(session, "An export"):
                pass  # the export waits quietly; its button shows Gradio's progress meanwhile
        except _GaveUp:
            return "Stopped before the export started.", gr.DownloadButton(interactive=False)
        try:
            return self._export(session)
        finally:
            self._done(session)

    def _export(self, session: Session):
        from ..engine.bundle import CARD_FILE, zip_bundle
        from ..engine.export import export_all

        if session.result is not None and session.result.validation is not None:
            images = [session.dataset.items[i].path for i in session.result.validation.indices[:_PARITY_IMAGES]]
        elif session.dataset is not None:
            images = [item.path for item in session.dataset.items[:_PARITY_IMAGES]]
        else:
            images = sorted(p for p in TEST_IMAGES.glob("*") if p.is_file())
        folder = _new_folder(session, "export") / "exported-model"
        result = export_all(session.predictor, folder, images)
        lines = [("**Passed** · " if c.passed else "**Failed** · ") + c.sentence() for c in result.checks]
        lines.append("Both files take an RGB uint8 picture of shape (height, width, 3), any size, and return "
                     "the class probabilities; the class names are in `labels.json`.")
        if not result.passed:
            lines.append("A failed check means that file may answer differently from this app: "
                         "use the timm bundle (the .zip above) instead.")
        if (session.bundle_folder / CARD_FILE).is_file():  # an uploaded bundle may have no model card
            shutil.copyfile(session.bundle_folder / CARD_FILE, folder / CARD_FILE)
        session.export_zip = zip_bundle(folder, folder.parent / "exported-model.zip")
        session.keep_folder("export", folder.parent)
        return "  \n".join(lines), gr.DownloadButton(value=str(session.export_zip), interactive=True)

    @staticmethod
    def push(session: Session, repo: str, token: str, private: bool):
        """Publish the current bundle on the Hugging Face Hub. Returns a status line."""
        if session.bundle_folder is None:
            raise gr.Error("Train a model (step 3) or upload one (step 2) first.")
        try:
            url = push_bundle(session.bundle_folder, repo, token, private=bool(private))
        except UserInputError as exc:
            raise _user_error(exc) from exc
        return (f"**Published:** [{url}]({url}). Anyone with access loads it with "
                f"`timm.create_model(\"hf-hub:{repo.strip()}\", pretrained=True)`.")

    @staticmethod
    def download_view(session: Session):
        """After a training or upload: (model card, export report, export button) for step 6."""
        return Handlers.card_view(session), "", gr.DownloadButton(value=None, interactive=False)

    @staticmethod
    def card_view(session: Session) -> str:
        """The current bundle's model card (without its YAML header)."""
        from ..engine.bundle import CARD_FILE

        if session.bundle_folder is None or not (session.bundle_folder / CARD_FILE).is_file():
            return ""
        text = (session.bundle_folder / CARD_FILE).read_text()
        return text.split("---", 2)[2].lstrip() if text.startswith("---") else text

    # --- step 5: test --------------------------------------------------------------------------

    @staticmethod
    def predict(session: Session, image: str | Image.Image | None, threshold: float = 0.5):
        """One picture (a file path or an image): (verdict, all labels with confidences for gr.Label, heat map, heat caption)."""
        from ..engine.batch import NOT_SURE, decide
        from ..engine.images import IMAGE_READ_ERRORS, load_image, read_failure
        from ..engine.explain import heat_map

        if image is None:
            return "", None, None, ""
        if session.predictor is None:
            raise gr.Error("Train a model first (step 3), then test it here.")
        try:
            picture = load_image(image)  # decoded once: a big photo costs seconds per decode
        except IMAGE_READ_ERRORS:
            raise gr.Error(f"This picture cannot be used: {read_failure(image)}. Try a JPEG, PNG or WebP "
                           "picture.", print_exception=False) from None
        predictor = session.predictor
        hm = heat_map(predictor, picture)  # its forward pass also gives every class's probability
        probs = hm.probabilities
        label, confidence = decide(probs, predictor.labels, threshold or 0.0)
        ranked = sorted(zip(predictor.labels, probs.tolist()), key=lambda t: -t[1])
        if label == NOT_SURE:
            top = ", ".join(f"{name} {p:.0%}" for name, p in ranked[:3])
            verdict = (f"### Not sure\nThe best guess is **{ranked[0][0]}** at {confidence:.0%}, below your "
                       f"{threshold:.0%} threshold. Top candidates: {top}.")
        else:
            verdict = f"### {label}\n{confidence:.0%} sure."
        return verdict, dict(ranked), hm.overlay(), hm.caption()

    def batch_predict(self, session: Session, files: list[str] | None, threshold: float = 0.5):
        """Many pictures (and/or .zip files): (summary, table, CSV download button)."""
        from ..engine.batch import NOT_SURE, iter_image_files, prediction_rows, write_csv

        predictor = session.predictor  # a training starting meanwhile forgets the session's model
        if predictor is None:
            raise gr.Error("Train a model first (step 3), then classify pictures here.")
        if not files:
            raise gr.Error("Choose some pictures or a .zip of pictures first.")
        folder = _new_folder(session, "batch")
        skipped: list[str] = []
        try:
            images = iter_image_files([(Path(f).name, Path(f)) for f in files], folder,
                                      lambda shown, why: skipped.append(f"{shown}: {why}"),
                                      limits=self.limits.archive.within(session.room()))
            rows = list(prediction_rows(predictor, images, top_k=3, threshold=threshold or 0.0,
                                        on_skip=lambda shown, why: skipped.append(f"{shown}: {why}"),
                                        megapixels=self.limits.batch_megapixels))
        except UserInputError as exc:
            session.drop_folder(folder)
            raise _user_error(exc) from exc
        finally:  # the pictures of a zip were needed only to answer
            for extracted in folder.glob("zip*"):
                shutil.rmtree(extracted, ignore_errors=True)
        if not rows:
            session.drop_folder(folder)
            raise gr.Error("None of these files is a readable picture. Use JPEG, PNG, WebP, BMP, GIF or TIFF files.")
        csv_path = folder / "predictions.csv"
        write_csv(rows, csv_path)
        session.keep_folder("batch", folder)
        table = pd.DataFrame([{"image": r["path"], "label": r["label"], "confidence": round(r["confidence"], 3)}
                              for r in rows], columns=["image", "label", "confidence"])
        unsure = sum(r["label"] == NOT_SURE for r in rows)
        summary = f"**{len(rows)} picture(s) classified**"
        summary += f", {unsure} of them 'not sure' (below {threshold:.0%})." if unsure else "."
        if skipped:
            summary += f"  \n{len(skipped)} file(s) skipped: " + "; ".join(skipped[:10])
        return summary, table, gr.DownloadButton(value=str(csv_path), interactive=True)


def checks_view(checks: list[Check]) -> tuple[str, list[tuple[str, str]]]:
    """Dataset checks as a Markdown checklist and a gallery of the images to look at."""
    lines = [f"{_OK if c.ok else _WARN} **{c.title}:** {c.message}" for c in checks]
    images = [img for c in checks if not c.ok for img in c.images]
    if images:
        lines.append("The images to look at are shown below.")
    return "  \n".join(lines), images


def image_extensions() -> list[str]:
    """File types the uploaders accept."""
    return sorted(IMAGE_EXTENSIONS)
