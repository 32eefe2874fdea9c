"""The server: its limits, sessions, training line and folders, and the steps' event functions.

``Server`` is made once per app. It owns what all users share (the limits, the session registry,
the training slots, the app's temporary folder) and one object per step of the page, whose
methods are the events (``server.data.load_zip``, ``server.train.train``, ...). ``event`` wraps
each of them for Gradio: the request's session, counted against its limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import gradio as gr

from ..engine.errors import UserInputError, without_paths
from ..engine.images import MAX_DECODE_BYTES, restrict_image_formats
from ..settings import Limits
from .context import StepContext
from .data_step import DataStep
from .download_step import DownloadStep
from .errors import shown
from .memory import MemoryGate
from .model_step import ModelStep
from .results_step import ResultsStep
from .check_step import CheckStep
from .registry import SessionRegistry
from .session import Session, folder_bytes
from .slots import TrainingSlots
from .sort_step import SortStep
from .test_step import TestStep
from .train_step import TrainStep
from .model_trials_step import TrialsStep

if TYPE_CHECKING:  # the engine (torch, timm) loads after the page is served
    from ..engine.config import TrainConfig
    from ..engine.data import ImageDataset
    from ..engine.progress import ProgressEvent

__all__ = ["Server", "client_address", "own_upload_folder"]

_logger = logging.getLogger(__name__)

_APP_PREFIX = "tls-app-"
LENT_GPU_SECONDS = 300  # what a training asks of ZeroGPU for one call (its own limit per call)
_LENT_GPU_MARGIN_S = 30  # of those, left for building the model before and sending it back after
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


def own_upload_folder() -> Path:
    """A new folder, owned by this process, for Gradio's uploads and downloads (its
    ``GRADIO_TEMP_DIR``). The server's disk budget counts Gradio's folder; the shared default one
    holds whatever other and earlier servers left there (one killed before it could clean up leaves
    everything), which would be counted against this server's users. Deleted when the process
    ends; after a crash, by the next server's start (``_remove_orphans``)."""
    _remove_orphans()
    folder = Path(tempfile.mkdtemp(prefix=_APP_PREFIX))
    (folder / _OWNER_FILE).write_text(str(os.getpid()))
    return folder


def client_address(request: gr.Request | None, proxy_hops: int = 0) -> str:
    """The address of the client that sent ``request`` ("" when unknown).

    With ``proxy_hops`` proxies in front of the app, each appending the address it saw to
    X-Forwarded-For, the client's is the ``proxy_hops``-th entry from the right: entries further
    left are whatever the client itself sent, and anyone can send any. Without proxies it is the
    connection's own address (behind an unconfigured proxy that is the proxy's: every user then
    shares one address and its session cap).
    """
    try:
        peer = request.client.host if request is not None and request.client is not None else ""
        header = request.headers.get("x-forwarded-for", "") if request is not None and proxy_hops > 0 else ""
    except AttributeError:  # a Request made without an HTTP request (tests, internal calls)
        return ""
    forwarded = [part.strip() for part in header.split(",") if part.strip()]
    if not forwarded:
        return peer or ""
    return forwarded[-proxy_hops] if len(forwarded) >= proxy_hops else forwarded[0]


def _event_signature(fn: Callable) -> inspect.Signature:
    """The signature Gradio reads for an event wrapped by ``Server.event``: the request, then
    ``fn``'s own parameters by name, so that the API lists ``image``, ``threshold``... instead of
    ``param_1``. Annotations are dropped (Gradio would read them as types of its own)."""
    own = [p.replace(annotation=inspect.Parameter.empty) for p in inspect.signature(fn).parameters.values()]
    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    return inspect.Signature([request, *own])


