"""Confidence you can read as a probability: temperature scaling (Guo et al., 2017).

A fine-tuned network's softmax is usually over- (sometimes under-) confident. One scalar T,
fitted on held-out images by minimising the negative log-likelihood of ``softmax(logits / T)``,
fixes most of that without changing any prediction's ranking (so accuracy is untouched).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Calibration", "fit_temperature", "nll"]

_logger = logging.getLogger(__name__)

# Bounds keep a degenerate validation set (all right, or tiny) from giving T -> 0 or T -> inf.
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the images it was fitted on.

    Attributes:
        temperature: divide logits by this before the softmax (1.0 = unchanged).
        nll_before: mean negative log-likelihood with T = 1.
        nll_after: the same with the fitted T (never higher than ``nll_before``).
        n_images: images it was fitted on.
    """

    temperature: float
    nll_before: float
    nll_after: float
    n_images: int

    def to_dict(self) -> dict:
        """JSON-ready form (stored in the bundle)."""
        return asdict(self)

    def sentence(self) -> str:
        """What the calibration did, in plain words."""
        if self.n_images == 0 or self.temperature == 1.0:
            return "Confidences are the model's own (calibration changed nothing)."
        way = "over-confident, so they were softened" if self.temperature > 1 else \
            "under-confident, so they were sharpened"
        return (f"Confidences were {way} on the {self.n_images} held-out images "
                f"(temperature {self.temperature:.2f}; log-loss {self.nll_before:.3f} → {self.nll_after:.3f}).")


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under ``softmax(logits / temperature)``."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return float(F.cross_entropy(x / temperature, y))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> Calibration:
    """Fit T on held-out logits and true class indices.

    The fit is a bounded 1-D minimisation (golden-section search over log T): the NLL is smooth
    and has a single minimum in T, and the search cannot diverge the way an unguarded gradient
    step can. If the fitted T does not lower the NLL, T = 1 is kept, so calibration never makes
    the held-out log-loss worse.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    n = len(targets)
    if n == 0:
        return Calibration(1.0, float("nan"), float("nan"), 0)
    before = nll(logits, targets)
    lo, hi = _LOG_T_BOUNDS
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - ratio) * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, targets, math.exp(a)), nll(logits, targets, math.exp(b))
    for _ in range(60):  # (0.618^60) * 6 ≈ 1e-12 in log T: far below anything that matters
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - ratio) * (hi - lo)
            fa = nll(logits, targets, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, targets, math.exp(b))
    t = round(math.exp((lo + hi) / 2), 6)
    after = nll(logits, targets, t)
    if not after < before:
        t, after = 1.0, before
    _logger.info("Temperature %.3f on %d images: NLL %.4f -> %.4f", t, n, before, after)
    return Calibration(t, before, after, n)
