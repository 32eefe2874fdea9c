"""Long jobs (trainings, exports, learning curves): their turn in the training line, their time
budget, and the model checks made before one starts.

A session has one long job at a time. ``turn`` waits for a free training slot, telling the user
their place about once a second; ``done`` frees it. ``Budget`` stops a run at a public server's
time limit the way the Stop button does (the best model so far is kept).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Generator, Iterator, TypeVar

from ..engine.catalog import get_info
from ..engine.config import TrainConfig
from ..engine.errors import UserInputError
from ..engine.weights import check_available, check_model_allowed, count_parameters, hub_cached_file
from ..settings import Limits
from .session import Session
from .slots import AlreadyInLineError

if TYPE_CHECKING:
    from ..engine.data import ImageDataset
    from ..engine.training import TrainResult
    from ..engine.workflow import TrainedModel
    from .context import StepContext

__all__ = ["Budget", "GaveUp", "turn", "waited", "keep_trained", "done", "check_model"]

T = TypeVar("T")

_WAIT_FOR_STOPPED_S = 60  # how long a new run waits for a stopped one to finish its last step


class GaveUp(Exception):
    """A job stopped (Stop pressed, or the tab closed) while it waited for its turn."""


class Budget:
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


def turn(ctx: StepContext, session: Session, what: str) -> Iterator[str]:
    """Wait for this session's turn at a training slot, yielding a status line about every
    second; on return the session holds its training lock and a slot, which ``done`` frees.

    A session has one long job at a time: a second is refused, except right after Stop, when
    it waits for the stopped one's last step.

    Raises:
        UserInputError: this session's job is still running, or the line is full.
        GaveUp: Stop was pressed (or the tab closed) while waiting.
    """
    if not session.training.acquire(blocking=False):
        if not session.stop.is_set():
            raise AlreadyInLineError(what)
        yield "Waiting for the previous training to finish its last step..."
        if not session.training.acquire(timeout=_WAIT_FOR_STOPPED_S):
            raise UserInputError("The previous training is still stopping; try again in a minute.")
    try:
        ctx.slots.join(session.id, what)
    except UserInputError:
        session.training.release()
        raise
    try:
        session.stop.clear()
        while not ctx.slots.take(session.id, timeout=1.0):
            if session.closed or session.stop.is_set():
                raise GaveUp
            running, _ = ctx.slots.busy()
            ahead = ctx.slots.ahead(session.id)
            yield (f"**Waiting for a free training slot**: {running} running"
                   + (f", {ahead} waiting before you" if ahead else ", you are next") + ". Stop cancels.")
    except BaseException:
        done(ctx, session)
        raise


def waited(ctx: StepContext, session: Session, what: str, update: Callable[[str], T]) -> Generator[T, None, bool]:
    """``turn`` as an event's updates: each waiting line becomes ``update(line)``. Returns True
    when the turn came (the caller runs its job, then calls ``done``), False when Stop or a
    closed tab ended the wait."""
    waiting = turn(ctx, session, what)
    try:
        for line in waiting:
            yield update(line)
    except GaveUp:
        return False
    finally:
        waiting.close()  # gave up while waiting (a closed tab): its place in the line is freed now
    return True


def keep_trained(ctx: StepContext, session: Session, result: TrainResult,
                 dataset: ImageDataset | None = None) -> TrainedModel:
    """A finished training on ``dataset`` (default: ``session.dataset``) becomes the session's
    model: measured, saved as a bundle and its zip in the session's folder (the previous bundle
    folder goes). Until then the previous model stays the current one; a ``dataset`` given here
    becomes the session's data set together with its model."""
    from ..engine.workflow import finish_training

    dataset = dataset or session.dataset
    folder = session.new_folder("bundle")
    trained = finish_training(result, dataset, folder / "model", device=ctx.device,
                              zip_path=folder / "trained-model.zip")
    session.dataset = dataset
    session.use_trained(trained)
    session.keep_folder("bundle", folder)
    return trained


def done(ctx: StepContext, session: Session) -> None:
    """Free the slot and the training lock that ``turn`` took."""
    ctx.slots.leave(session.id)
    session.training.release()
    if session.closed:  # the tab closed while this job's last step was still going
        session.remove_files()


def check_model(limits: Limits, session: Session, config: TrainConfig) -> None:
    """Refuse, before anything is built, a model this server must not create (see Limits), and
    one whose download would not fit the server's disk budget. Every job that builds a model
    calls this, continuing an uploaded model included: its name comes from the upload.

    Raises:
        UserInputError: the model is not allowed or not available, or its download does not fit.
    """
    n = len(session.dataset.labels) if session.dataset is not None else 1000
    count = check_model_allowed(config.model, public=limits.public, max_params=limits.max_params,
                                from_page=True, num_classes=n)
    if config.init_bundle is not None:
        return  # continuing: the weights come from the uploaded bundle, nothing is downloaded
    check_available(config.model, weights_file=config.weights_file)
    info = get_info(config.model)
    downloads = config.weights_file is None and not (info is not None and info.builtin)
    if limits.public and downloads and hub_cached_file(config.model) is None:
        count = count if count is not None else count_parameters(config.model, n)
        session.require_room(4 * count, f"Downloading {config.model}")
