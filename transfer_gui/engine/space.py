"""A demo Space for a published model: a folder that Hugging Face Spaces runs as a small Gradio app
(a picture in, every class's confidence and "not sure" out), loading the model from its Hub
repository with timm alone, so a link shows anyone the model working.

The app is written once, from a template, with the model's repository, its calibration
temperature and its classes filled in as Python literals; nothing else of the bundle is copied.
``TLS_DEMO_MODEL`` (a timm name such as ``local-dir:FOLDER``) points it at another copy of the
model: the tests run it against the bundle on disk, offline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from .names import check_repo_id

__all__ = ["write_demo_space", "demo_space_id"]

_logger = logging.getLogger(__name__)

_APP = '''"""A demo of {repo}, an image classifier made with Transfer Learning Studio.

Upload, paste or film a picture: every class's confidence, and "not sure" below the threshold.
"""

import os

import gradio as gr
import timm
import torch
from PIL import Image, ImageOps

REPO = {repo!r}
TEMPERATURE = {temperature!r}  # the calibration the model was trained with (logits / T)
LABELS = {labels!r}

model = timm.create_model(os.environ.get("TLS_DEMO_MODEL", "hf-hub:" + REPO), pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))


def rgb(picture: Image.Image) -> Image.Image:
    """Upright, and transparency on white (as the app that trained the model reads pictures)."""
    picture = ImageOps.exif_transpose(picture)
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return picture.convert("RGB")


def classify(picture, threshold):
    if picture is None:
        return None, ""
    with torch.inference_mode():
        logits = model(transform(rgb(picture)).unsqueeze(0))[0].float()
    probs = (logits / TEMPERATURE).softmax(-1).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    if probs[best] < threshold:
        verdict = f"### Not sure\\nThe best guess is **{{LABELS[best]}}** at {{probs[best]:.0%}}, below {{threshold:.0%}}."
    else:
        verdict = f"### {{LABELS[best]}}\\n{{probs[best]:.0%}} sure."
    return dict(zip(LABELS, probs)), verdict


demo = gr.Interface(
    classify,
    [gr.Image(type="pil", image_mode=None, sources=["upload", "webcam", "clipboard"], label="A picture"),
     gr.Slider(0, 1, value=0.5, step=0.05, label='Answer "not sure" below this confidence')],
    [gr.Label(num_top_classes=5, label="Confidence per class"), gr.Markdown()],
    title={title!r},
    description={description!r},
    flagging_mode="never",
    api_name="predict",
)

if __name__ == "__main__":
    demo.launch(run_history=False)  # the visitors' pictures stay out of the browser's history
'''

_README = """---
title: {title_yaml}
emoji: 🖼️
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: {gradio}
app_file: app.py
models:
  - {repo}
pinned: false
---

A demo of the image classifier [{repo}](https://huggingface.co/{repo}) ({classes}), trained with
Transfer Learning Studio. Upload, paste or film a picture to see every class's confidence.
"""

_REQUIREMENTS = """# PyTorch's CPU build: the demo runs on the free CPU hardware
--extra-index-url https://download.pytorch.org/whl/cpu
torch>={torch}
timm>={timm}
"""


def demo_space_id(model_repo: str) -> str:
    """The demo Space's repository for a model repository: ``USER/NAME-demo``."""
    return check_repo_id(check_repo_id(model_repo) + "-demo")


def write_demo_space(labels: Sequence[str], temperature: float, model_repo: str, folder: str | Path) -> Path:
    """Write the demo Space of a model published as ``model_repo`` into ``folder``.

    Args:
        labels: the model's classes in output order.
        temperature: its calibration temperature (the logits are divided by it).
        model_repo: "USER/NAME" of the model's Hub repository, which the Space loads.
        folder: where to write (made if missing).

    Returns:
        The folder, holding ``app.py``, ``requirements.txt`` and ``README.md``.
    """
    from importlib import metadata

    repo = check_repo_id(model_repo)
    labels = [str(label) for label in labels]
    classes = ", ".join(labels)
    title = f"{repo.split('/')[1]} demo"[:60]
    try:  # the Gradio this app runs on, which the template was checked with (never imported here)
        gradio = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        gradio = "6.31.0"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = (f"Classes: {classes}. It always answers with one of them, even for a picture of something "
                   f"else: that is what the threshold is for. Model: [{repo}](https://huggingface.co/{repo}).")
    # Python and YAML literals, whatever the class names hold
    fields = dict(repo=repo, temperature=float(temperature), labels=labels, classes=classes, title=title,
                  title_yaml=json.dumps(title), description=description, gradio=gradio)
    (folder / "app.py").write_text(_APP.format(**fields))
    (folder / "README.md").write_text(_README.format(**fields))
    # the first versions that load weights safely (see pyproject.toml)
    (folder / "requirements.txt").write_text(_REQUIREMENTS.format(torch="2.6", timm="1.0.26"))
    _logger.info("Wrote a demo Space for %s (%d classes)", repo, len(labels))
    return folder