class Server:
    """One app's shared state and its event functions, one object per step.

    Args:
        training_slots: trainings that may run at once (default: ``limits.training_slots``).
        device: where trained models answer (predictions, heat maps): "auto", or "cpu" on a
            ZeroGPU Space, where the GPU is only lent to the training function.
        limits: the server's limits (default: ``Limits()``; the app passes ``Settings.limits``,
            read from the environment once at its start).
        disk_limit: bytes one session may store (default: ``limits.session_disk_mb``).
        lent_gpu: ZeroGPU's ``spaces.GPU`` (see ``hosting.zero_gpu``), or None.
        weights_cache: the folder for the built-in models' converted weights (``Settings.cache_dir``;
            default: the engine's).

    Attributes:
        data, model, train, results, test, download, sort: the event functions of steps 1-7, named
            as the tabs are.
    """

    def __init__(self, training_slots: int | None = None, device: str = "auto",
                 limits: Limits | None = None, disk_limit: int | None = None, lent_gpu: Callable | None = None,
                 weights_cache: str | Path | None = None):
        self.limits = limits or Limits()
        # ZeroGPU's spaces.GPU (hosting.zero_gpu): trainings then run on a GPU lent for one call, in
        # another process, as a function of plain data (engine/lent_gpu.py); see fit().
        self.lent_gpu = None
        if lent_gpu is not None:
            from ..engine.lent_gpu import fit_on_lent_gpu

            self.lent_gpu = lent_gpu(duration=LENT_GPU_SECONDS)(fit_on_lent_gpu)
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
        # The server's memory budget (limits.memory_mb). A heavy event reserves the most it may
        # decode at once: one picture at the decode limit, or a batch's pictures held together,
        # each twice (the decode and the picture made from it).
        self.memory = MemoryGate(int(self.limits.memory_mb * 2**20))
        self.heavy_bytes = 2 * max(MAX_DECODE_BYTES, int(self.limits.batch_megapixels * 1e6 * 3))
        # Every event finds its Session here by the tab's session hash (see SessionRegistry).
        limits = self.limits
        self.sessions = SessionRegistry(self.new_session, idle_s=limits.session_idle_min * 60,
                                        max_sessions=limits.max_sessions, grace_s=limits.session_grace_min * 60,
                                        empty_idle_s=limits.session_empty_min * 60,
                                        per_client=limits.sessions_per_client)
        # Sessions end on time even when no event arrives to sweep on its way (an idle server).
        self._stopped = threading.Event()
        sweeper = threading.Thread(target=self._sweep, args=(self.sessions, self._stopped), daemon=True,
                                   name="tls-session-sweeper")
        sweeper.start()
        # The steps get only what they use of the server (StepContext), never the server itself.
        ctx = StepContext(self.limits, self.slots, self.memory, self.device, self.fit,
                          str(weights_cache) if weights_cache else None)
        self.data = DataStep(ctx)
        self.model = ModelStep(ctx)
        self.trials = TrialsStep(ctx)  # step 2's "try every built-in model"
        self.train = TrainStep(ctx)
        self.results = ResultsStep()
        self.check = CheckStep(ctx)  # step 4's pictures to check
        self.test = TestStep(ctx)
        self.download = DownloadStep(ctx)
        self.sort = SortStep(ctx, curve=self.train.curve)

    def fit(self, session: Session, config: TrainConfig, dataset: ImageDataset | None = None
            ) -> Iterator[ProgressEvent]:
        """A training of ``dataset`` (default: ``session.dataset``): ``training.fit``'s progress
        events, the last with the result. Here, with the session's Stop and feature cache; on a
        lent GPU (ZeroGPU), in the GPU's process, where Stop is a file in the session's folder
        that a thread here writes when Stop is pressed, and the call ends in time for the GPU's
        limit with the best model so far."""
        from ..engine.training import fit

        dataset = session.dataset if dataset is None else dataset
        if self.lent_gpu is None:
            yield from fit(dataset, config, stop=session.stop, cache=session.cache)
            return
        stop_file = session.new_folder("gpu-run") / "stop"
        ended = threading.Event()

        def forward_stop() -> None:
            while not ended.wait(0.25):
                if session.stop.is_set():
                    stop_file.touch()
                    return

        forwarder = threading.Thread(target=forward_stop, name="tls-stop-forwarder", daemon=True)
        forwarder.start()
        budget = LENT_GPU_SECONDS - _LENT_GPU_MARGIN_S
        if self.limits.train_seconds is not None:
            budget = min(budget, self.limits.train_seconds)
        try:
            yield from self.lent_gpu(dataset, config, str(stop_file), budget)
        finally:
            ended.set()
            forwarder.join()
            session.drop_folder(stop_file.parent)

    @staticmethod
    def _sweep(sessions: SessionRegistry, stopped: threading.Event) -> None:
        # A static method given only what it needs: a thread holding the Server itself would keep
        # it from being collected (and its folder from being removed).
        while not stopped.wait(sessions.sweep_every_s):
            sessions.expire_idle()

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
        self._stopped.set()
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

    def event(self, fn: Callable, counted: bool = True, heavy: bool = False) -> Callable:
        """``fn``, an event function whose first argument is the session, as a Gradio event.

        The event's Session comes from this server's registry by the request's session hash,
        whatever the page's state holds; called directly (tests), an event function uses the
        Session it is given. Generators stay generators (Gradio streams those).

        Args:
            counted: the event holds one of its session's ``limits.user_events`` places while it
                runs, given back in a ``finally`` (also when Gradio cancels it or its client goes).
                False for events outside the queue (Stop, the page load): they take a moment, and
                Stop must work however busy the session is.
            heavy: the event may decode large pictures (a batch, the pile, heat maps, a zip):
                it reserves ``heavy_bytes`` of the server's memory budget while it runs, and
                waits, then is refused, when there is no room (layout.py also puts such events
                in one concurrency group of ``limits.heavy_jobs``).
        """
        most = self.limits.user_events if counted else None
        reserve = self.heavy_bytes if heavy else 0
        remember = getattr(fn, "remembers_errors", False)

        def session_of(request: gr.Request | None, session: Session | None) -> Session:
            if request is not None and request.session_hash:
                return self.sessions.get(request.session_hash, client_address(request, self.limits.proxy_hops))
            return session if isinstance(session, Session) else self.new_session()

        @contextlib.contextmanager
        def running(request: gr.Request | None, given: Session | None) -> Iterator[Session]:
            # The one place where an error the user can fix becomes what the page shows.
            session = None
            try:
                session = session_of(request, given)
                if most is not None:  # each event counts against its session's limit while it runs
                    session.begin_event(most)
                try:
                    with self.memory.reserve(reserve, "this request"):
                        yield session
                finally:
                    if most is not None:
                        session.end_event()
            except UserInputError as exc:  # ServerBusyError and TooManyEventsError are ones too
                if remember and session is not None:
                    session.last_error = without_paths(str(exc))
                raise shown(exc) from exc

        # The request comes first: Gradio passes it to the positional parameter annotated with it.
        if inspect.isgeneratorfunction(fn):
            def bound(request: gr.Request, session, *args):
                with running(request, session) as s:
                    yield from fn(s, *args)
        else:
            def bound(request: gr.Request, session, *args):
                with running(request, session) as s:
                    return fn(s, *args)
        bound.__name__, bound.__qualname__, bound.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        bound.__signature__ = _event_signature(fn)
        if "oauth_token" in bound.__signature__.parameters:
            # Gradio passes the signed-in user's token to a parameter with this type hint
            bound.__annotations__ = {**bound.__annotations__, "oauth_token": gr.OAuthToken | None}
        bound.counts_events = counted  # its start and end are counted: ``admit`` may guard it (layout.py)
        return bound

    def admit(self, request: gr.Request, *inputs) -> list[None]:
        """Gradio's validator for the queued events that ``event`` counts: runs before the event
        joins the queue and refuses it (nothing is queued) when this session already has
        ``limits.user_events`` events waiting or running, else holds a place for it. A hash with
        no session yet gets none made here (any hash can be sent to the queue): the event makes
        it when it runs. Returns one "valid" (None) per input, as Gradio expects of a validator."""
        return self._admit(request, len(inputs), hold_place=True)

    def admit_uncounted(self, request: gr.Request, *inputs) -> list[None]:
        """The validator for queued events that take a moment and are not counted (a click on a
        picture, the model's description): refused like ``admit``, without holding a place."""
        return self._admit(request, len(inputs), hold_place=False)

    def _admit(self, request: gr.Request | None, n_inputs: int, hold_place: bool) -> list[None]:
        session = self.sessions.find(request.session_hash) if request is not None and request.session_hash else None
        if session is not None:
            check = session.admit_event if hold_place else session.check_room_for_event
            try:
                check(self.limits.user_events)
            except UserInputError as exc:
                raise shown(exc) from exc
        return [None] * n_inputs

    @staticmethod
    def on_load(session: Session) -> Session:
        """A page opened: its Session (made by ``event``) goes into the page's state."""
        return session

    def on_unload(self, request: gr.Request) -> None:
        """The page went away (tab closed, or only the network dropped): its session waits
        ``limits.session_grace_min`` for it to come back, then ends (see SessionRegistry). A
        training it runs is stopped at once, keeping its best model so far: nobody may be watching,
        and the training slot is the server's scarcest resource."""
        if request is not None and request.session_hash:
            session = self.sessions.find(request.session_hash)
            if session is not None and session.training.locked():
                session.stop.set()
            self.sessions.went_away(request.session_hash)

    def on_state_deleted(self, session: Session | None) -> None:
        """Gradio expired the page's copy of its Session: treated as the page going away."""
        if isinstance(session, Session):
            self.sessions.forgotten(session)
