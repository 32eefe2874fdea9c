"""Tab "2. Model": the pretrained model to start from, any timm model, or a model trained before.
Events: ``ModelStep`` (model_step.py). Updates step 3's "continue" box, step 4's Results (an
evaluation) and step 6's downloads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from ...engine.catalog import DEFAULT_MODEL
from ..model_step import ModelLoaded, describe_model, model_choices
from ..model_trials_step import TRIAL_COLUMNS, TrialsView
from ..views import outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["ModelTab"]


class ModelTab:
    """The components of step 2 (build it inside ``gr.Tabs``)."""

    def __init__(self) -> None:
        with gr.Tab("2. Model", id="tab-model"):
            self.model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Pretrained model",
                                     elem_id="model")
            self.card = gr.Markdown(describe_model(DEFAULT_MODEL), elem_id="model-card")
            with gr.Row():
                # online, the catalog's other models join the built-in ones (model_trials.models_to_try)
                self.trials_button = gr.Button("Not sure? Try every built-in model on your pictures (a Quick each)",
                                               elem_id="trials-btn", scale=2)
                self.use_best = gr.Button(visible=False, variant="primary", elem_id="use-best", scale=1)
            self.trials_status = gr.Markdown(elem_id="trials-status")
            self.trials_table = gr.Dataframe(pd.DataFrame(columns=TRIAL_COLUMNS), interactive=False,
                                             label="Models on your pictures, best first", elem_id="trials-table")
            with gr.Accordion("Advanced: any timm model, or your own weights", open=False):
                self.custom_model = gr.Textbox("", label="timm model name (overrides the list)",
                                               placeholder="e.g. efficientnet_b1.ra4_e3600_r240_in1k",
                                               elem_id="custom-model")
                # .safetensors only: .pth/.pt/.bin files are pickles, which can run code when loaded
                self.weights_file = gr.File(label="Weights file for that architecture (.safetensors)",
                                            file_types=[".safetensors"], elem_id="weights-file")
            gr.Markdown("**Or start from a model you trained before**: upload the .zip this app gave "
                        "you. Then test it, measure it on the images of step 1, or continue training it "
                        "(new classes are added, the old ones keep what they learned).")
            with gr.Row():
                self.bundle_upload = gr.File(label="Trained model (.zip)", file_types=[".zip"],
                                             elem_id="bundle-upload")
                with gr.Column():
                    self.bundle_status = gr.Markdown(elem_id="bundle-status")
                    self.evaluate_button = gr.Button("Evaluate it on the images of step 1", elem_id="evaluate-btn")
                    self.evaluate_status = gr.Markdown(elem_id="evaluate-status")

    def choice(self) -> list:
        """The inputs that say which model to start from, as the training events take them."""
        return [self.model, self.custom_model, self.weights_file]

    def wire(self, page: Page) -> None:
        """Connect step 2's events."""
        w, m = page.wire, page.wire.server.model
        w.plain(self.model.change, describe_model, [self.model], [self.card], show_progress_on=[self.card],
                api_visibility="private")
        loaded = outputs(ModelLoaded, status=self.bundle_status, continue_box=page.train.continue_loaded,
                         download_button=page.download.model_button, session=w.state)
        upload = w.event(self.bundle_upload.upload, m.load_model, [self.bundle_upload], loaded, heavy=True,
                         show_progress_on=[self.bundle_status], api_name="load_model")
        w.event(upload.success, w.server.download.view, [], page.download.outputs(), api_visibility="private")
        trials = w.server.trials
        w.event(self.trials_button.click, trials.try_models, [],
                outputs(TrialsView, status=self.trials_status, table=self.trials_table, use_button=self.use_best,
                        session=w.state),
                show_progress_on=[self.trials_status], api_name="compare_models", **page.train.long_job(page.slots))
        w.event(self.use_best.click, trials.use_best, [], [self.model], api_visibility="private")
        w.event(self.evaluate_button.click, m.evaluate_model, [],
                [self.evaluate_status, *page.results.outputs()],  # a status line, then the Results step
                heavy=True, show_progress_on=[self.evaluate_status], api_name="evaluate_model")
