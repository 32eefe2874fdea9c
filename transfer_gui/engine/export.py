"""Export a trained model to TorchScript and ONNX with its preprocessing inside the graph.

The exported graph takes a decoded picture as it comes: an RGB ``uint8`` tensor of shape
(height, width, 3), any size, and returns the calibrated class probabilities, shape
(1, num_classes). Inside it does exactly what the app does to a picture (the model's timm eval
transform): resize the shorter side with Pillow's antialiased filter, centre-crop, scale to [0, 1],
normalise, run the network, divide the logits by the calibration temperature, softmax.

The resize is written as two matrix products whose weights are Pillow's own resampling weights
(same kernel, same support, same normalisation, same horizontal-then-vertical order with rounding
to 8 bits in between), computed in the graph from the input's size. That keeps it exportable
(matmul, arange, arithmetic) and within a 1e-3 probability of the app on pictures of any size;
``check_parity`` measures exactly that right after each export, on real images.

Decoding (JPEG/PNG), EXIF rotation and flattening transparency onto white stay outside: every
image library does those, and the model card says how.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .bundle import CARD_FILE
from .errors import ModelError, without_paths

__all__ = ["Preprocessed", "ExportCheck", "ExportResult", "export_torchscript", "export_onnx",
           "check_parity", "export_all", "LABELS_FILE"]

_logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"
TOLERANCE = 1e-3  # max |probability difference| allowed against the app's model in fp32 on the CPU


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    # Pillow's bicubic kernel (a = -0.5), not torch's (a = -0.75).
    a = -0.5
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    return torch.where(x < 1.0, 1.0 - x, torch.zeros_like(x))


# Pillow's fixed point for 8-bit resampling: 22 fractional bits (32 - 8 - 2). Written as literals
# in the functions below because TorchScript cannot read module-level numbers.


def _weights(in_size: torch.Tensor, out_size: torch.Tensor, first: torch.Tensor, count: int,
             positions: torch.Tensor, bicubic: bool) -> torch.Tensor:
    """Pillow's fixed-point resampling weights for output pixels ``first .. first+count-1`` of a
    resize from ``in_size`` to ``out_size`` pixels: a (count, len(positions)) float64 matrix of
    integers (the weights times 2**22, rounded as Pillow rounds them).

    Mirrors ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in Pillow's Resample.c: support
    scaled by the downscale factor (antialiasing), window [int(center - support + 0.5),
    int(center + support + 0.5)) clipped to the image, weights normalised over the window, then
    rounded half away from zero to fixed point. All in float64, as Pillow computes in double.
    """
    scale = in_size / out_size
    filterscale = torch.clamp(scale, min=1.0)
    support = (2.0 if bicubic else 1.0) * filterscale
    out_index = first + torch.arange(count, dtype=torch.float64, device=positions.device)
    center = (out_index + 0.5) * scale
    lo = torch.clamp(torch.trunc(center - support + 0.5), min=0.0)
    hi = torch.minimum(torch.trunc(center + support + 0.5), in_size)
    x = (positions[None, :] - center[:, None] + 0.5) * (1.0 / filterscale)
    w = _bicubic(x) if bicubic else _bilinear(x)
    inside = (positions[None, :] >= lo[:, None]) & (positions[None, :] < hi[:, None])
    w = torch.where(inside, w, torch.zeros_like(w))
    w = w / w.sum(dim=1, keepdim=True) * 4194304.0  # 2**22
    return torch.sign(w) * torch.floor(w.abs() + 0.5)


def _resample(pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One Pillow pass: fixed-point weighted sums, +0.5 rounding, shift, clip to 0..255."""
    acc = torch.matmul(pixels, weights.t()) + 2097152.0  # + 2**21: round to nearest
    return torch.clamp(torch.floor(acc / 4194304.0), 0.0, 255.0)


