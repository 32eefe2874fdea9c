"""Tab "7. Sort a pile": the model suggests a class for each unsorted picture, least certain
first; the user answers; the model retrains on the answers; the sorted pictures download as a zip.
Events: ``SortStep`` (sort_step.py). A retraining updates step 6's model download."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from ..sort_step import NO_PILE, SortView
from ..texts import SORT_INTRO
from ..train_step import CurveUpdate
from ..views import image_extensions, outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["SortTab"]


class SortTab:
    """The components of step 7 (build it inside ``gr.Tabs``)."""

    def __init__(self) -> None:
        with gr.Tab("7. Sort a pile", id="tab-sort"):
            gr.Markdown(SORT_INTRO)
            self.pile_upload = gr.File(label="Unsorted pictures (many files, or a .zip)", file_count="multiple",
                                       file_types=image_extensions() + [".zip"], height=180, elem_id="pile-upload")
            self.status = gr.Markdown(NO_PILE, elem_id="pile-status")
            with gr.Row():
                self.current = gr.Image(label="The picture the model is least sure of", interactive=False,
                                        visible=False, height=320, elem_id="pile-current")
                self._answers()
            self.queue = gr.Gallery(label="Next up (least certain first): suggestion and how sure", columns=6,
                                    height="auto", object_fit="contain", elem_id="pile-queue")
            with gr.Row():
                self.pack = gr.Button("Make a zip of the sorted pictures", elem_id="pile-pack")
                self.download = gr.DownloadButton("Download the sorted pictures", interactive=False,
                                                  elem_id="pile-download")
            with gr.Row():
                self.curve_button = gr.Button("Would more images help? (on the labelled pictures)",
                                              elem_id="pile-curve-btn")
                self.curve_note = gr.Markdown(elem_id="pile-curve-note")
            self.curve_plot = gr.Image(show_label=False, type="pil", interactive=False, visible=False,
                                       elem_id="pile-curve")

    def _answers(self) -> None:
        with gr.Column():
            self.question = gr.Markdown(elem_id="pile-question")
            self.accept = gr.Button("Yes", variant="primary", interactive=False, elem_id="pile-accept")
            # one click per answer (a dropdown also reports its value again when it loses focus)
            self.other = gr.Radio(label="No, it is:", choices=[], interactive=False, elem_id="pile-other")
            self.skip = gr.Button("Skip (ask me later)", elem_id="pile-skip")
            with gr.Row():
                self.confidence = gr.Slider(0.5, 1.0, value=0.95, step=0.01, label="Accept every suggestion at "
                                            "least this sure", elem_id="pile-threshold")
                self.accept_all = gr.Button("Accept them all", elem_id="pile-accept-all")
            self.retrain = gr.Button("Retrain with the sorted pictures now", elem_id="pile-retrain")

    def wire(self, page: Page) -> None:
        """Connect step 7's events."""
        w, s = page.wire, page.wire.server.sort
        view = outputs(SortView, status=self.status, current=self.current, question=self.question,
                       accept_button=self.accept, other=self.other, queue=self.queue,
                       download_button=self.download, model_download=page.download.model_button, session=w.state)
        # Each decision is instant; every RETRAIN_EVERY decisions the head retrains, in the training line.
        long = {**page.train.long_job(page.slots), "show_progress_on": [self.status]}
        quick = {"show_progress_on": [self.status], "api_visibility": "private"}  # the question stays in view
        for decided in (w.event(self.accept.click, s.accept, [], view, **quick),
                        w.event(self.other.input, s.choose, [self.other], view, **quick),
                        w.event(self.accept_all.click, s.accept_above, [self.confidence], view, **quick)):
            w.event(decided.success, s.retrain_when_due, [], view, api_visibility="private", **long)
        w.event(self.skip.click, s.skip, [], view, **quick)
        w.event(self.pile_upload.upload, s.load_pile, [self.pile_upload], view, heavy=True,
                show_progress_on=[self.status], api_visibility="private")
        w.event(self.retrain.click, s.retrain, [], view, api_visibility="private", **long)
        w.event(self.pack.click, s.download, [], view, heavy=True, show_progress_on=[self.status],
                api_visibility="private")
        w.event(self.curve_button.click, s.curve, [],
                outputs(CurveUpdate, status=self.curve_note, plot=self.curve_plot, session=w.state),
                show_progress_on=[self.curve_note], api_name="sort_curve",  # named: step 3's public one is /curve
                api_visibility="private", **page.train.long_job(page.slots))
