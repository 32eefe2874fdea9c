"""Tab "4. Results": the summary, per-class table, clickable confusion matrix, the map of the
features, the reliability chart, the most confident mistakes and the pictures to check. Events:
``ResultsStep`` (results_step.py) and ``CheckStep`` (check_step.py); its view is filled by steps 2
and 3 (``parts``/``outputs``). The check's changes apply to step 1's data set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from ..check_step import NO_CHECKS, CheckView, PickView
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
            self._checks()

    def _checks(self) -> None:
        gr.Markdown("**Pictures to check**: pictures whose label is probably wrong (the models that had not "
                    "seen them disagree with it, and so do the pictures most like them), near-duplicates, and "
                    "pictures unlike all the others. Your changes apply to the data set of step 1; press "
                    "**Train** again to learn from them.")
        self.check_note = gr.Markdown(NO_CHECKS, elem_id="check-note")
        # no preview: a click picks the picture (its reason shows below), the grid stays in view
        self.check_gallery = gr.Gallery(label="Pictures to check (why, most likely first)", columns=6,
                                        object_fit="contain", height="auto", allow_preview=False,
                                        elem_id="check-gallery")
        self.check_pick = gr.Markdown(elem_id="check-pick")
        with gr.Row():
            self.check_keep = gr.Button("Keep as it is", elem_id="check-keep", size="sm")
            self.check_move = gr.Dropdown(label="Move it to", choices=[], elem_id="check-move", scale=2)
            self.check_move_btn = gr.Button("Move", elem_id="check-move-btn", size="sm")
            self.check_remove = gr.Button("Remove it", elem_id="check-remove", variant="stop", size="sm")
        self.check_changes = gr.Markdown(elem_id="check-changes")
        with gr.Row():
            self.check_undo = gr.Button("Undo the last change", interactive=False, elem_id="check-undo", size="sm")
            self.check_zip = gr.Button("Download the corrected data set (.zip)", elem_id="check-zip", size="sm")
        self.check_file = gr.File(label="Corrected data set: one folder per class, and changes.csv",
                                  visible=False, interactive=False, elem_id="check-file")

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
                    reliability=self.reliability, feature_map=self.feature_map, map_note=self.map_note,
                    check_note=self.check_note, check_gallery=self.check_gallery, check_changes=self.check_changes,
                    check_undo=self.check_undo, check_pick=self.check_pick, check_move=self.check_move)

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
        self._wire_checks(page)

    def _wire_checks(self, page: Page) -> None:
        w, c = page.wire, page.wire.server.check
        view = outputs(CheckView, note=self.check_note, gallery=self.check_gallery, changes=self.check_changes,
                       undo=self.check_undo, pick=self.check_pick, move_to=self.check_move)
        w.plain(self.check_gallery.select, c.select, [w.state], outputs(PickView, pick=self.check_pick,
                                                                          move_to=self.check_move),
                api_visibility="private")
        w.event(self.check_keep.click, c.keep, [], view, api_visibility="private")
        w.event(self.check_move_btn.click, c.move, [self.check_move], view, api_visibility="private")
        w.event(self.check_remove.click, c.remove, [], view, api_visibility="private")
        w.event(self.check_undo.click, c.undo, [], view, api_visibility="private")
        w.event(self.check_zip.click, c.corrected_zip, [], [self.check_file], heavy=True,
                show_progress_on=[self.check_file], api_visibility="private")
