"""Step 6, "Download": the trained model as a bundle, its exports to TorchScript and ONNX (each
checked against the app's answers), its model card, and publishing on the Hugging Face Hub."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import gradio as gr

from ..engine.errors import UserInputError
from ..engine.hub import push_bundle, push_demo_space
from .jobs import GaveUp, done, turn
from .session import Session

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["DownloadStep", "ExportView", "DownloadView"]

_PARITY_IMAGES = 64  # exports are checked against the app's answers on this many images


class ExportView(NamedTuple):
    """The export's checks, and its download."""

    report: str
    download: gr.DownloadButton


class DownloadView(NamedTuple):
    """Step 6 for a new current model: its card, and no export yet."""

    card: str
    export_status: str
    export_download: gr.DownloadButton


class DownloadStep:
    """Step 6's events."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    def export(self, session: Session) -> ExportView:
        """TorchScript + ONNX with preprocessing inside, each checked against the app's own predictions."""
        if session.predictor is None or session.bundle_folder is None:
            raise UserInputError("Train a model (step 3) or upload one (step 2) first.")
        try:
            for _ in turn(self.ctx, session, "An export"):
                pass  # the export waits quietly; its button shows Gradio's progress meanwhile
        except GaveUp:
            return ExportView("Stopped before the export started.", gr.DownloadButton(interactive=False))
        try:
            return self._export(session)
        finally:
            done(self.ctx, session)

    def _export(self, session: Session) -> ExportView:
        from ..engine.bundle import zip_bundle
        from ..engine.export import export_all
        from .assets import TEST_IMAGES

        trained = session.trained
        if trained is not None and trained.dataset is not None and trained.result.validation is not None:
            images = [trained.dataset.items[i].path for i in trained.result.validation.indices[:_PARITY_IMAGES]]
        elif session.dataset is not None:
            images = [item.path for item in session.dataset.items[:_PARITY_IMAGES]]
        else:
            images = sorted(p for p in TEST_IMAGES.glob("*") if p.is_file())
        folder = session.new_folder("export") / "exported-model"
        result = export_all(session.predictor, folder, images, bundle_folder=session.bundle_folder)
        lines = [("**Passed** · " if c.passed else "**Failed** · ") + c.sentence() for c in result.checks]
        lines.append("Both files take an RGB uint8 picture of shape (height, width, 3), any size, and return "
                     "the class probabilities; the class names are in `labels.json`.")
        if not result.passed:
            lines.append("A failed check means that file may answer differently from this app: "
                         "use the timm bundle (the .zip above) instead.")
        session.export_zip = zip_bundle(folder, folder.parent / "exported-model.zip")
        session.keep_folder("export", folder.parent)
        return ExportView("  \n".join(lines), gr.DownloadButton(value=str(session.export_zip), interactive=True))

    def push(self, session: Session, repo: str, token: str, private: bool, demo_space: bool = False,
             oauth_token: gr.OAuthToken | None = None) -> str:
        """Publish the current bundle on the Hugging Face Hub (and, with ``demo_space``, a Space
        that shows it working) with the pasted token, or else the token of "Sign in with Hugging
        Face" (on a Space; Gradio passes it as ``oauth_token``). Returns a status line."""
        model = session.model
        if model is None or model.folder is None:
            raise UserInputError("Train a model (step 3) or upload one (step 2) first.")
        if demo_space and private:
            raise UserInputError("A demo Space shows the model to anyone, so the model must be public: untick "
                                 "'Private' to publish both.")
        token = (token or "").strip() or (oauth_token.token if oauth_token is not None else "")
        url = push_bundle(model.folder, repo, token, private=bool(private))
        status = (f"**Published:** [{url}]({url}). Anyone with access loads it with "
                  f"`timm.create_model(\"hf-hub:{repo.strip()}\", pretrained=True)`.")
        if demo_space:
            space = push_demo_space(model.predictor.labels, model.predictor.temperature, repo, token,
                                    private=bool(private))
            status += f" Its demo, for anyone to try: [{space}]({space}) (a Space takes a few minutes to build)."
        return status

    @classmethod
    def view(cls, session: Session) -> DownloadView:
        """After a training or upload: the model card, and no export yet."""
        return DownloadView(cls.card_view(session), "", gr.DownloadButton(value=None, interactive=False))

    @staticmethod
    def card_view(session: Session) -> str:
        """The current bundle's model card (without its YAML header)."""
        from ..engine.bundle import read_card

        return read_card(session.bundle_folder) if session.bundle_folder is not None else ""
