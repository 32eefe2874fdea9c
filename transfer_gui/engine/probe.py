"""The linear probe: a regularised logistic regression on frozen features, tuned by cross-validation.

This is the whole of Quick training and the first half of fine-tuning (LP-FT). With a few dozen
images, how the head is fitted and how it is measured matter more than anything else:

* The head is multinomial logistic regression on standardised features with an L2 penalty,
  solved to convergence by L-BFGS: the textbook recipe, the one scikit-learn's
  ``LogisticRegression`` follows. Its one setting, the penalty strength, is chosen by stratified
  k-fold cross-validation of the log-loss, never by one small holdout.
* Every image gets exactly one out-of-fold prediction (from the fold model that did not see it).
  Those predictions give the accuracy estimate, the per-class figures, the confusion matrix, the
  mistakes and the calibration, so they cover all images instead of a quarter of them.
* The final head is fitted on all images; the standardisation is folded into its weights, so the
  model stays a plain timm model with a ``Linear`` classifier.

Speed: every (penalty, fold) problem is solved at once, as one batched objective. With fewer
images than feature dimensions (the usual case here) each fold's solution lies in the span of its
training images (the representer theorem), so the weights are searched in that n-dimensional
basis instead of all d feature dimensions: 7 penalties x 5 folds on 80 images take well under a
second on two CPU cores.

Copies of one image (same bytes) always land in the same fold, so a copy cannot leak from a
fold's training part into its checked part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PENALTIES", "MAX_FOLDS", "CrossValidation", "Fixed", "n_folds", "stratified_folds", "fit_head",
           "cross_validate", "holdout_select"]

_logger = logging.getLogger(__name__)

MAX_FOLDS = 5
# Inverse penalty strengths tried (scikit-learn's C: the loss summed over images plus |W|^2 / 2C).
# Measured on openclipart and Fashion-MNIST features with 5-20 images per class, the choice
# spans 0.0003-0.1; 3.0 is beyond what any of them chose.
PENALTIES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
_MAX_ITER = 200  # L-BFGS iterations per penalty; warm-started along the path, most stop far sooner
_TOLERANCE = 1e-5  # on the gradient of each fold's mean loss: out-of-fold losses agree with 1e-6 to 4 decimals
_FLOAT64_ELEMENTS = 20_000_000
# Each feature is divided by its standard deviation over the training images, but by no less than
# this share of the median feature's. A feature almost constant over a few dozen images otherwise
# gets a tiny scale, and a new image many such deviations away swamps every logit (seen: held-out
# logits 20x the spread of the final model's, temperatures fitted at their bound). Measured over
# 0 / 0.1 / 0.3 / 1.0 on openclipart and Fashion-MNIST, 5-20 images per class, 3 seeds: 0.3 gave
# +3 points of accuracy and a calibration error of 0.06 instead of 0.28 with 5 images per class,
# and the same or better with 10 and 20.
_STD_FLOOR = 0.3  # batched inputs up to this size are solved in double precision


@dataclass(frozen=True)
class Fixed:
    """Classifier rows that must keep their values (a continued model's trained classes).

    Attributes:
        rows: their class indices.
        weight: (len(rows), d) weights for the raw features.
        bias: (len(rows),) biases.
    """

    rows: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor


def n_folds(targets: Sequence[int]) -> int:
    """k for stratified k-fold: min(5, smallest class size), at least 2."""
    counts = np.bincount(np.asarray(targets, dtype=int))
    counts = counts[counts > 0]
    return int(max(2, min(MAX_FOLDS, counts.min() if len(counts) else 2)))


def stratified_folds(targets: Sequence[int], k: int, seed: int, groups: Sequence[str] | None = None
                     ) -> np.ndarray:
    """A fold number (0..k-1) per image: each class spread evenly over the folds, seeded.

    Args:
        targets: class index per image.
        k: number of folds.
        seed: the same seed gives the same folds.
        groups: a key per image (e.g. its content hash); images with the same key share a fold.
    """
    targets = np.asarray(targets, dtype=int)
    keys = list(groups) if groups is not None else [str(i) for i in range(len(targets))]
    rng = np.random.default_rng(seed)
    folds = np.empty(len(targets), dtype=int)
    offset = 0
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        unique = list(dict.fromkeys(keys[i] for i in members))  # first-seen order: deterministic
        order = rng.permutation(len(unique))
        # consecutive positions go to consecutive folds; the offset carries on from class to class
        # so that the folds' sizes stay within one image of each other overall
        fold_of = {unique[j]: (offset + pos) % k for pos, j in enumerate(order)}
        offset += len(unique)
        for i in members:
            folds[i] = fold_of[keys[i]]
    return folds


def _standardise(x: torch.Tensor, train: torch.Tensor):
    """Each fold's features standardised on its own training images. Returns (mask (k, n), count
    (k, 1), mean (k, d), std (k, d), z (k, n, d)), all float64."""
    mask = train.to(torch.float64)
    count = mask.sum(1, keepdim=True)
    xd = x.double()
    mean = mask @ xd / count
    var = (mask @ (xd * xd) / count - mean * mean).clamp_min(0)
    std = var.sqrt()
    std = std.clamp_min(_STD_FLOOR * std.median(dim=1, keepdim=True).values)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # all-constant features stay as they are
    return mask, count, mean, std, (xd[None] - mean[:, None]) / std[:, None]


def _span(z: torch.Tensor, train: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(k, d, r) bases: each fold's optimum lies in the span of its standardised training rows, so
    it is searched there (zero columns pad the folds of lower rank and stay zero)."""
    d = z.shape[-1]
    rank = int(min(count.max().item(), d))
    bases = []
    for f in range(z.shape[0]):
        rows = z[f][train[f]]
        if rows.shape[0] < d:
            _, s, vh = torch.linalg.svd(rows, full_matrices=False)
            v = vh[s > s.max() * 1e-10].T  # (d, r_f)
        else:
            v = torch.eye(d, dtype=torch.float64)
        bases.append(F.pad(v, (0, rank - v.shape[1])))
    return torch.stack(bases)


