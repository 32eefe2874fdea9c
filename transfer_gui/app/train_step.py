"""Step 3, "Train": Quick or Fine-tune with live curves and Stop, the comparison with training
from scratch, and "would more images help?"."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import gradio as gr
import pandas as pd

from ..engine.errors import UserInputError
from ..engine.catalog import DEFAULT_MODEL
from ..engine.config import TrainConfig
from .errors import refuse_while_training, remembered
from .jobs import Budget, check_model, done, keep_trained, waited
from .labelled import merged_dataset
from .results_step import ResultsStep
from .session import Session
from .views import fmt_s

if TYPE_CHECKING:
    from ..engine.progress import ProgressEvent
    from ..engine.workflow import SavedModel
    from .context import StepContext

__all__ = ["TrainStep", "TrainUpdate", "FailureView", "CurveUpdate", "CompareUpdate", "MODE_CHOICES"]

MODE_CHOICES = [
    ("Quick: train only the last layer (seconds)", "quick"),
    ("Fine-tune: also adjust the whole model (minutes; kept only if it beats Quick on held-out images)",
     "finetune"),
]
_REFIT_SERIES = "training loss, all images"  # fine-tuning again on every image, after the evidence run
_MIN_YIELD_S = 0.4  # at most ~2 UI updates a second: the plot stays smooth, the socket quiet


class TrainUpdate(NamedTuple):
    """One update of the training step while a run goes on, and its last."""

    status: str
    loss_plot: Any
    acc_plot: Any
    train_button: gr.Button
    stop_button: gr.Button
    download_button: gr.DownloadButton
    session: Session


class FailureView(NamedTuple):
    """A training that failed: its reason, and Train usable again."""

    status: str
    train_button: gr.Button
    stop_button: gr.Button


class CurveUpdate(NamedTuple):
    """"Would more images help?" while it runs, and its result."""

    status: str
    plot: Any
    session: Session


class CompareUpdate(NamedTuple):
    """Pretrained vs from scratch while it runs, and its result."""

    status: str
    plot: Any
    compare_button: gr.Button
    stop_button: gr.Button
    feature_map: Any  # the Results step's map gains its random-weight half at the end
    map_note: str
    session: Session


def _buttons(running: bool, bundle_zip: Path | None = None) -> tuple[gr.Button, gr.Button, gr.DownloadButton]:
    """Train, Stop and Download as they are while a run goes on, or after it."""
    download = (gr.DownloadButton(value=str(bundle_zip), interactive=True) if bundle_zip is not None
                else gr.DownloadButton(interactive=False))
    return gr.Button(interactive=not running), gr.Button(interactive=running), download


def _plot_x(event: ProgressEvent, config: TrainConfig) -> float | str:
    """Plot position. Quick: the head setting tried, "1" to "9" (categories: the plot's axis then
    shows whole numbers only). Fine-tune: the head's settings squeezed into 0-1, then epochs (of
    the evidence run, then of the refit on all images)."""
    if event.phase == "head":
        return str(event.epoch) if config.mode == "quick" else event.epoch / max(1, event.epochs)
    if event.step < event.steps:  # mid-epoch: a fraction of the running epoch
        return 1.0 + event.epoch + event.step / max(1, event.steps)
    return 1.0 + event.epoch


def _status(event: ProgressEvent, best_acc: float | None) -> str:
    parts = [f"**{event.message}**", f"elapsed {fmt_s(event.elapsed_s)}"]
    if event.eta_s is not None and event.phase != "done":
        parts.append(f"about {fmt_s(event.eta_s)} left")
    if best_acc is not None:
        parts.append(f"best validation accuracy so far {best_acc:.0%}")
    return " · ".join(parts)


def _plots(rows: list[dict], x_title: str = "epoch"):
    """(loss plot, accuracy plot) of the rows so far."""
    if not rows:
        # No update rather than an empty table: a plot whose first data is empty draws its
        # axes later but never its lines or legend (seen in the browser test).
        return gr.skip(), gr.skip()
    # Explicit dtypes: an empty first update would otherwise be "object" columns, which the
    # plot reads as categories and keeps for the rest of the run (seen in the browser test).
    x_type = str if isinstance(rows[0]["epoch"], str) else float  # Quick's settings are categories
    df = pd.DataFrame(rows, columns=["epoch", "value", "series"]).astype(
        {"epoch": x_type, "value": float, "series": str})
    is_acc = df["series"].str.endswith("validation accuracy")
    loss = df[~is_acc].reset_index(drop=True)
    acc = df[is_acc].reset_index(drop=True)
    return gr.LinePlot(value=loss, x_title=x_title), gr.LinePlot(value=acc, x_title=x_title)


def make_config(model_choice: str, custom_model: str, weights_file: str | None, mode: str,
                epochs: float | None, lr: float | None, val_fraction: float, seed: float,
                base: SavedModel | None = None, weights_cache: str | None = None) -> TrainConfig:
    """Build the TrainConfig from the form; blank/0 advanced fields mean "use the default".
    With ``base`` (continue an uploaded model) its architecture and weights replace the choice;
    ``weights_cache`` is the server's folder for the built-in weights."""
    from ..engine.workflow import continuing

    config = TrainConfig(
        model=(custom_model or "").strip() or model_choice or DEFAULT_MODEL, mode=mode or "quick",
        epochs=int(epochs) if epochs else None,
        lr=float(lr) if lr else None,
        val_fraction=float(val_fraction) if val_fraction else TrainConfig.val_fraction,
        seed=int(seed or 0),
        weights_file=str(weights_file) if weights_file else None,
        weights_cache=weights_cache,
    )
    return continuing(config, base) if base is not None else config


