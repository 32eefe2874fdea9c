"""Prediction with exactly the preprocessing used in training.

``Predictor`` holds a model, its labels and its timm data config. It decodes images with
``images.load_image`` and transforms them with ``transforms.eval_transform``: the same two functions that
produced the validation numbers during training, so the app, the CLI and a reloaded bundle agree.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import ImageDataset
from .transforms import eval_transform
from .speed import autocast
from .images import load_image
from .evaluation import EvalReport, evaluate_predictions
from .errors import DataError
from .novelty import Novelty

__all__ = ["Predictor", "Answers"]

_logger = logging.getLogger(__name__)


class _LogitsAndFeatures(nn.Module):
    """A timm model's logits and the pooled features its classifier sees, from one backbone pass
    (timm's forward is exactly ``forward_head(forward_features(x))``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unpooled = self.model.forward_features(x)
        return self.model.forward_head(unpooled), self.model.forward_head(unpooled, pre_logits=True)


class Answers(NamedTuple):
    """What a predictor says of some pictures.

    Attributes:
        probs: (n, classes) calibrated probabilities, columns in ``labels`` order.
        novelty: (n,) "none of these" scores (above 1: not one of the classes), or None when the
            model has no such check.
    """

    probs: np.ndarray
    novelty: np.ndarray | None

    def is_novel(self, i: int) -> bool:
        """Picture ``i`` is unlike every training picture (always False without the check)."""
        return self.novelty is not None and bool(self.novelty[i] > 1.0)


class Predictor:
    """A trained classifier ready to answer: image in, labels with probabilities out.

    Args:
        model: a timm model whose outputs follow ``labels``.
        labels: class names.
        data_config: the timm data config (input size, interpolation, crop, mean, std).
        device: "auto", "cpu" or "cuda".
        temperature: logits are divided by this before the softmax (see ``calibrate``).
        precision: "fp32" (the default), or "bf16"/"auto" for reduced-precision autocast where
            the device has it (``speed.fast_paths``). Exports are always checked against
            ``reference()``, an fp32 copy on the CPU, never against a reduced-precision answer.
        novelty: the "none of these" check fitted on the training pictures, or None.
    """

    def __init__(self, model: nn.Module, labels: Sequence[str], data_config: dict, device: str = "auto",
                 temperature: float = 1.0, precision: str = "fp32", novelty: Novelty | None = None):
        from .speed import fast_paths
        from .distributed import pick_device

        self.device = pick_device(device)
        self.paths = fast_paths(self.device, precision)
        self.batch_size = self.paths.batch
        # A private copy: moving it to a device or memory format must not change the caller's
        # model (which a bundle may be saving from at the same time).
        self.model = copy.deepcopy(model).eval().to(self.device)
        if self.device.type == "cpu":
            # The same memory format as training's validation pass: same numbers, faster on CPU.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.labels = list(labels)
        self.data_config = dict(data_config)
        self.transform = eval_transform(self.data_config)
        self.temperature = float(temperature)
        self.novelty = novelty
        self._both = _LogitsAndFeatures(self.model)
        self._single_calls = 0
        self._frozen = None  # the single-image graph: None = not built yet, False = not usable

    def _tensor(self, image: Image.Image | str | Path) -> torch.Tensor:
        image = load_image(image)
        return self.transform(image)

    def batch(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack preprocessed images into a batch on this predictor's device and memory format."""
        x = torch.stack(list(tensors)).to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, images: Iterable[Image.Image | str | Path], batch_size: int | None = None) -> np.ndarray:
        """Raw (uncalibrated) class scores, one row per image, columns in ``labels`` order."""
        return self._outputs(images, batch_size)[0]

    def _outputs(self, images: Iterable[Image.Image | str | Path], batch_size: int | None = None
                 ) -> tuple[np.ndarray, torch.Tensor]:
        """(logits, pooled features) of the images, from one pass through the model."""
        batch_size = batch_size or self.batch_size
        logits: list[np.ndarray] = []
        features: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []

        def flush() -> None:
            x = self.batch(batch)
            frozen = self._single_image_graph() if len(batch) == 1 else None
            with torch.inference_mode(), autocast(self.device, self.paths):
                out, feats = (frozen or self._both)(x)
            logits.append(out.float().cpu().numpy())
            features.append(feats.float().cpu())
            batch.clear()

        for image in images:
            batch.append(self._tensor(image))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if not logits:
            return np.zeros((0, len(self.labels)), dtype=np.float32), torch.zeros(0, 0)
        return np.concatenate(logits), torch.cat(features)

    def _single_image_graph(self):
        """A frozen TorchScript graph for one image at a time on the CPU, once the predictor is
        serving single images (from the third call: building it takes ~2 s, which a one-off
        command-line prediction should not pay).

        Freezing folds BatchNorm into the convolutions and fuses activations: measured 28 -> 21 ms
        per forward pass with the built-in model. It is used only if its logits match the eager
        model's within 1e-3 on a probe image (the parity check), and for any model it cannot
        handle it is simply not used.
        """
        if self.device.type != "cpu" or self.paths.autocast_dtype is not None or self._frozen is False:
            return None
        if self._frozen is None:
            self._single_calls += 1
            if self._single_calls < 3:
                return None
            self._frozen = self._freeze() or False
        return self._frozen or None

    def _freeze(self):
        size = tuple(self.data_config["input_size"])
        probe = torch.randn((1, *size), generator=torch.Generator().manual_seed(0))
        probe = probe.contiguous(memory_format=torch.channels_last)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(
                    torch.jit.trace(self._both, probe, check_trace=False).eval()))
                for _ in range(2):  # the profiling executor settles on its second run
                    fast = graph(probe)
                diff = max((a - b).abs().max().item() for a, b in zip(fast, self._both(probe)))
        except (RuntimeError, TypeError, ValueError, torch.jit.Error) as exc:
            _logger.info("No frozen graph for single images (%s); the model runs as it is", exc)
            return None
        if not diff <= 1e-3:
            _logger.info("Frozen graph differs by %.2g from the model; not used", diff)
            return None
        return graph

    def reference(self) -> "Predictor":
        """This model in plain fp32 on the CPU: the numbers an export must reproduce.

        A predictor on a GPU answers with TF32 convolutions (and with bf16 under ``precision``),
        which differ from fp32 by a few 1e-3 in probability: the exported fp32 graphs are right,
        the reduced-precision answer is not the one to hold them to. Returns itself when it
        already is the reference.
        """
        if self.device.type == "cpu" and self.paths.autocast_dtype is None:
            return self
        return Predictor(self.model, self.labels, self.data_config, device="cpu", temperature=self.temperature,
                         novelty=self.novelty)

    def to_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from ``logits()``' output."""
        return torch.as_tensor(logits, dtype=torch.float32).div(self.temperature).softmax(dim=1).numpy()

    def probabilities(self, images: Iterable[Image.Image | str | Path], batch_size: int | None = None) -> np.ndarray:
        """Calibrated class probabilities, one row per image, columns in ``labels`` order."""
        return self.to_probabilities(self.logits(images, batch_size))

    def answers(self, images: Iterable[Image.Image | str | Path], batch_size: int | None = None) -> Answers:
        """Calibrated probabilities and, when the model has the check, "none of these" scores."""
        return self._answers(*self._outputs(images, batch_size))

    def answers_of(self, x: torch.Tensor) -> Answers:
        """``answers`` for a batch already preprocessed (``batch``), from one pass of the model as
        it is: for a caller that runs passes of its own too (a heat map), for which building the
        single-image graph (seconds, once) would not pay."""
        with torch.inference_mode(), autocast(self.device, self.paths):
            out, feats = self._both(x)
        return self._answers(out.float().cpu().numpy(), feats.float().cpu())

    def _answers(self, logits: np.ndarray, features: torch.Tensor) -> Answers:
        novelty = self.novelty.scores(features) if self.novelty is not None and len(logits) else None
        return Answers(self.to_probabilities(logits), novelty)

    def predict(self, image: Image.Image | str | Path, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` most likely labels of one image, most likely first."""
        probs = self.probabilities([image])[0]
        order = np.argsort(-probs)[: max(1, min(top_k, len(self.labels)))]
        return [(self.labels[i], float(probs[i])) for i in order]

    def _check_labels(self, dataset: ImageDataset) -> None:
        unknown = sorted(set(dataset.labels) - set(self.labels))
        if unknown:
            raise DataError(
                f"The images include classes this model was not trained on: {', '.join(unknown)}. "
                f"Its classes are: {', '.join(self.labels)}. Name the folders after those classes."
            )

    def evaluate(self, dataset: ImageDataset, indices: Sequence[int] | None = None) -> EvalReport:
        """Metrics on (some of) a dataset whose class names match this model's labels.

        Raises:
            DataError: the dataset has classes this model does not know.
        """
        self._check_labels(dataset)
        chosen = range(len(dataset.items)) if indices is None else indices
        return self.evaluate_logits(dataset, chosen, self.logits(dataset.items[i].path for i in chosen))

    def evaluate_logits(self, dataset: ImageDataset, indices: Sequence[int], logits: np.ndarray) -> EvalReport:
        """``evaluate`` from already computed ``logits()`` of those images (calibrated here)."""
        index = {label: i for i, label in enumerate(self.labels)}
        items = [dataset.items[i] for i in indices]
        return evaluate_predictions([index[item.label] for item in items], self.to_probabilities(logits),
                                    self.labels, [item.rel for item in items])
