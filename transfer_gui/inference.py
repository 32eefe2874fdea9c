"""Prediction with exactly the preprocessing used in training.

``Predictor`` holds a model, its labels and its timm data config. It decodes images with
``data.load_image`` and transforms them with ``data.eval_transform``: the same two functions that
produced the validation numbers during training, so the app, the CLI and a reloaded bundle agree.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import ImageDataset, eval_transform, load_image, prepare_image
from .evaluation import EvalReport, evaluate_predictions
from .errors import DataError

__all__ = ["Predictor"]

_logger = logging.getLogger(__name__)


class Predictor:
    """A trained classifier ready to answer: image in, labels with probabilities out.

    Args:
        model: a timm model whose outputs follow ``labels``.
        labels: class names.
        data_config: the timm data config (input size, interpolation, crop, mean, std).
        device: "auto", "cpu" or "cuda".
    """

    def __init__(self, model: nn.Module, labels: Sequence[str], data_config: dict, device: str = "auto"):
        from .training import pick_device

        self.device = pick_device(device)
        # A private copy: moving it to a device or memory format must not change the caller's
        # model (which a bundle may be saving from at the same time).
        self.model = copy.deepcopy(model).eval().to(self.device)
        if self.device.type == "cpu":
            # The same memory format as training's validation pass: same numbers, faster on CPU.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.labels = list(labels)
        self.data_config = dict(data_config)
        self.transform = eval_transform(self.data_config)

    def _tensor(self, image: Image.Image | str | Path) -> torch.Tensor:
        image = prepare_image(image) if isinstance(image, Image.Image) else load_image(image)
        return self.transform(image)

    def probabilities(self, images: Iterable[Image.Image | str | Path], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per image, columns in ``labels`` order."""
        out: list[np.ndarray] = []
        batch: list[torch.Tensor] = []

        def flush() -> None:
            x = torch.stack(batch).to(self.device)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                out.append(self.model(x).float().softmax(dim=1).cpu().numpy())
            batch.clear()

        for image in images:
            batch.append(self._tensor(image))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, image: Image.Image | str | Path, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` most likely labels of one image, most likely first."""
        probs = self.probabilities([image])[0]
        order = np.argsort(-probs)[: max(1, min(top_k, len(self.labels)))]
        return [(self.labels[i], float(probs[i])) for i in order]

    def evaluate(self, dataset: ImageDataset, indices: Sequence[int] | None = None) -> EvalReport:
        """Metrics on (some of) a dataset whose class names match this model's labels.

        Raises:
            DataError: the dataset has classes this model does not know.
        """
        unknown = sorted(set(dataset.labels) - set(self.labels))
        if unknown:
            raise DataError(
                f"The images include classes this model was not trained on: {', '.join(unknown)}. "
                f"Its classes are: {', '.join(self.labels)}. Name the folders after those classes."
            )
        index = {label: i for i, label in enumerate(self.labels)}
        chosen = range(len(dataset.items)) if indices is None else indices
        items = [dataset.items[i] for i in chosen]
        probs = self.probabilities(item.path for item in items)
        return evaluate_predictions([index[item.label] for item in items], probs, self.labels,
                                    [item.rel for item in items])

    @classmethod
    def from_bundle(cls, path: str | Path, workdir: str | Path | None = None, device: str = "auto") -> "Predictor":
        """Load a saved bundle (folder or .zip) as a Predictor."""
        from .bundle import load_bundle

        bundle = load_bundle(path, workdir)
        return cls(bundle.model, bundle.labels, bundle.data_config, device)
