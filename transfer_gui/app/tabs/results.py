"""Tab "4. Results": the summary, per-class table, clickable confusion matrix, the map of the
features, the reliability chart and the most confident mistakes. Events: ``ResultsStep``
(results_step.py); its view is filled by steps 2 and 3 (``parts``/``outputs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from ..results_step import NO_RESULTS, CellPick, CellView, MapPick, ResultsView
from ..views import PER_CLASS_COLUMNS, outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["ResultsTab"]


class ResultsTab:
    """The components of step 4 (build it inside ``gr.Tabs``)."""

    def __init__(self) -> None:
        with gr.Tab("4. Results", id="tab-results"):
            self.summary = gr.Markdown(NO_RESULTS, elem_id="results-summary")
            self.per_class = gr.Dataframe(pd.DataFrame(columns=PER_CLASS_COLUMNS),
                                          label="Per class: precision, recall, F1 on answers for images the "
                                                "model had not seen", interactive=False, elem_id="per-class")
            with gr.Row():
                self._confusion()
            self._feature_map()
            gr.Markdown("**Can you trust its confidence?** Each point groups answers given with about the "
                        "same confidence (3 answers or more) and shows how often they were right; on the "
                        "diagonal, \"80 %\" means right 80 % of the time.")
            self.reliability = gr.LinePlot(x="confidence", y="accuracy", color="series", x_lim=[0, 1],
                                           y_lim=[0, 1], x_title="confidence the model gave",
                                           y_title="share that was right", height=280, elem_id="reliability",
                                           visible=False)
            gr.Markdown("**Most confident mistakes**: the images the model got wrong with the most "
                        "conviction (fastai's *top losses*). Mislabelled images often show up here.")
            self.show_heat = gr.Checkbox(label="Show where the model looked (heat map of the class it chose)",
                                         value=False, elem_id="mistake-heat")
            self.mistakes = gr.Gallery(label="Mistakes (true → predicted)", columns=6, object_fit="contain",
                                       height="auto", elem_id="mistakes")

    def _confusion(self) -> None:
        with gr.Column(scale=2):
            gr.Markdown("**Confusion matrix**: rows are the true classes, columns what the model "
                        "said. Click a cell to see its images.")
            # No label: its badge would cover the top of the picture.
            self.confusion = gr.Image(show_label=False, type="pil", interactive=False, elem_id="confusion",
                                      buttons=["download", "fullscreen"])
        with gr.Column(scale=3):
            with gr.Row():
                self.cell_true = gr.Dropdown(label="True class", choices=[], elem_id="cell-true")
                self.cell_pred = gr.Dropdown(label="Predicted as", choices=[], elem_id="cell-pred")
            self.cell_note = gr.Markdown(elem_id="cell-note")
            self.cell_gallery = gr.Gallery(label="Images in this cell (predicted class, confidence)", columns=5,
                                           height=320, object_fit="contain", elem_id="cell-gallery")

    def _feature_map(self) -> None:
        gr.Markdown("**What the model sees**: every image on one map, placed by the model's features.")
        self.map_note = gr.Markdown(elem_id="map-note")
        with gr.Row():
            self.feature_map = gr.Image(show_label=False, type="pil", interactive=False, elem_id="feature-map",
                                        visible=False, buttons=["download", "fullscreen"], scale=3, format="png")
            with gr.Column(scale=1):
                self.map_pick = gr.Image(label="The image you clicked", interactive=False, visible=False,
                                         height=240, elem_id="map-pick")
                self.map_pick_note = gr.Markdown(elem_id="map-pick-note")

    def parts(self) -> dict[str, Any]:
        """The components of ``ResultsView`` by field name (an evaluation in step 2 fills them too)."""
        return dict(summary=self.summary, per_class=self.per_class, confusion=self.confusion,
                    cell_true=self.cell_true, cell_pred=self.cell_pred, cell_note=self.cell_note,
                    cell_gallery=self.cell_gallery, mistakes=self.mistakes, show_heat=self.show_heat,
                    reliability=self.reliability, feature_map=self.feature_map, map_note=self.map_note)

    def outputs(self) -> list:
        """The output components of ``ResultsStep.view``."""
        return outputs(ResultsView, **self.parts())

    def wire(self, page: Page) -> None:
        """Connect step 4's events."""
        w, r = page.wire, page.wire.server.results
        cell = outputs(CellView, note=self.cell_note, gallery=self.cell_gallery)
        w.event(self.cell_true.input, r.cell_view, [self.cell_true, self.cell_pred], cell, api_visibility="private")
        w.event(self.cell_pred.input, r.cell_view, [self.cell_true, self.cell_pred], cell, api_visibility="private")
        w.plain(self.confusion.select, r.select_cell, [w.state],
                outputs(CellPick, true_label=self.cell_true, predicted=self.cell_pred, note=self.cell_note,
                        gallery=self.cell_gallery), api_visibility="private")
        w.plain(self.feature_map.select, r.select_point, [w.state],
                outputs(MapPick, image=self.map_pick, note=self.map_pick_note), api_visibility="private")
        w.event(self.show_heat.input, r.mistakes_view, [self.show_heat], [self.mistakes], heavy=True,
                show_progress_on=[self.mistakes], api_visibility="private")
