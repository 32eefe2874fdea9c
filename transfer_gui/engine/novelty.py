""""None of these": how unlike every training picture a new picture is, and where to draw the line.

A classifier answers every picture with one of its classes. This module scores a picture by the
cosine distance from its backbone features to the nearest training picture's, divided by the
distance that only 2 % of training pictures exceed when they are left out: a score above 1 means
"further from everything it learned than almost any picture of your classes is", and the app then
answers "not one of your classes".

The line is drawn by cross-validation on the training pictures alone: each fold's pictures are
scored against the other folds', so a picture never counts as its own neighbour. Measured
(``benchmarks/bench_labels.py``, two classes held out as unknown, 3 seeds): with 2 % of the
training pictures' scores above the line, 1-4 % of new pictures of known classes were refused on
Fashion-MNIST and openclipart; at 5 %, up to 7 %. Plain cosine distance to the nearest picture
(k = 1) did as well as the mean over 3 or 5 neighbours at 10-20 pictures per class.

The training pictures' features travel in the bundle (``novelty.safetensors``, float16, at most
``MAX_BANK`` of them), because the score needs them at prediction time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from .errors import ModelError
from .probe import n_folds, stratified_folds

__all__ = ["NOVELTY_FILE", "NONE_OF_THESE", "KNOWN_KEPT", "MAX_BANK", "Novelty", "fit_novelty", "load_novelty",
           "unit_rows"]

_logger = logging.getLogger(__name__)

NOVELTY_FILE = "novelty.safetensors"
NONE_OF_THESE = "not one of your classes"
# The share of left-out training pictures that stay under the line (see the module docstring).
KNOWN_KEPT = 0.98
# Training pictures kept for the score; past this an even sample of them (the bundle grows by
# 2 bytes per feature per picture: 2,000 x 1,280 features of the built-in models is 5 MB).
MAX_BANK = 2000
_MAX_FEATURES = 16384  # wider than any timm backbone's pooled features
_CHUNK = 4096  # distances computed for this many query rows at a time


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to length 1 (float32), so a dot product is a cosine similarity."""
    x = features.detach().float().cpu()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _nearest(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Cosine distance from each (unit) query row to its nearest (unit) bank row (2, the largest
    there is, when the bank is empty: a fold of copies of one picture leaves the others none)."""
    if len(bank) == 0:
        return torch.full((len(queries),), 2.0)
    out = [1 - (queries[i:i + _CHUNK] @ bank.T).amax(dim=1) for i in range(0, len(queries), _CHUNK)]
    return torch.cat(out) if out else torch.zeros(0)


@dataclass(frozen=True)
class Novelty:
    """The "none of these" check of one model.

    Attributes:
        bank: (n, d) unit-length features of training pictures (float32).
        line: the cosine distance that scores 1.0: pictures further than this from every
            training picture are not one of the model's classes.
    """

    bank: torch.Tensor
    line: float

    def scores(self, features: torch.Tensor) -> np.ndarray:
        """One score per row of backbone features: distance to the nearest training picture over
        ``line`` (above 1: not one of the classes)."""
        return (_nearest(unit_rows(features), self.bank) / self.line).numpy().astype(np.float64)

    def to_dict(self) -> dict:
        """JSON-ready description (what the model card and the command line show)."""
        return {"score": "cosine distance to the nearest training picture / line; above 1: not one of your classes",
                "line": round(self.line, 6), "training_pictures": int(self.bank.shape[0]),
                "known_kept": KNOWN_KEPT}

    def save(self, folder: str | Path) -> Path:
        """Write ``novelty.safetensors`` into a bundle folder."""
        path = Path(folder) / NOVELTY_FILE
        safetensors.torch.save_file({"bank": self.bank.half().contiguous()}, str(path),
                                    metadata={"line": repr(self.line)})
        return path


def fit_novelty(features: torch.Tensor, targets: Sequence[int], seed: int,
                groups: Sequence[str] | None = None) -> Novelty:
    """The check for a model whose backbone gives ``features`` for its training pictures.

    Args:
        features: (n, d) backbone features of the training pictures (what the classifier sees).
        targets: their classes (the folds are stratified by them).
        seed: the folds' seed.
        groups: a key per picture (its content hash): copies share a fold, so a copy is never
            another's nearest picture while its line is measured.
    """
    x = unit_rows(features)
    y = np.asarray(targets, dtype=int)
    folds = stratified_folds(y, n_folds(y), seed, groups)
    held = torch.empty(len(y))
    for fold in np.unique(folds):
        inside = torch.from_numpy(folds == fold)
        held[inside] = _nearest(x[inside], x[~inside])
    line = float(torch.quantile(held.double(), KNOWN_KEPT))
    line = max(line, 1e-6)  # every picture a copy of another: any distance is far
    if len(x) > MAX_BANK:
        x = x[torch.linspace(0, len(x) - 1, MAX_BANK).round().long()]
    x = x.half().float()  # as the bundle keeps them: the app and a reloaded bundle answer alike
    _logger.info("None-of-these line at cosine distance %.4f (%d training pictures kept)", line, len(x))
    return Novelty(x, line)


def load_novelty(folder: Path, n_features: int) -> Novelty | None:
    """A bundle's check, or None when it has none (bundles written before it existed).

    Raises:
        ModelError: the file is there but is not one this app writes (wrong shape, size, values).
    """
    path = folder / NOVELTY_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_BANK * _MAX_FEATURES * 2 + 65536:
        raise ModelError(f"{NOVELTY_FILE} is larger than this app ever writes; remove it from the bundle.")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            line = float((f.metadata() or {}).get("line", "nan"))
            bank = f.get_tensor("bank").float()
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{NOVELTY_FILE} in the bundle could not be read ({exc}); remove it from the bundle.") from exc
    if bank.ndim != 2 or bank.shape[1] != n_features or not 0 < bank.shape[0] <= MAX_BANK:
        raise ModelError(f"{NOVELTY_FILE} holds features of shape {tuple(bank.shape)}, but the model's have "
                         f"{n_features} values; remove it from the bundle.")
    if not (math.isfinite(line) and 0 < line <= 2) or not torch.isfinite(bank).all():
        raise ModelError(f"{NOVELTY_FILE} has values this app never writes; remove it from the bundle.")
    return Novelty(unit_rows(bank), line)
