"""Tab "3. Train": how to train, Train and Stop with live curves, "would more images help?" and
the comparison with training from scratch. Events: ``TrainStep`` (train_step.py). A finished
training fills step 4's Results, step 5's "not sure" note and step 6's downloads (``after_run``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from ..assets import DIAGRAM
from ..texts import COMPARE_INTRO, CURVE_INTRO, EXPLAINER
from ..train_step import MODE_CHOICES, CompareUpdate, CurveUpdate, FailureView, TrainUpdate
from ..views import outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["TrainTab"]


class TrainTab:
    """The components of step 3 (build it inside ``gr.Tabs``); ``limits_note`` is the server's
    limits in one line ("" for none)."""

    def __init__(self, limits_note: str) -> None:
        with gr.Tab("3. Train", id="tab-train"):
            self.mode = gr.Radio(MODE_CHOICES, value="quick", label="How to train", elem_id="mode")
            self._advanced()
            with gr.Accordion("What is happening? (transfer learning in one picture)", open=False,
                              elem_id="explainer"):
                gr.Image(str(DIAGRAM), show_label=False, interactive=False, elem_id="explainer-diagram", buttons=[])
                gr.Markdown(EXPLAINER)
            self.continue_loaded = gr.Checkbox(label="Continue training the uploaded model (step 2) instead of "
                                                     "starting from the pretrained one", value=False,
                                               visible=False, elem_id="continue-loaded")
            with gr.Row():
                self.train_button = gr.Button("Train", variant="primary", interactive=False, elem_id="train-btn")
                self.stop_button = gr.Button("Stop (keeps the best model so far)", variant="stop",
                                             interactive=False, elem_id="stop-btn")
            self.status = gr.Markdown("Load images in step 1 first; then press Train.", elem_id="train-status")
            gr.Markdown(limits_note, visible=bool(limits_note), elem_id="limits-note")
            with gr.Row():
                self.loss_plot = gr.LinePlot(x="epoch", y="value", color="series", title="Loss (lower is better)",
                                             x_title="epoch", y_title="loss", height=300, elem_id="loss-plot")
                self.acc_plot = gr.LinePlot(x="epoch", y="value", color="series",
                                            title="Validation accuracy (higher is better)", x_title="epoch",
                                            y_title="accuracy", y_lim=[0, 1], height=300, elem_id="acc-plot")
            self._curve_and_comparison()

    def _advanced(self) -> None:
        with gr.Accordion("Advanced settings", open=False), gr.Row():
            self.epochs = gr.Number(label="Fine-tune epochs at most (0 = automatic: 12)", value=0,
                                    precision=0, minimum=0, maximum=1000, elem_id="epochs")
            self.lr = gr.Number(label="Fine-tune learning rate (0 = automatic: 0.001)", value=0, minimum=0,
                                elem_id="lr")
            self.val_fraction = gr.Slider(0.1, 0.5, value=0.25, step=0.05,
                                          label="Share of images held back to judge fine-tuning "
                                                "(Quick checks every image by cross-validation)",
                                          elem_id="val-fraction")
            self.seed = gr.Number(label="Random seed", value=0, precision=0, elem_id="seed")

    def _curve_and_comparison(self) -> None:
        gr.Markdown(CURVE_INTRO)
        with gr.Row():
            self.curve_button = gr.Button("Would more images help?", elem_id="curve-btn", scale=1)
            self.curve_note = gr.Markdown(elem_id="curve-note")
        # A picture, drawn once the curve is measured: whole-number ticks at the measured
        # sizes and the spread of the tries as a band, which the live line plots cannot draw.
        # No label: its badge would cover the picture's legend (the axes say what it shows).
        self.curve_plot = gr.Image(show_label=False, type="pil", interactive=False, elem_id="curve-plot",
                                   visible=False, buttons=["download", "fullscreen"])  # until it has points
        gr.Markdown(COMPARE_INTRO)
        with gr.Row():
            self.compare_button = gr.Button("Compare with training from scratch", elem_id="compare-btn", scale=1)
            self.compare_note = gr.Markdown(elem_id="compare-note")
        self.compare_plot = gr.Image(show_label=False, type="pil", interactive=False, elem_id="compare-plot",
                                     visible=False, buttons=["download", "fullscreen"])

    def outputs(self, page: Page) -> list:
        """What a training's updates change: the status, the curves, the buttons, the session."""
        return outputs(TrainUpdate, status=self.status, loss_plot=self.loss_plot, acc_plot=self.acc_plot,
                       train_button=self.train_button, stop_button=self.stop_button,
                       download_button=page.download.model_button, session=page.wire.state)

    @staticmethod
    def long_job(slots: int) -> dict[str, Any]:
        """The options of an event that takes a training slot: Gradio lets ``slots`` of them in at
        once (the running and the waiting; the server's own line orders them)."""
        return {"concurrency_limit": slots, "concurrency_id": "training"}

    def wire(self, page: Page) -> None:
        """Connect step 3's events."""
        w, tr = page.wire, page.wire.server.train
        job = self.long_job(page.slots)
        settings = [self.mode, self.epochs, self.lr, self.val_fraction, self.seed, self.continue_loaded]
        # the queue position and progress show on the status line, never over the live plots
        run = w.event(self.train_button.click, tr.train, [*page.model.choice(), *settings], self.outputs(page),
                      show_progress_on=[self.status], api_name="train", **job)
        self.after_run(page, run, api_name="results")
        w.event(self.stop_button.click, tr.stop, [], [self.status], counted=False, queue=False, api_name="stop")
        w.event(self.curve_button.click, tr.curve, [*page.model.choice(), self.seed],
                outputs(CurveUpdate, status=self.curve_note, plot=self.curve_plot, session=w.state),
                show_progress_on=[self.curve_note], api_name="curve", **job)
        w.event(self.compare_button.click, tr.compare, [*page.model.choice(), self.seed],
                outputs(CompareUpdate, status=self.compare_note, plot=self.compare_plot,
                        compare_button=self.compare_button, stop_button=self.stop_button,
                        feature_map=page.results.feature_map, map_note=page.results.map_note, session=w.state),
                show_progress_on=[self.compare_note], api_name="compare", **job)

    def after_run(self, page: Page, run: Any, api_name: str | None = None) -> None:
        """After the training ``run`` (Train, or the demo button's): the Results step once the model
        is evaluated (also after a Stop), the "not sure" note, the downloads; an error mid-run (a
        model that needs the internet) must not leave Train disabled."""
        w, server = page.wire, page.wire.server
        named = {"api_name": api_name} if api_name else {"api_visibility": "private"}
        w.event(run.success, server.results.view, [], page.results.outputs(), heavy=True, **named)
        w.event(run.success, server.results.threshold_note, [page.test.threshold], [page.test.threshold_note],
                api_visibility="private")
        w.event(run.success, server.download.view, [], page.download.outputs(), api_visibility="private")
        w.event(run.failure, server.train.after_failure, [],
                outputs(FailureView, status=self.status, train_button=self.train_button,
                        stop_button=self.stop_button),
                counted=False, queue=False, api_visibility="private")