class TrainStep:
    """Step 3's events."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    @remembered
    def train(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None = None,
              mode: str = "quick", epochs: float | None = 0, lr: float | None = 0,
              val_fraction: float = TrainConfig.val_fraction, seed: float = 0,
              continue_loaded: bool = False) -> Iterator[TrainUpdate]:
        """Train with live updates; ``ResultsStep.view`` then fills the Results step."""
        if session.dataset is None:
            raise UserInputError("Load some images first (step 1).")
        added = merged_dataset(session, self.ctx.limits.archive)  # pictures sorted in step 7 or filed in step 5
        if added is not None:
            refuse_while_training(session, "Training with the newly labelled pictures")
            session.dataset = added
        base = session.loaded if continue_loaded else None
        config = make_config(model_choice, custom_model, weights_file, mode, epochs, lr, val_fraction, seed, base,
                             self.ctx.weights_cache)
        check_model(self.ctx.limits, session, config)
        rows: list[dict] = []
        if not (yield from waited(self.ctx, session, "A training",
                                  lambda line: TrainUpdate(line, *_plots(rows), *_buttons(running=True), session))):
            yield TrainUpdate("**Stopped before it started.** Press Train to try again.", *_plots(rows),
                              *_buttons(running=False), session)
            return
        try:
            yield from self._run(session, config, rows)
        finally:
            done(self.ctx, session)

    def demo(self, session: Session) -> Iterator[TrainUpdate]:
        """The page's first impression: Quick with the built-in model and every setting at its
        default, on the images of step 1 (the example's, loaded just before)."""
        yield from self.train(session, DEFAULT_MODEL, "", None, "quick", 0, 0, TrainConfig.val_fraction, 0)

    def _run(self, session: Session, config: TrainConfig, rows: list[dict]) -> Iterator[TrainUpdate]:
        # The current model stays until the new one exists (keep_trained): a Stop, an error or
        # the time limit before that leaves the user the model they had.
        clock = Budget(self.ctx.limits.train_seconds, session)
        best_acc = None
        last_yield = 0.0
        result = None
        x_title = "setting tried (1 = simplest)" if config.mode == "quick" else "epoch (0-1: the new head's settings)"
        # The browser's plot fixes its colours (series) with the first data it gets and keeps them
        # for the rest of a run (seen in the browser test: later series were drawn invisible).
        # So each run first clears the plots, then starts with every series it will draw, each
        # as one empty (NaN) point.
        names = ["training loss", "validation loss", "validation accuracy"]
        if config.mode == "finetune":
            names.insert(1, _REFIT_SERIES)
        first_x = "1" if config.mode == "quick" else 0.0
        rows[:] = [{"epoch": first_x, "value": float("nan"), "series": name} for name in names]
        cleared = gr.LinePlot(value=None, x_title=x_title)
        busy = _buttons(running=True)
        yield TrainUpdate("**Starting...**", cleared, cleared, *busy, session)
        for event in self.ctx.fit(session, config):
            clock.check()
            if event.phase in ("head", "finetune", "refit"):
                x = _plot_x(event, config)
                loss_series = _REFIT_SERIES if event.phase == "refit" else "training loss"
                if event.train_loss is not None:
                    rows.append({"epoch": x, "value": event.train_loss, "series": loss_series})
                if event.val_loss is not None:
                    rows.append({"epoch": x, "value": event.val_loss, "series": "validation loss"})
                    rows.append({"epoch": x, "value": event.val_acc, "series": "validation accuracy"})
                    if event.is_best:
                        best_acc = event.val_acc
            if event.result is not None:
                result = event.result
                break
            now = time.perf_counter()
            # Fast head epochs and mid-epoch reports are thinned out; a fine-tune epoch's
            # result is always shown.
            epoch_end = event.phase in ("finetune", "refit") and event.step == event.steps > 0
            if now - last_yield >= _MIN_YIELD_S or epoch_end or event.phase in ("load", "features"):
                last_yield = now
                yield TrainUpdate(_status(event, best_acc), *_plots(rows, x_title), *busy, session)
        if session.closed:  # nobody is listening, and the session's files are gone
            return
        limit = f"{clock.sentence()}  \n" if clock.ran_out else ""
        if result is None or result.validation is None:
            why = ("**Stopped before the first epoch finished**: there is no new model to keep." if result is None
                   else "**Stopped before the first model was trained**: there is no new model to keep.")
            kept = (" The model you had is still the current one (steps 4-6)." if session.predictor is not None
                    else "")
            yield TrainUpdate(f"{limit}{why}{kept} Press Train again.", *_plots(rows, x_title),
                              *_buttons(running=False, bundle_zip=session.bundle_zip), session)
            return
        yield TrainUpdate(f"**Measuring the model...** elapsed {fmt_s(result.train_seconds)}",
                          *_plots(rows, x_title), *busy, session)
        if session.closed:
            return
        trained = keep_trained(self.ctx, session, result)
        what = ("Broke off with an error" if result.error else "Stopped" if result.stopped else "Done")
        status = (f"**{what}.** **{trained.estimate.sentence()}** (details in step 4). {trained.estimate.note} "
                  f"Trained in {fmt_s(result.train_seconds)}. Test it in step 5, download it in step 6.")
        if clock.ran_out:
            status = f"**{clock.sentence()}**  \n" + status
        if result.error:
            status += (f"  \nThe error was: `{result.error}`. Train again to continue; if it repeats, "
                       "check the images (or try Quick mode, which needs less memory).")
        yield TrainUpdate(status, *_plots(rows, x_title), *_buttons(running=False, bundle_zip=trained.zip_path),
                          session)

    def _quick_config(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None,
                      seed: float) -> TrainConfig:
        """The Quick configuration of the form's model, checked against this server's limits."""
        if session.dataset is None:
            raise UserInputError("Load some images first (step 1).")
        config = make_config(model_choice, custom_model, weights_file, "quick", 0, 0, TrainConfig.val_fraction, seed,
                             weights_cache=self.ctx.weights_cache)
        check_model(self.ctx.limits, session, config)
        return config

    def curve(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None = None,
              seed: float = 0) -> Iterator[CurveUpdate]:
        """"Would more images help?": Quick training on 25/50/75/100 % of the training images."""
        from ..engine.learning_curve import learning_curve
        from ..engine.figures import curve_picture

        config = self._quick_config(session, model_choice, custom_model, weights_file, seed)
        if not (yield from waited(self.ctx, session, "A learning curve",
                                  lambda line: CurveUpdate(line, gr.skip(), session))):
            yield CurveUpdate("Stopped before it started.", gr.skip(), session)
            return
        try:
            found = None
            clock = Budget(self.ctx.limits.train_seconds, session)
            for fraction, repeat, found in learning_curve(session.dataset, config, stop=session.stop,
                                                          cache=session.cache):
                clock.check()
                if found is None:
                    yield CurveUpdate(f"Training on {fraction:.0%} of the training images (try {repeat + 1})...",
                                      gr.skip(), session)
        finally:
            done(self.ctx, session)
        if found is None:
            yield CurveUpdate("Stopped.", gr.skip(), session)
            return
        picture = curve_picture([p.images_per_class for p in found.points], [p.accuracies for p in found.points])
        tries = max(len(p.accuracies) for p in found.points)
        note = (f"**{found.sentence}** (Validation accuracy on the same {found.n_val} held-out images; "
                f"{tries} random subsets per point, all images once.)")
        yield CurveUpdate(note, gr.update(value=picture.image, visible=True), session)

    def compare(self, session: Session, model_choice: str, custom_model: str, weights_file: str | None = None,
                seed: float = 0) -> Iterator[CompareUpdate]:
        """Pretrained vs from scratch on the images of step 1, drawn live on one seconds axis."""
        from ..engine.comparison import compare_with_scratch

        config = self._quick_config(session, model_choice, custom_model, weights_file, seed)
        running = (gr.Button(interactive=False), gr.Button(interactive=True))
        idle = (gr.Button(interactive=True), gr.Button(interactive=False))
        def waiting(line: str) -> CompareUpdate:
            return CompareUpdate(line, gr.skip(), *running, gr.skip(), gr.skip(), session)

        if not (yield from waited(self.ctx, session, "The comparison", waiting)):
            yield CompareUpdate("Stopped before it started.", gr.skip(), *idle, gr.skip(), gr.skip(), session)
            return
        found = None
        try:
            clock = Budget(self.ctx.limits.train_seconds, session)
            last = 0.0
            for found in compare_with_scratch(session.dataset, config, stop=session.stop):
                clock.check()
                now = time.perf_counter()
                if found.running is not None and now - last >= _MIN_YIELD_S:
                    last = now
                    what = ("pretrained: reading the images and fitting the new head"
                            if found.running == "pretrained" else "from scratch: training the whole network")
                    yield CompareUpdate(f"**Training {what}...** {found.sentence()}",
                                        gr.update(value=found.picture().image, visible=True), *running, gr.skip(),
                                        gr.skip(), session)
        finally:
            done(self.ctx, session)
        if found is None or session.closed:
            return
        note = (f"**{found.sentence()}** Both checked on the same {found.n_checked} held-out images; the clock "
                "counts training only. Pretrained: Quick, reading a tenth of the training images at a time. "
                "From scratch: the whole network trained from random weights.")
        if clock.ran_out:
            note = f"**{clock.sentence()}**  \n" + note
        elif found.stopped:
            note = "**Stopped.** " + note
        session.comparison = found
        yield CompareUpdate(note, gr.update(value=found.picture().image, visible=True), *idle,
                            *ResultsStep.map_view(session), session)

    @staticmethod
    def after_failure(session: Session) -> FailureView:
        """Training failed: keep the reason on the status line and make Train usable again."""
        reason = session.last_error or "Training failed; see the message above."
        session.last_error = None
        return FailureView(f"**Could not train:** {reason}", gr.Button(interactive=session.dataset is not None),
                           gr.Button(interactive=False))

    @staticmethod
    def stop(session: Session) -> str:
        """Ask the running training to stop after the current batch, keeping the best model."""
        session.stop.set()
        return "**Stopping after this batch...** the best model so far will be kept."
