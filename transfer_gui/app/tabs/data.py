"""Tab "1. Your images": a zip, the example, or classes made on the page; the data report.
Events: ``DataStep`` (data_step.py). Updates step 3's Train button."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from ..data_step import NO_IMAGES, ClassesView, DataView
from ..views import COUNTS_COLUMNS, SKIPPED_COLUMNS, image_extensions, outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["DataTab"]


class DataTab:
    """The components of step 1 (build it inside ``gr.Tabs``)."""

    def __init__(self) -> None:
        with gr.Tab("1. Your images", id="tab-data"):
            with gr.Row():
                self._upload_column()
                self._class_builder()
            self.summary = gr.Markdown(NO_IMAGES, elem_id="data-summary")
            with gr.Row():
                # Empty tables start with their column names (Gradio's default headers are "1 2 3").
                self.counts = gr.Dataframe(pd.DataFrame(columns=COUNTS_COLUMNS), label="Images per class",
                                           interactive=False, elem_id="counts", scale=1)
                self.gallery = gr.Gallery(label="A few images of each class", columns=8, height=260,
                                          object_fit="contain", elem_id="gallery", scale=3)
            self.skipped = gr.Dataframe(pd.DataFrame(columns=SKIPPED_COLUMNS), label="Skipped files and why",
                                        interactive=False, elem_id="skipped")
            gr.Markdown("**Checks**: problems that quietly spoil a small image set.")
            self.checks = gr.Markdown(elem_id="checks")
            self.check_images = gr.Gallery(label="Images to look at", columns=8, height="auto", visible=False,
                                           object_fit="contain", elem_id="check-images")

    def _upload_column(self) -> None:
        with gr.Column():
            gr.Markdown("**Upload a .zip** with one folder per class (e.g. `cats/`, `dogs/`), pictures inside.")
            self.zip_upload = gr.File(label="Zip of class folders", file_types=[".zip"], elem_id="zip-upload")
            self.example_button = gr.Button("Use the example dataset (6 kinds of drawings)", elem_id="example-btn")

    def _class_builder(self) -> None:
        with gr.Column():
            gr.Markdown("**Or make classes here**: name a class, add pictures "
                        "(files, webcam or paste), repeat for each class.")
            with gr.Row():
                self.class_name = gr.Textbox(label="Class name", placeholder="e.g. apples", elem_id="class-name",
                                             scale=2)
                self.add_button = gr.Button("Add to class", elem_id="add-images", scale=1)
            with gr.Row():
                self.class_files = gr.File(label="Pictures", file_count="multiple", file_types=image_extensions(),
                                           elem_id="class-files")
                # image_mode=None keeps transparency: the engine composites it on white
                # (Gradio's default "RGB" would drop alpha and expose hidden colours).
                self.snapshot = gr.Image(label="Webcam or paste", type="filepath", image_mode=None,
                                         sources=["webcam", "clipboard", "upload"], elem_id="class-snapshot")
            self.classes_table = gr.Dataframe(label="Your classes", interactive=False, elem_id="classes-table")
            with gr.Row():
                self.use_classes_button = gr.Button("Use these classes", variant="primary", elem_id="use-classes")
                self.clear_button = gr.Button("Start over", elem_id="clear-classes")

    def outputs(self, page: Page) -> list:
        """What loading images updates: this tab's report, step 3's Train button, the session."""
        return outputs(DataView, summary=self.summary, counts=self.counts, gallery=self.gallery,
                       skipped=self.skipped, checks=self.checks, check_images=self.check_images,
                       train_button=page.train.train_button, session=page.wire.state)

    def wire(self, page: Page) -> None:
        """Connect step 1's events."""
        w, d = page.wire, page.wire.server.data
        loaded = self.outputs(page)
        page.demo.load(w.server.event(d.classes_table, counted=False), [w.state], [self.classes_table], queue=False,
                       api_visibility="private")
        w.event(self.zip_upload.upload, d.load_zip, [self.zip_upload], loaded, heavy=True,
                show_progress_on=[self.summary], api_name="load_zip")
        w.event(self.example_button.click, d.load_example, [], loaded, show_progress_on=[self.summary],
                api_name="use_example")
        w.event(self.add_button.click, d.add_images, [self.class_name, self.class_files, self.snapshot],
                outputs(ClassesView, table=self.classes_table, files=self.class_files, snapshot=self.snapshot,
                        session=w.state), heavy=True, api_visibility="private")
        w.event(self.use_classes_button.click, d.use_classes, [], loaded, heavy=True,
                show_progress_on=[self.summary], api_visibility="private")
        w.event(self.clear_button.click, d.clear_classes, [], [self.classes_table, w.state],
                api_visibility="private")
