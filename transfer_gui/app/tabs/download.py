"""Tab "6. Download": the trained model as a zip, exports for other apps, publishing on the Hub,
the model card. Events: ``DownloadStep`` (download_step.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from ..download_step import DownloadView, ExportView
from ..views import outputs

if TYPE_CHECKING:
    from .page import Page

__all__ = ["DownloadTab"]


class DownloadTab:
    """The components of step 6 (build it inside ``gr.Tabs``); ``sign_in`` offers "Sign in with
    Hugging Face" for publishing (its token publishes when none is pasted)."""

    def __init__(self, sign_in: bool) -> None:
        with gr.Tab("6. Download", id="tab-download"):
            gr.Markdown("The trained model as a zip in timm / Hugging Face layout "
                        "(`config.json` + `model.safetensors`, labels and preprocessing inside). "
                        "Load it with `timm.create_model('local-dir:FOLDER', pretrained=True)` "
                        "or `python -m transfer_gui predict model.zip photo.jpg`.")
            self.model_button = gr.DownloadButton("Download the trained model (.zip)", interactive=False,
                                                  elem_id="download-btn")
            gr.Markdown("**For other apps**: TorchScript and ONNX files with the resizing and "
                        "normalisation built in (input: an RGB picture as a uint8 array of any size; "
                        "output: class probabilities). Each file is checked against this app's answers "
                        "on the held-out images right after it is written.")
            with gr.Row():
                self.export_button = gr.Button("Export to ONNX and TorchScript", elem_id="export-btn")
                self.export_download = gr.DownloadButton("Download the exports (.zip)", interactive=False,
                                                         elem_id="export-download")
            self.export_status = gr.Markdown(elem_id="export-status")
            with gr.Accordion("Publish on the Hugging Face Hub (needs the internet)", open=False):
                self._publish(sign_in)
            with gr.Accordion("Model card (README.md in the .zip)", open=False):
                self.card = gr.Markdown(elem_id="model-card-preview")

    def _publish(self, sign_in: bool) -> None:
        with gr.Row():
            self.repo = gr.Textbox(label="Repo (USER/NAME)", placeholder="alice/my-flowers", elem_id="hub-repo")
            self.token = gr.Textbox(label="Access token with write permission"
                                          + (" (or sign in below)" if sign_in else ""), type="password",
                                    elem_id="hub-token")
            self.private = gr.Checkbox(label="Private", value=True, elem_id="hub-private")
            self.space = gr.Checkbox(label="Also a demo Space anyone can try (needs a public model)", value=False,
                                     elem_id="hub-space")
        if sign_in:
            gr.LoginButton(elem_id="hub-login")
        self.push_button = gr.Button("Publish", elem_id="push-btn")
        self.push_status = gr.Markdown(elem_id="push-status")

    def outputs(self) -> list:
        """The output components of ``DownloadStep.view`` (after a training or a loaded model)."""
        return outputs(DownloadView, card=self.card, export_status=self.export_status,
                       export_download=self.export_download)

    def wire(self, page: Page) -> None:
        """Connect step 6's events."""
        w, dl = page.wire, page.wire.server.download
        w.event(self.export_button.click, dl.export, [],
                outputs(ExportView, report=self.export_status, download=self.export_download),
                show_progress_on=[self.export_status], api_name="export", **page.train.long_job(page.slots))
        w.event(self.push_button.click, dl.push, [self.repo, self.token, self.private, self.space],
                [self.push_status], show_progress_on=[self.push_status], api_name="push")
