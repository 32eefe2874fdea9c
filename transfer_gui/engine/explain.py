"""Heat maps: where in a picture the model found the evidence for a class (Grad-CAM).

Grad-CAM (Selvaraju et al., 2017) weights a late feature map by the gradient of the class score
and keeps the positive part. The layer depends on the family:

* CNNs: the output of ``forward_features`` (the last spatial feature map), with the gradient of
  ``forward_head``: no hooks, works for every timm CNN whose features are (B, C, H, W) or
  (B, H, W, C).
* Vision transformers: the tokens entering the last block's attention (``blocks[-1].norm1``), the
  usual choice for ViTs: the final tokens are useless for a class-token head, whose score does not
  depend on the patch tokens after the last block at all.

The map is computed on the model's preprocessed input (resized and centre-cropped as in
training) and then placed back onto the original picture, so it has the picture's size; the
strip that the centre crop cut off gets zero heat.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .images import load_image
from .figures import overlay_heat
from .inference import Predictor

__all__ = ["HeatMap", "heat_map"]

_logger = logging.getLogger(__name__)

DISPLAY_SIDE = 1024  # heat-map pictures: longer side in pixels at most


@dataclass
class HeatMap:
    """A class-activation map for one picture and one class.

    Attributes:
        image: the picture (RGB), at its own size up to ``DISPLAY_SIDE`` pixels on its longer side,
            reduced to that beyond: a 12-megapixel photo drawn at full size costs about 1 GB and
            seconds, for a screen that shows a fraction of it.
        label: the class explained.
        confidence: the model's (calibrated) probability for ``label``.
        heat: (height, width) array in [0, 1] with the picture's size, or None (see ``reason``).
        method: how it was computed, e.g. "Grad-CAM on blocks.11.norm1".
        reason: why there is no map, in plain words (None when there is one).
        probabilities: the model's (calibrated) probabilities of every class for this picture,
            from the same forward pass (so a caller showing both needs no second pass).
        novel: the picture is unlike every training picture ("none of these"; always False for
            a model without that check), from that pass too.
    """

    image: Image.Image
    label: str
    confidence: float
    heat: np.ndarray | None
    method: str
    reason: str | None = None
    probabilities: np.ndarray | None = None
    novel: bool = False

    def overlay(self) -> Image.Image:
        """The picture with the heat drawn over it (the picture alone when there is no map)."""
        return self.image.copy() if self.heat is None else overlay_heat(self.image, self.heat)

    def caption(self) -> str:
        """One line for the UI."""
        if self.heat is None:
            return self.reason or "No heat map."
        return (f"Red = where the model found the most evidence for '{self.label}' "
                f"({self.confidence:.0%}). {self.method}.")


def _is_vit(model: nn.Module) -> bool:
    return (hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")
            and isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)))


def _vit_cam(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor | None, str]:
    """Grad-CAM on the tokens entering the last transformer block's attention."""
    block = model.blocks[-1]
    layer = getattr(block, "norm1", block)
    name = f"blocks.{len(model.blocks) - 1}" + (".norm1" if layer is not block else "")
    caller = threading.get_ident()
    grabbed: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        # Only this call's forward pass (another thread may run the same model for a prediction).
        if threading.get_ident() == caller and torch.is_grad_enabled():
            grabbed.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            tokens = grabbed[-1]
            (grad,) = torch.autograd.grad(logits[0, target], tokens)
    finally:
        handle.remove()
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    patch = getattr(model.patch_embed, "patch_size", None)
    if patch is None:
        return None, name
    gh, gw = x.shape[-2] // patch[0], x.shape[-1] // patch[1]
    acts, grads = tokens[0, prefix:].detach(), grad[0, prefix:]
    if acts.shape[0] != gh * gw:
        return None, name
    weights = grads.mean(dim=0)  # one weight per channel, averaged over the patch tokens
    cam = F.relu((acts * weights).sum(dim=-1)).reshape(gh, gw)
    return cam, name


def _cnn_cam(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor | None, str]:
    """Grad-CAM on the last spatial feature map (``forward_features``' output)."""
    with torch.no_grad():
        feats = model.forward_features(x)
    if feats.ndim != 4:
        return None, "forward_features"
    channels = getattr(model, "num_features", feats.shape[1])
    # Some timm models (Swin, MaxViT, ...) return (B, H, W, C) feature maps.
    nhwc = feats.shape[1] != channels and feats.shape[-1] == channels
    feats = feats.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(feats)
        (grad,) = torch.autograd.grad(logits[0, target], feats)
    if nhwc:
        feats, grad = feats.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    weights = grad[0].mean(dim=(1, 2))
    cam = F.relu((feats[0].detach() * weights[:, None, None]).sum(dim=0))
    return cam, "forward_features"


