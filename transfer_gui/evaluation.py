"""Metrics: accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageResult", "EvalReport", "evaluate_predictions"]


@dataclass(frozen=True)
class ImageResult:
    """What the model said about one evaluated image.

    Attributes:
        index: position in the evaluated list.
        path: the image (as given to ``evaluate_predictions``).
        true_label: its class.
        predicted_label: the model's top class.
        confidence: probability of ``predicted_label``.
        true_confidence: probability of ``true_label`` (its loss is ``-log(true_confidence)``).
    """

    index: int
    path: str
    true_label: str
    predicted_label: str
    confidence: float
    true_confidence: float

    @property
    def correct(self) -> bool:
        """The top class is the true class."""
        return self.true_label == self.predicted_label


@dataclass
class EvalReport:
    """How well a model did on a set of labelled images.

    Attributes:
        labels: class names; rows/columns of ``confusion`` follow this order.
        accuracy: fraction of images classified correctly.
        macro_f1: unweighted mean of the per-class F1 scores (classes that occur as truth or
            prediction).
        per_class: {label: {precision, recall, f1, support}}.
        confusion: counts; ``confusion[i][j]`` = images of class i predicted as class j.
        mistakes: wrong predictions, highest loss first (lowest probability for the true class:
            fastai's "top losses", the most telling errors).
        n_images: images evaluated.
        images: one ImageResult per evaluated image, in the order given.
    """

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    mistakes: list[ImageResult]
    n_images: int
    images: list[ImageResult]

    def cell(self, true_label: str, predicted_label: str) -> list[ImageResult]:
        """The images of one confusion-matrix cell, most confident first.

        Raises:
            KeyError: a label this report does not have.
        """
        for label in (true_label, predicted_label):
            if label not in self.labels:
                raise KeyError(label)
        found = [r for r in self.images if r.true_label == true_label and r.predicted_label == predicted_label]
        return sorted(found, key=lambda r: -r.confidence)

    def to_dict(self) -> dict:
        """JSON-ready form (the CLI's ``evaluate`` output)."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class,
            "labels": self.labels,
            "confusion_matrix": self.confusion,
            "n_images": self.n_images,
            "mistakes": [m.__dict__ for m in self.mistakes],
        }


def evaluate_predictions(y_true: np.ndarray | list[int], probs: np.ndarray, labels: list[str],
                         paths: list[str] | None = None) -> EvalReport:
    """Compute the metrics from true class ids and predicted probabilities.

    Args:
        y_true: true class index per image.
        probs: (n_images, n_classes) predicted probabilities, columns in ``labels`` order.
        labels: class names.
        paths: the image paths, for the list of mistakes.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(labels)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = confusion[i, i]
        predicted = confusion[:, i].sum()
        support = confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                            "support": int(support)}
        if support or predicted:  # like scikit-learn: classes absent from both sides don't count
            f1s.append(f1)
    paths = paths or [str(i) for i in range(len(y_true))]
    images = [ImageResult(i, paths[i], labels[t], labels[p], float(probs[i, p]), float(probs[i, t]))
              for i, (t, p) in enumerate(zip(y_true, y_pred))]
    mistakes = sorted((r for r in images if not r.correct), key=lambda r: (r.true_confidence, -r.confidence))
    n = len(y_true)
    return EvalReport(
        labels=list(labels),
        accuracy=float((y_pred == y_true).mean()) if n else 0.0,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        per_class=per_class,
        confusion=confusion.tolist(),
        mistakes=mistakes,
        n_images=n,
        images=images,
    )