def _path(loss_of, shape: tuple[int, int, int], penalties: Sequence[float], count: torch.Tensor,
          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The k folds' weights (G, k, C, r) and biases (G, k, C) for every penalty, ``loss_of(w, b)``
    giving the sum of the folds' mean losses. One L-BFGS run per penalty, the k folds batched, from the
    strongest penalty to the weakest, each starting from the previous solution (a regularisation
    path): mixing all penalties in one run made its shared line search crawl (400 iterations,
    ~2 s for 80 images)."""
    k, n_free, rank = shape
    w = torch.zeros(k, n_free, rank, dtype=dtype, requires_grad=True)
    b = torch.zeros(k, n_free, dtype=dtype, requires_grad=True)
    found_w, found_b = [None] * len(penalties), [None] * len(penalties)
    for i in sorted(range(len(penalties)), key=lambda i: penalties[i]):
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=_MAX_ITER, history_size=10, tolerance_grad=_TOLERANCE,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")
        scale = 1.0 / (2 * penalties[i] * count)  # (k,)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            total = loss_of(w, b) + ((w * w).sum((-1, -2)) * scale).sum()
            total.backward()
            return total

        if n_free:  # a continued model given no new class has nothing to fit
            opt.step(closure)
        found_w[i], found_b[i] = w.detach().clone(), b.detach().clone()
    return torch.stack(found_w), torch.stack(found_b)


def _solve(x: torch.Tensor, y: torch.Tensor, n_classes: int, train: torch.Tensor, penalties: Sequence[float],
           fixed: Fixed | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit every (penalty, fold) problem at once.

    Args:
        x: (n, d) features; y: (n,) classes.
        train: (k, n) bool, the images each fold trains on.
        penalties: G inverse penalty strengths.
        fixed: rows that keep their values.

    Returns:
        (weight (G, k, C, d), bias (G, k, C)) for raw features, and logits (G, k, n, C) of every
        image under every problem.
    """
    n, d = x.shape
    k, g = train.shape[0], len(penalties)
    fixed_rows = list(fixed.rows) if fixed is not None else []
    free_rows = [c for c in range(n_classes) if c not in set(fixed_rows)]
    mask, count, mean, std, z = _standardise(x, train)
    basis = _span(z, train, count)  # (k, d, r)
    rank = basis.shape[-1]
    dtype = torch.float64 if k * n * rank <= _FLOAT64_ELEMENTS else torch.float32
    zr = torch.bmm(z, basis).to(dtype)  # (k, n, r)
    if fixed_rows:
        w_fix = fixed.weight.double()[None] * std[:, None]  # (k, F, d) in each fold's standardised space
        b_fix = fixed.bias.double()[None] + torch.einsum("fd,kd->kf", fixed.weight.double(), mean)
        fixed_logits = (torch.einsum("knd,kfd->knf", z, w_fix) + b_fix[:, None]).to(dtype)
    order = torch.argsort(torch.tensor(free_rows + fixed_rows))  # class position -> column
    weights = mask.to(dtype) / count.to(dtype)  # each fold's mean over its training images
    targets = y.long().repeat(k)

    def logits_of(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("knr,kcr->knc", zr, w) + b[:, None]
        if fixed_rows:
            out = torch.cat([out, fixed_logits], dim=-1)[..., order]
        return out

    def loss_of(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # the folds' mean losses, summed
        loss = F.cross_entropy(logits_of(w, b).reshape(-1, n_classes), targets, reduction="none").reshape(k, n)
        return (loss * weights).sum()

    w, b = _path(loss_of, (k, len(free_rows), rank), penalties, count[:, 0].to(dtype), dtype)
    if fixed_rows:
        fixed_logits = fixed_logits[None].expand(g, -1, -1, -1)

    with torch.no_grad():
        logits = torch.einsum("knr,gkcr->gknc", zr, w) + b[:, :, None]
        if fixed_rows:
            logits = torch.cat([logits, fixed_logits], dim=-1)[..., order]
        logits = logits.double()
        w_std = torch.einsum("gkcr,kdr->gkcd", w.double(), basis)  # back to the standardised features
        b_std = b.double()
        if fixed_rows:
            w_std = torch.cat([w_std, w_fix[None].expand(g, -1, -1, -1)], dim=2)[:, :, order]
            b_std = torch.cat([b_std, b_fix[None].expand(g, -1, -1)], dim=2)[:, :, order]
        raw_w = w_std / std[None, :, None]
        raw_b = b_std - torch.einsum("gkcd,kd->gkc", raw_w, mean)
    return raw_w.float(), raw_b.float(), logits.float()


def fit_head(features: torch.Tensor, targets: torch.Tensor, n_classes: int, penalty: float,
             fixed: Fixed | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The head for all of ``features``: (weight (C, d), bias (C,)) for the raw features."""
    train = torch.ones(1, len(targets), dtype=torch.bool)
    w, b, _ = _solve(features.cpu(), targets.cpu(), n_classes, train, [penalty], fixed)
    return w[0, 0], b[0, 0]


@dataclass(frozen=True)
class CrossValidation:
    """What choosing the probe's penalty found.

    Attributes:
        folds: fold number per image (cross-validation), or -1 for training and 0 for checked
            images (a holdout).
        k: number of folds (1 for a holdout).
        penalty: the chosen inverse penalty strength C.
        scores: per C tried: (C, log-loss, accuracy, training loss), on the checked predictions.
        logits: (n, classes) logits of the checked images at the chosen C; for cross-validation
            every image, each scored by the model of the folds that did not contain it.
    """

    folds: np.ndarray
    k: int
    penalty: float
    scores: tuple[tuple[float, float, float, float], ...]
    logits: np.ndarray

    @property
    def loss(self) -> float:
        """Checked log-loss at the chosen setting."""
        return next(loss for c, loss, _, _ in self.scores if c == self.penalty)

    @property
    def accuracy(self) -> float:
        """Checked accuracy at the chosen setting."""
        return next(acc for c, _, acc, _ in self.scores if c == self.penalty)


def _choose(logits: torch.Tensor, y: torch.Tensor, train_loss: torch.Tensor, penalties: Sequence[float]
            ) -> tuple[int, tuple[tuple[float, float, float, float], ...]]:
    scores = []
    for i, c in enumerate(penalties):
        loss = F.cross_entropy(logits[i], y).item()
        acc = (logits[i].argmax(1) == y).float().mean().item()
        scores.append((float(c), loss, acc, float(train_loss[i])))
    best = min(range(len(penalties)), key=lambda i: (scores[i][1], i))
    return best, tuple(scores)


def cross_validate(features: torch.Tensor, targets: torch.Tensor, n_classes: int, folds: np.ndarray, *,
                   penalties: Sequence[float] = PENALTIES, fixed: Fixed | None = None) -> CrossValidation:
    """Try each penalty on every fold; keep the one with the lowest out-of-fold log-loss."""
    x, y = features.cpu(), targets.cpu().long()
    k = int(folds.max()) + 1
    fold_t = torch.from_numpy(np.asarray(folds))
    train = torch.stack([fold_t != f for f in range(k)])
    _, _, logits = _solve(x, y, n_classes, train, penalties, fixed)  # (G, k, n, C)
    held = (~train).to(logits.dtype)
    oof = (logits * held[None, :, :, None]).sum(1)  # each image from the fold that did not train on it
    per_image = F.cross_entropy(logits.reshape(-1, n_classes), y.repeat(len(penalties) * k),
                                reduction="none").reshape(len(penalties), k, -1)
    train_loss = ((per_image * train).sum(-1) / train.sum(-1)).mean(1)
    best, scores = _choose(oof, y, train_loss, penalties)
    _logger.info("Probe: %d-fold cross-validation chose C=%g (log-loss %.3f, accuracy %.3f)", k,
                 penalties[best], scores[best][1], scores[best][2])
    return CrossValidation(np.asarray(folds), k, float(penalties[best]), scores, oof[best].numpy())


def holdout_select(features: torch.Tensor, targets: torch.Tensor, n_classes: int, train_idx: Sequence[int],
                   val_idx: Sequence[int], *, penalties: Sequence[float] = PENALTIES, fixed: Fixed | None = None
                   ) -> tuple[CrossValidation, tuple[torch.Tensor, torch.Tensor]]:
    """Fit each penalty on ``train_idx``, keep the one with the lowest log-loss on ``val_idx``.

    For sets large enough that one holdout is reliable (and k-fold would cost k times as much).

    Returns:
        (the choice, with ``logits`` of the ``val_idx`` images), (weight, bias) of the chosen head,
        trained on ``train_idx`` only.
    """
    x, y = features.cpu(), targets.cpu().long()
    train = torch.zeros(1, len(y), dtype=torch.bool)
    train[0, list(train_idx)] = True
    w, b, logits = _solve(x, y, n_classes, train, penalties, fixed)
    val = torch.tensor(list(val_idx), dtype=torch.long)
    val_logits = logits[:, 0, val]
    train_loss = torch.stack([F.cross_entropy(logits[i, 0, train[0]], y[train[0]]) for i in range(len(penalties))])
    best, scores = _choose(val_logits, y[val], train_loss, penalties)
    folds = np.full(len(y), -1)
    folds[list(val_idx)] = 0
    choice = CrossValidation(folds, 1, float(penalties[best]), scores, val_logits[best].numpy())
    return choice, (w[best, 0], b[best, 0])
