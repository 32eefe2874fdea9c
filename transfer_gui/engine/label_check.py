"""Pictures to check: labels that are likely wrong, near-duplicates and outliers, each with its
reason in words, the picture most likely to need a look first.

* **Wrong labels** come from the out-of-fold probabilities (each picture judged by the fold model
  that did not learn from it) by confident learning (Northcutt et al., JAIR 2021): class j's
  threshold is the average probability of j over the pictures labelled j, and a picture is
  flagged when another class clears its own threshold and is the likeliest of those that do (or,
  when no class clears its threshold, when another class is likelier than its label). The
  order blends the picture's out-of-fold probability of its own label (3/4) with the share of its
  5 nearest pictures in feature space that carry that label (1/4): measured with 10 % of labels
  flipped (``benchmarks/bench_labels.py``), this put more flipped pictures in the top k than
  either alone and than cleanlab's ``find_label_issues`` on the same probabilities.
* **Near-duplicates** are pairs whose backbone features are closer than a quarter of the median
  distance from a picture to its nearest other picture in the same set. Measured: resized and
  re-saved copies of openclipart drawings sat at 0.02-0.06 cosine distance, distinct drawings'
  nearest neighbours at a median of 0.35; on 28-pixel Fashion-MNIST such copies are as far apart
  as distinct pictures (0.10 vs 0.17), so only closer copies are found there.
* **Outliers** are pictures whose nearest other picture is further away than the upper quartile of
  those distances plus 3 interquartile ranges (Tukey's "far out").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import ImageDataset
from .novelty import unit_rows

__all__ = ["Finding", "LABEL", "DUPLICATE", "OUTLIER", "flag_labels", "label_issue_order", "check_labels",
           "write_findings",
           "FINDING_COLUMNS"]

LABEL, DUPLICATE, OUTLIER = "label", "duplicate", "outlier"
NEIGHBOURS = 5
NEIGHBOUR_WEIGHT = 0.25  # the neighbours' share in the order (measured, see above)
DUPLICATE_SHARE = 0.25
FAR_OUT = 3.0
# How urgent each kind is, for one order over all of them: a copy filed under two classes is
# certainly wrong one way; an outlier may be a wrong picture; a copy within a class only adds
# weight to one picture. Wrong labels rank by 1 - their blended probability.
_CROSS_COPY, _OUTLIER, _SAME_COPY = 1.0, 0.5, 0.2
_CHUNK = 1024
FINDING_COLUMNS = ["rank", "path", "given_label", "suggested_label", "kind", "reason"]


@dataclass(frozen=True)
class Finding:
    """One picture worth a look.

    Attributes:
        index: its position in the dataset.
        kind: the most urgent reason's kind: ``LABEL``, ``DUPLICATE`` or ``OUTLIER``.
        urgency: 0-1, higher first.
        given: its label.
        suggested: the class to move it to, or None (duplicates within a class, outliers).
        reason: every reason, in words.
    """

    index: int
    kind: str
    urgency: float
    given: str
    suggested: str | None
    reason: str

    def row(self, dataset: ImageDataset, rank: int) -> dict:
        """The CSV / command-line row."""
        return {"rank": rank, "path": dataset.items[self.index].rel, "given_label": self.given,
                "suggested_label": self.suggested or "", "kind": self.kind, "reason": self.reason}


def _neighbours(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, cosine distances) of each unit row's ``k`` nearest other rows, nearest first."""
    k = min(k, len(x) - 1)
    idx, dist = [], []
    for start in range(0, len(x), _CHUNK):
        sim = x[start:start + _CHUNK] @ x.T
        rows = torch.arange(start, min(start + _CHUNK, len(x)))
        sim[rows - start, rows] = -2.0  # not its own neighbour
        top = sim.topk(k, dim=1)
        idx.append(top.indices)
        dist.append(1 - top.values)
    return torch.cat(idx), torch.cat(dist)


def _neighbour_share(near: torch.Tensor, given: np.ndarray) -> np.ndarray:
    """Per picture, the share of its nearest pictures that carry its label."""
    return (given[near.numpy()] == given[:, None]).mean(axis=1)