class Preprocessed(nn.Module):
    """A classifier that takes an RGB uint8 (H, W, 3) picture and returns probabilities (1, C).

    Args:
        model: the trained timm model (copied; the original is not touched).
        data_config: its timm data config; must use a centre crop, a square input and bicubic or
            bilinear interpolation (every catalog model does).
        temperature: the calibration temperature.

    Raises:
        ModelError: a data config this graph cannot reproduce.
    """

    def __init__(self, model: nn.Module, data_config: dict, temperature: float = 1.0):
        super().__init__()
        _, height, width = data_config["input_size"]
        crop_mode = data_config.get("crop_mode", "center")
        interpolation = data_config.get("interpolation", "bicubic")
        if height != width or crop_mode != "center" or interpolation not in ("bicubic", "bilinear"):
            raise ModelError(
                f"Export with built-in preprocessing supports square inputs, centre crops and "
                f"bicubic/bilinear resizing; this model uses {height}x{width}, crop '{crop_mode}', "
                f"'{interpolation}'. Use the timm bundle instead.")
        self.model = copy.deepcopy(model).float().cpu().eval()
        self.crop = int(height)
        # timm: shorter side -> floor(size / crop_pct), then centre crop of ``size``
        self.resize = int(math.floor(height / float(data_config.get("crop_pct") or 0.875)))
        self.bicubic = interpolation == "bicubic"
        self.register_buffer("mean", torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))
        self.eval()

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, crop, crop) normalised float: resize, crop, normalise."""
        # float64 holds Pillow's integer arithmetic exactly (sums reach 255 * 2**22 and more)
        img = image.permute(2, 0, 1).to(torch.float64)  # (3, H, W)
        rows = torch.arange(img.shape[1], dtype=torch.float64, device=img.device)
        cols = torch.arange(img.shape[2], dtype=torch.float64, device=img.device)
        h = rows.shape[0] * torch.ones((), dtype=torch.float64, device=img.device)
        w = cols.shape[0] * torch.ones((), dtype=torch.float64, device=img.device)
        size = float(self.resize)
        # torchvision's Resize(int): the shorter side becomes ``size``, the longer one
        # int(size * long / short)
        new_h = torch.where(h <= w, torch.full_like(h, size), torch.floor(size * h / w))
        new_w = torch.where(h <= w, torch.floor(size * w / h), torch.full_like(w, size))
        # torchvision's CenterCrop: offsets int(round((new - crop) / 2)), halves to even
        top = torch.round((new_h - self.crop) / 2.0)
        left = torch.round((new_w - self.crop) / 2.0)
        wx = _weights(w, new_w, left, self.crop, cols, self.bicubic)  # (crop, W)
        wy = _weights(h, new_h, top, self.crop, rows, self.bicubic)  # (crop, H)
        # Pillow resizes horizontally first and stores 8-bit pixels before the vertical pass
        tmp = _resample(img, wx)  # (3, H, crop)
        out = _resample(tmp.transpose(1, 2), wy).transpose(1, 2)  # (3, crop, crop)
        x = out.to(torch.float32).unsqueeze(0) / 255.0
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities (1, num_classes) of one RGB uint8 (H, W, 3) picture."""
        logits = self.model(self.pixels(image))
        return torch.softmax(logits / self.temperature, dim=1)


@dataclass
class ExportCheck:
    """The parity check of one exported file against the app's Predictor.

    Attributes:
        format: "torchscript" or "onnx".
        path: the exported file.
        passed: same top-1 on every image and max |probability difference| <= tolerance.
        n_images: images compared.
        top1_agree: images whose top-1 class matches the Predictor's.
        max_abs_diff: the largest probability difference seen.
        tolerance: the limit used.
        error: why the export or the check failed, in plain words (None when it ran).
    """

    format: str
    path: str
    passed: bool
    n_images: int = 0
    top1_agree: int = 0
    max_abs_diff: float = float("nan")
    tolerance: float = TOLERANCE
    error: str | None = None

    def sentence(self) -> str:
        """The result in one line for people."""
        name = {"torchscript": "TorchScript", "onnx": "ONNX"}.get(self.format, self.format)
        if self.error:
            return f"{name}: export failed: {self.error}"
        verdict = "passed" if self.passed else "FAILED"
        return (f"{name}: parity check {verdict}: same answer as the app on {self.top1_agree} of "
                f"{self.n_images} images, largest probability difference {self.max_abs_diff:.1e} "
                f"(limit {self.tolerance:.0e}).")


@dataclass
class ExportResult:
    """What ``export_all`` wrote and how each file's check went."""

    folder: Path
    checks: list[ExportCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every export was written and passed its check."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"folder": str(self.folder), "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _example(module: Preprocessed) -> torch.Tensor:
    # An odd, non-square size so nothing specialises on a "typical" picture.
    return torch.randint(0, 256, (module.crop + 37, module.crop + 91, 3), dtype=torch.uint8)


def export_torchscript(module: Preprocessed, path: str | Path) -> Path:
    """Write ``module`` as TorchScript. The network is traced (its input size is fixed by the
    crop), the preprocessing scripted, so the size-dependent resize stays dynamic."""
    path = Path(path)
    example = _example(module)
    with torch.no_grad():
        traced = torch.jit.trace(module.model, module.pixels(example), check_trace=False)
    network = module.model
    module.model = traced  # script the wrapper around the traced network, then put it back
    try:
        scripted = torch.jit.script(module)
    finally:
        module.model = network
    scripted.save(str(path))
    return path


def export_onnx(module: Preprocessed, path: str | Path, opset: int = 18) -> Path:
    """Write ``module`` as ONNX with dynamic height and width (torch.onnx's dynamo exporter)."""
    path = Path(path)
    example = _example(module)
    height, width = torch.export.Dim("height", min=8, max=16384), torch.export.Dim("width", min=8, max=16384)
    program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                input_names=["image"], output_names=["probabilities"],
                                dynamic_shapes={"image": {0: height, 1: width}}, verbose=False)
    program.save(str(path))
    return path