def _crop_box(predictor: Predictor, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Where the model's input lies on the original picture: (left, top, right, bottom) in pixels.

    Found by sending two coordinate ramps through the geometric part of the very transform the
    predictor uses (everything before the tensor conversion), so it follows whatever resize and
    crop the model's timm data config asks for.
    """
    width, height = size
    steps = list(getattr(predictor.transform, "transforms", []))
    geometric = []
    for t in steps:
        if type(t).__name__ in ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor"):
            break
        geometric.append(t)
    xs = Image.fromarray(np.tile(np.arange(width, dtype=np.float32), (height, 1)), mode="F")
    ys = Image.fromarray(np.tile(np.arange(height, dtype=np.float32)[:, None], (1, width)), mode="F")
    for t in geometric:
        xs, ys = t(xs), t(ys)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    h, w = xs.shape
    if h < 4 or w < 4:
        return 0.0, 0.0, float(width), float(height)
    # Interior samples only: resampling filters bend the ramp at the borders.
    sx = (xs[h // 2, w - 2] - xs[h // 2, 1]) / (w - 3)
    sy = (ys[h - 2, w // 2] - ys[1, w // 2]) / (h - 3)
    left = xs[h // 2, 1] - sx + 0.5 - sx / 2
    top = ys[1, w // 2] - sy + 0.5 - sy / 2
    return left, top, left + sx * w, top + sy * h


def heat_map(predictor: Predictor, image: Image.Image | str | Path, label: str | None = None) -> HeatMap:
    """Grad-CAM heat map of ``image`` for ``label`` (default: the predicted class).

    Works for timm CNNs and vision transformers; for a model with neither a spatial feature map
    nor patch tokens the result has ``heat=None`` and a ``reason`` that says so.

    Raises:
        KeyError: ``label`` is not one of the predictor's classes.
    """
    picture = load_image(image)
    x = predictor.batch([predictor.transform(picture)])  # the prediction sees the full picture
    picture = _for_display(picture)
    model = predictor.model
    answers = predictor.answers_of(x)
    probs, novel = answers.probs[0], answers.is_novel(0)
    if label is not None and label not in predictor.labels:
        raise KeyError(label)
    target = int(np.argmax(probs)) if label is None else predictor.labels.index(label)
    chosen = predictor.labels[target]
    try:
        cam, layer = (_vit_cam if _is_vit(model) else _cnn_cam)(model, x, target)
    except (AttributeError, NotImplementedError, RuntimeError) as exc:
        _logger.info("No heat map for %s: %s", type(model).__name__, exc)
        cam, layer = None, ""
    if cam is None:
        return HeatMap(picture, chosen, float(probs[target]), None, "",
                       "This model's inner layers do not form a grid over the picture, so no heat map "
                       "can be drawn for it; its predictions are not affected.", probs, novel)
    cam = cam.float().cpu()
    peak = float(cam.max())
    if peak <= 0:
        heat = np.zeros((picture.height, picture.width), dtype=np.float32)
        return HeatMap(picture, chosen, float(probs[target]), heat, f"Grad-CAM on {layer}",
                       f"Nothing in this picture speaks for '{chosen}': the model chose it only "
                       "because the other classes fit even worse.", probs, novel)
    heat = _to_picture(cam / peak, predictor, picture.size)
    visible = float(heat.max())
    if visible > 0:  # the peak may lie in the part the centre crop cuts off: scale to what is shown
        heat = heat / visible
    return HeatMap(picture, chosen, float(probs[target]), heat, f"Grad-CAM on {layer}", None, probs, novel)


def _for_display(picture: Image.Image) -> Image.Image:
    """``picture``, reduced to at most DISPLAY_SIDE pixels on its longer side."""
    if max(picture.size) <= DISPLAY_SIDE:
        return picture
    scale = DISPLAY_SIDE / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _to_picture(cam: torch.Tensor, predictor: Predictor, size: tuple[int, int]) -> np.ndarray:
    """Stretch a coarse map over the model's input region and place it on the original picture."""
    width, height = size
    left, top, right, bottom = _crop_box(predictor, size)
    box_w, box_h = max(1, round(right - left)), max(1, round(bottom - top))
    coarse = Image.fromarray(cam.numpy().astype(np.float32), mode="F")
    stretched = coarse.resize((box_w, box_h), Image.Resampling.BILINEAR)
    canvas = Image.new("F", (width, height), 0.0)
    canvas.paste(stretched, (round(left), round(top)))  # paste clips whatever falls outside
    return np.clip(np.asarray(canvas, dtype=np.float32), 0.0, 1.0)