def flag_labels(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, suggested): per picture, whether another class clears its per-class threshold
    and is the likeliest of those that do (that class is suggested), or, when no class is
    confident, whether another class is likelier than the label, which is itself under its
    threshold (the likeliest class is suggested). The second case finds flipped pictures that
    the models find hard to place at all (seen: a bicycle filed under *animal*, 4 % animal and
    no class over 23 %)."""
    n, c = probs.shape
    rows = np.arange(n)
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(c)])
    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    likeliest = probs.argmax(axis=1)
    by_joint = above.any(axis=1) & (confident != given)
    unsure = ~above.any(axis=1) & (likeliest != given) & (probs[rows, given] < thresholds[given])
    return by_joint | unsure, np.where(by_joint, confident, likeliest)


def label_issue_order(probs: np.ndarray, given: Sequence[int], features: torch.Tensor) -> np.ndarray:
    """Pictures (positions in ``probs``) from the likeliest to be mislabelled to the least.

    Args:
        probs: (n, classes) out-of-fold probabilities.
        given: the label of each picture.
        features: (n, d) their backbone features.
    """
    given = np.asarray(given, dtype=int)
    near, _ = _neighbours(unit_rows(features), NEIGHBOURS)
    blended = ((1 - NEIGHBOUR_WEIGHT) * probs[np.arange(len(given)), given]
               + NEIGHBOUR_WEIGHT * _neighbour_share(near, given))
    return np.argsort(blended, kind="stable")


def check_labels(dataset: ImageDataset, features: torch.Tensor, checked: Sequence[int],
                 probs: np.ndarray) -> list[Finding]:
    """Every picture worth a look, the most urgent first (one entry per picture).

    Args:
        dataset: the labelled pictures.
        features: (len(dataset.items), d) backbone features of every picture.
        checked: the pictures that have an out-of-fold prediction (all of them after
            cross-validation; a holdout's otherwise): only these are judged for wrong labels.
        probs: (len(checked), classes) their out-of-fold probabilities, in ``dataset.labels`` order.
    """
    labels, items = dataset.labels, dataset.items
    given = np.asarray(dataset.targets, dtype=int)
    if len(items) < 3:
        return []
    x = unit_rows(features)
    near, dist = _neighbours(x, NEIGHBOURS)
    found: dict[int, list[tuple[float, str, str, str | None]]] = {}  # (urgency, kind, reason, move to)

    checked = list(checked)
    flagged, suggested = flag_labels(np.asarray(probs), given[checked])
    share = _neighbour_share(near, given)
    for pos, i in enumerate(checked):
        if flagged[pos]:
            j, p = int(suggested[pos]), float(probs[pos][suggested[pos]])
            blended = (1 - NEIGHBOUR_WEIGHT) * float(probs[pos][given[i]]) + NEIGHBOUR_WEIGHT * share[i]
            agree = int(round((given[near[i].numpy()] == j).sum()))
            reason = (f"labelled *{labels[given[i]]}*; the model that had not seen it says *{labels[j]}* ({p:.0%})"
                      + (f", and {agree} of its {near.shape[1]} closest pictures are *{labels[j]}*" if agree else ""))
            found.setdefault(i, []).append((1 - blended, LABEL, reason, labels[j]))

    nearest = dist[:, 0].numpy()
    line = DUPLICATE_SHARE * float(np.median(nearest))
    for i in range(len(items)):
        j = int(near[i, 0])
        if nearest[i] <= line and items[i].sha1 != items[j].sha1:  # exact copies: step 1's report says so
            if given[i] != given[j]:
                found.setdefault(i, []).append((_CROSS_COPY, DUPLICATE, f"almost the same picture as {items[j].rel} in "
                                                f"*{labels[given[j]]}*", labels[given[j]]))
            elif i < j or int(near[j, 0]) != i:  # a pair within a class is listed once
                found.setdefault(i, []).append((_SAME_COPY, DUPLICATE, f"almost the same picture as {items[j].rel}, "
                                                f"also *{labels[given[i]]}*", None))
    q1, q3 = np.percentile(nearest, [25, 75])
    for i in np.flatnonzero(nearest > q3 + FAR_OUT * (q3 - q1)):
        j = int(near[i, 0])
        found.setdefault(int(i), []).append((_OUTLIER, OUTLIER, f"unlike every other picture here (the closest is "
                                             f"{items[j].rel}, *{labels[given[j]]}*)", None))
    out = []
    for i, reasons in found.items():
        reasons.sort(key=lambda r: -r[0])
        urgency, kind = reasons[0][:2]
        move_to = next((r[3] for r in reasons if r[3] is not None), None)
        text = "; ".join(r[2] for r in reasons)
        out.append(Finding(i, kind, float(urgency), labels[given[i]], move_to, text[0].upper() + text[1:]))
    out.sort(key=lambda f: (-f.urgency, f.index))
    return out


def write_findings(findings: Sequence[Finding], dataset: ImageDataset, path: str | Path) -> int:
    """Write the findings as CSV (``FINDING_COLUMNS``); returns how many rows."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FINDING_COLUMNS)
        writer.writeheader()
        for rank, finding in enumerate(findings, start=1):
            writer.writerow(finding.row(dataset, rank))
    return len(findings)