def _runner(fmt: str, path: Path):
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path)).eval()

        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return loaded(torch.from_numpy(pixels.copy())).numpy()[0]
        return run
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pixels: session.run(None, {name: pixels})[0][0]


def check_parity(fmt: str, path: str | Path, predictor, images: Sequence, tolerance: float = TOLERANCE) -> ExportCheck:
    """Run an exported file on ``images`` (paths or PIL images) and compare with ``predictor``.

    The exported graph gets exactly what a user would give it: the decoded RGB picture
    (``images.load_image``: EXIF-rotated, transparency on white) as a uint8 array. It is compared
    with ``predictor.reference()``, the same model in fp32 on the CPU, whatever device or
    precision ``predictor`` answers with: the 1e-3 limit is for fp32 against fp32.
    """
    from .images import load_image

    path = Path(path)
    run = _runner(fmt, path)
    predictor = predictor.reference()
    agree, worst = 0, 0.0
    for image in images:
        picture = load_image(image)
        expected = predictor.probabilities([picture])[0]
        got = run(np.asarray(picture, dtype=np.uint8))
        agree += int(np.argmax(got) == np.argmax(expected))
        worst = max(worst, float(np.abs(got - expected).max()))
    n = len(images)
    return ExportCheck(fmt, str(path), n > 0 and agree == n and worst <= tolerance, n, agree, worst, tolerance)


def _odd_shapes(image) -> list:
    from PIL import Image

    from .images import load_image

    picture = load_image(image)
    return [picture.resize((613, 187), Image.Resampling.BICUBIC),
            picture.resize((141, 509), Image.Resampling.BICUBIC)]


def export_all(predictor, folder: str | Path, images: Sequence, formats: Sequence[str] = ("torchscript", "onnx"),
               tolerance: float = TOLERANCE, bundle_folder: str | Path | None = None) -> ExportResult:
    """Export ``predictor``'s model to each format into ``folder``, with ``labels.json`` beside
    them, and check every file against the predictor on ``images`` right after writing it.

    Two reshaped copies of the first image (a wide and a tall one, sizes unlike any training
    image) are always added to the check, so the in-graph resize is tested away from the usual
    shapes. A failed export or check is recorded in the result (never raised), so a caller can
    show it. With ``bundle_folder`` (the model's bundle), its model card goes beside the files.
    """
    folder = Path(folder)
    images = list(images)
    if images:
        images += _odd_shapes(images[0])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LABELS_FILE).write_text(json.dumps({
        "labels": list(predictor.labels),
        "input": "RGB uint8 tensor of shape (height, width, 3), any size; decode, apply EXIF rotation "
                 "and flatten transparency onto white first",
        "output": "probabilities of shape (1, num_classes), in the order of 'labels'",
        "temperature": predictor.temperature,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in predictor.data_config.items()},
    }, indent=2))
    if bundle_folder is not None and (Path(bundle_folder) / CARD_FILE).is_file():
        shutil.copyfile(Path(bundle_folder) / CARD_FILE, folder / CARD_FILE)
    result = ExportResult(folder)
    reference = predictor.reference()  # built once for both checks (a copy, when on a GPU)
    try:
        module = Preprocessed(predictor.model, predictor.data_config, predictor.temperature)
    except ModelError as exc:
        result.checks = [ExportCheck(f, "", False, error=str(exc)) for f in formats]
        return result
    writers = {"torchscript": (export_torchscript, "model.torchscript.pt"), "onnx": (export_onnx, "model.onnx")}
    for fmt in formats:
        writer, name = writers[fmt]
        try:
            path = writer(module, folder / name)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported to the user, not hidden
            _logger.exception("%s export failed", fmt)
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            result.checks.append(ExportCheck(fmt, "", False, error=f"{type(exc).__name__}: {without_paths(first)}"))
            continue
        check = check_parity(fmt, path, reference, images, tolerance)
        _logger.info(check.sentence())
        result.checks.append(check)
    return result
