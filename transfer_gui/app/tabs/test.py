"""Tab "5. Test": one picture (with "not sure", "not one of your classes", a heat map and "file it
under") or many (a table and a CSV). Events: ``TestStep`` (test_step.py); "file it under" is step 7's (sort_step.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from ..assets import TEST_IMAGES
from ..sort_step import FiledView
from ..test_step import BatchView, Verdict
from ..views import BATCH_COLUMNS, image_extensions, outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["TestTab"]


class TestTab:
    """The components of step 5 (build it inside ``gr.Tabs``)."""

    __test__ = False  # a page's tab, not a pytest test class

    def __init__(self) -> None:
        with gr.Tab("5. Test", id="tab-test"):
            self.threshold = gr.Slider(0, 1, value=0.5, step=0.05, elem_id="threshold",
                                       label='Answer "not sure" below this confidence')
            self.threshold_note = gr.Markdown(elem_id="threshold-note")
            self.none_of_these = gr.Checkbox(
                value=True, elem_id="none-of-these", label='Answer "not one of your classes" for pictures unlike all of yours',
                info="The model compares each picture with every picture it learned from; one further from all of "
                     "them than almost any of yours is from the rest gets no class. Untick to always get a class.")
            with gr.Row():
                self._one_picture()
            gr.Markdown("**Many pictures at once**: choose pictures or .zip files; get a table and a CSV "
                        "(the same rows as `python -m transfer_gui predict --csv`).")
            with gr.Row():
                self.batch_files = gr.File(label="Pictures or .zip files", file_count="multiple",
                                           file_types=image_extensions() + [".zip"], elem_id="batch-files")
                with gr.Column():
                    self.batch_button = gr.Button("Classify them", variant="primary", elem_id="batch-btn")
                    self.batch_csv = gr.DownloadButton("Download the table (.csv)", interactive=False,
                                                       elem_id="batch-csv")
            self.batch_note = gr.Markdown(elem_id="batch-note")
            self.batch_table = gr.Dataframe(pd.DataFrame(columns=BATCH_COLUMNS), label="Predictions",
                                            interactive=False, elem_id="batch-table")

    def _one_picture(self) -> None:
        with gr.Column():
            self.image = gr.Image(label="A new picture (upload, webcam or paste)", type="filepath", image_mode=None,
                                  sources=["upload", "webcam", "clipboard"], elem_id="test-image")
            examples = sorted(str(p) for p in TEST_IMAGES.glob("*") if p.is_file())
            gr.Examples(examples, inputs=[self.image], label="Or try one of these", cache_examples=False)
        with gr.Column():
            self.verdict = gr.Markdown(elem_id="verdict")
            self.prediction = gr.Label(num_top_classes=5, label="Confidence per class", elem_id="prediction")
        with gr.Column():
            self.heat = gr.Image(label="Where the model looked", type="pil", interactive=False, elem_id="test-heat")
            self.heat_note = gr.Markdown(elem_id="heat-note")
            self.file_under = gr.Radio(label="Wrong? File this picture under the right class (it joins "
                                             "the training data)", choices=[], interactive=False,
                                       elem_id="file-under")
            self.filed_note = gr.Markdown(elem_id="filed-note")

    def wire(self, page: Page) -> None:
        """Connect step 5's events."""
        w, te = page.wire, page.wire.server.test
        answer = outputs(Verdict, verdict=self.verdict, confidences=self.prediction, heat=self.heat,
                         heat_note=self.heat_note, file_under=self.file_under)
        # One picture decodes under the memory budget (TestStep.predict), in Gradio's own groups of
        # four per listener: a prediction of a photo takes seconds, never the heavy group's turn.
        picture = [self.image, self.threshold, self.none_of_these]
        w.event(self.image.change, te.predict, picture, answer, show_progress_on=[self.verdict], api_name="predict")
        for setting in (self.threshold, self.none_of_these):
            w.event(setting.change, te.predict, picture, answer, trigger_mode="always_last",
                    show_progress_on=[self.verdict], api_visibility="private")
        w.event(self.threshold.change, w.server.results.threshold_note, [self.threshold], [self.threshold_note],
                trigger_mode="always_last", api_name="not_sure_meaning")
        w.event(self.file_under.input, w.server.sort.file_test_picture, [self.image, self.file_under],
                outputs(FiledView, note=self.filed_note, choice=self.file_under), api_visibility="private")
        w.event(self.batch_button.click, te.batch_predict, [self.batch_files, self.threshold, self.none_of_these],
                outputs(BatchView, summary=self.batch_note, table=self.batch_table, csv_button=self.batch_csv),
                heavy=True, show_progress_on=[self.batch_note], api_name="batch_predict")
