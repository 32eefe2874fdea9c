"""Step 5, "Test": one new picture with its heat map, a "not sure" threshold and the "none of
these" answer, or many at once as a table and a CSV."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import gradio as gr
import pandas as pd
from PIL import Image

from ..engine.errors import UserInputError
from .memory import picture_bytes
from .session import Session
from .views import BATCH_COLUMNS

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["TestStep", "Verdict", "BatchView"]


class Verdict(NamedTuple):
    """The answer for one picture."""

    verdict: str
    confidences: dict | None  # every label with its probability, for gr.Label
    heat: Any
    heat_note: str
    file_under: Any  # "Wrong? File it under": the model's classes


class BatchView(NamedTuple):
    """The answers for many pictures."""

    summary: str
    table: pd.DataFrame
    csv_button: gr.DownloadButton


class TestStep:
    """Step 5's events."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    def predict(self, session: Session, image: str | Image.Image | None, threshold: float = 0.5,
                none_of_these: bool = True) -> Verdict:
        """One picture (a file path or an image): the verdict, every class's confidence, the heat
        map. Its decoding waits for room in the server's memory budget (``picture_bytes``).
        ``none_of_these``: answer "not one of your classes" for a picture unlike every training
        picture (when the model has that check)."""
        from ..engine.batch import NONE_OF_THESE, NOT_SURE, decide
        from ..engine.explain import heat_map
        from ..engine.images import IMAGE_READ_ERRORS, failure_reason, load_image

        if image is None:
            return Verdict("", None, None, "", gr.Radio(choices=[], value=None, interactive=False))
        if session.predictor is None:
            raise UserInputError("Train a model first (step 3), then test it here.")
        need = picture_bytes(image) if isinstance(image, (str, Path)) else 0
        with self.ctx.memory.reserve(need, "this picture"):
            try:
                picture = load_image(image)  # decoded once: a big photo costs seconds per decode
            except IMAGE_READ_ERRORS as exc:
                raise UserInputError(f"This picture cannot be used: {failure_reason(exc, image)}. Try a JPEG, PNG or "
                                     "WebP picture.") from None
            predictor = session.predictor
            hm = heat_map(predictor, picture)  # its forward pass also gives the answers
        novel = bool(none_of_these) and hm.novel
        probs = hm.probabilities
        label, confidence = decide(probs, predictor.labels, threshold or 0.0, novel)
        ranked = sorted(zip(predictor.labels, probs.tolist()), key=lambda t: -t[1])
        if label == NONE_OF_THESE:
            top = ", ".join(f"{name} {p:.0%}" for name, p in ranked[:3])
            verdict = ("### Not one of your classes\nThis picture is unlike every picture the model learned from, "
                       f"so it does not name a class. The closest classes: {top}.")
        elif label == NOT_SURE:
            top = ", ".join(f"{name} {p:.0%}" for name, p in ranked[:3])
            verdict = (f"### Not sure\nThe best guess is **{ranked[0][0]}** at {confidence:.0%}, below your "
                       f"{threshold:.0%} threshold. Top candidates: {top}.")
        else:
            verdict = f"### {label}\n{confidence:.0%} sure."
        return Verdict(verdict, dict(ranked), hm.overlay(), hm.caption(),
                       gr.Radio(choices=list(predictor.labels), value=None, interactive=True))

    def batch_predict(self, session: Session, files: list[str] | None, threshold: float = 0.5,
                      none_of_these: bool = True) -> BatchView:
        """Many pictures (and/or .zip files): a table and its CSV."""
        from ..engine.batch import NONE_OF_THESE, NOT_SURE, iter_image_files, prediction_rows, write_csv

        predictor = session.predictor  # a training starting meanwhile forgets the session's model
        if predictor is None:
            raise UserInputError("Train a model first (step 3), then classify pictures here.")
        if not files:
            raise UserInputError("Choose some pictures or a .zip of pictures first.")
        limits = self.ctx.limits
        folder = session.new_folder("batch")
        skipped: list[str] = []
        try:
            images = iter_image_files([(Path(f).name, Path(f)) for f in files], folder,
                                      lambda shown, why: skipped.append(f"{shown}: {why}"),
                                      limits=limits.archive.within(session.room()))
            rows = list(prediction_rows(predictor, images, top_k=3, threshold=threshold or 0.0,
                                        on_skip=lambda shown, why: skipped.append(f"{shown}: {why}"),
                                        megapixels=limits.batch_megapixels, none_of_these=bool(none_of_these)))
        except BaseException:
            session.drop_folder(folder)
            raise
        finally:  # the pictures of a zip were needed only to answer
            for extracted in folder.glob("zip*"):
                shutil.rmtree(extracted, ignore_errors=True)
        if not rows:
            session.drop_folder(folder)
            raise UserInputError("None of these files is a readable picture. Use JPEG, PNG, WebP, BMP, GIF or TIFF files.")
        csv_path = folder / "predictions.csv"
        write_csv(rows, csv_path)
        session.keep_folder("batch", folder)
        table = pd.DataFrame([{"image": r["path"], "label": r["label"], "confidence": round(r["confidence"], 3),
                               "novelty": round(r["novelty"], 2) if r["novelty"] != "" else None}
                              for r in rows], columns=BATCH_COLUMNS)
        unsure = sum(r["label"] == NOT_SURE for r in rows)
        novel = sum(r["label"] == NONE_OF_THESE for r in rows)
        summary = f"**{len(rows)} picture(s) classified**"
        summary += f", {unsure} of them 'not sure' (below {threshold:.0%})" if unsure else ""
        summary += f", {novel} of them '{NONE_OF_THESE}'" if novel else ""
        summary += "."
        if skipped:
            summary += f"  \n{len(skipped)} file(s) skipped: " + "; ".join(skipped[:10])
        return BatchView(summary, table, gr.DownloadButton(value=str(csv_path), interactive=True))
