"""Step 2, "Model": the pretrained model to start from, or a model trained before (uploaded as
its .zip) to test, measure on the images of step 1, or continue training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import gradio as gr

from ..engine.errors import UserInputError
from ..engine.catalog import CATALOG, get_info
from ..engine.weights import availability
from .errors import refuse_while_training
from .results_step import ResultsStep
from .session import Session

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["ModelStep", "ModelLoaded", "model_choices", "describe_model"]


class ModelLoaded(NamedTuple):
    """An uploaded model became the current one."""

    status: str
    continue_box: gr.Checkbox
    download_button: gr.DownloadButton
    session: Session


def model_choices() -> list[tuple[str, str]]:
    """Dropdown entries: a readable line per catalog model, value = timm name."""
    out = []
    for m in CATALOG:
        where = "works offline" if m.builtin else "downloads once"
        out.append((f"{m.title}: {m.params_m:.1f}M parameters, {m.speed}, {where}", m.name))
    return out


def describe_model(name: str) -> str:
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


class ModelStep:
    """Step 2's events."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    def load_model(self, session: Session, zip_file: str | None) -> ModelLoaded:
        """Upload a bundle .zip: it becomes the current model (test, evaluate, export, continue)."""
        from ..engine.workflow import open_model

        if not zip_file:
            raise UserInputError("Choose the .zip of a model this app (or the CLI) trained.")
        refuse_while_training(session, "Loading a model")
        limits = self.ctx.limits
        folder = session.new_folder("loaded")
        try:
            session.require_room(2 * Path(zip_file).stat().st_size, "Loading this model")  # zip + unpacked
            saved = open_model(zip_file, folder, device=self.ctx.device,
                               limits=limits.archive.within(session.room()), max_params=limits.max_params)
        except BaseException:
            session.drop_folder(folder)
            raise
        session.keep_folder("loaded", folder)
        session.use_loaded(saved)
        accuracy = saved.trained_accuracy
        labels = saved.predictor.labels
        status = (f"**Loaded {saved.model_name or 'a model'}** with {len(labels)} classes: {', '.join(labels)}"
                  + (f" (validation accuracy when it was trained: {accuracy:.0%})" if accuracy is not None else "")
                  + ". Test it in step 5, evaluate it on the images of step 1 below, or continue training "
                    "it in step 3 (new classes are added).")
        return ModelLoaded(status, gr.Checkbox(visible=True, value=True),
                           gr.DownloadButton(value=str(saved.zip_path), interactive=True), session)

    def evaluate_model(self, session: Session) -> tuple:
        """Measure the current model on every image from step 1 (e.g. new data for an uploaded model):
        a status line, then the fields of the Results step (``ResultsView``) filled for it."""
        if session.predictor is None:
            raise UserInputError("Upload a trained model (above) or train one in step 3 first.")
        if session.dataset is None:
            raise UserInputError("Load the images to evaluate on in step 1 first (one folder per class, "
                                 "named like the model's classes).")
        refuse_while_training(session, "Evaluating")
        evaluation = session.predictor.evaluate(session.dataset)
        if session.trained is not None:
            # A model trained here has only ever met step 1's images (new images reset it), so
            # this figure is how well it learned them; its cross-validated estimate stays shown.
            return (
                f"Measured on the {evaluation.n_images} images it was trained on: **{evaluation.accuracy:.0%}** "
                "right. That says how well it learned them, not how it will do on new pictures: for those, "
                "step 4 keeps the estimate from pictures each fold's model had not seen. To measure it on new "
                "pictures, download it (step 6), load new images in step 1, then upload it here.",
                *ResultsStep.view(session))
        session.use_evaluation(evaluation)
        return (f"Evaluated on {evaluation.n_images} images: accuracy **{evaluation.accuracy:.0%}**. "
                "The details are in step 4. If these include images the model was trained on, the "
                "figure is optimistic: measure on new pictures.", *ResultsStep.view(session))
