"""Metrics: accuracy (with its interval), macro-F1, per-class precision/recall/F1/support, confusion
matrix, mistakes, and how far confidences can be trusted (calibration error, reliability, thresholds).

NumPy only: the app's page imports this before torch is loaded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageResult", "EvalReport", "evaluate_predictions", "wilson_interval", "INTERVAL_NAME", "ECE_BINS",
           "ReliabilityBin", "reliability_bins", "expected_calibration_error",
           "calibration_error", "calibrated_floor", "CalibrationCheck", "check_calibration",
           "ThresholdMeaning", "threshold_meaning"]

INTERVAL_NAME = "95 % Wilson score interval"  # what ``wilson_interval`` gives, in words for people


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
        ece: expected calibration error of these probabilities (15 bins).
    """

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    mistakes: list[ImageResult]
    n_images: int
    images: list[ImageResult]
    ece: float = float("nan")

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
            "ece": self.ece,
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
        ece=expected_calibration_error(probs, y_true) if n else float("nan"),
    )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95 % with the default z): unlike the plain
    "p ± 1.96 standard errors", it stays inside 0-1 and behaves with few images and with
    accuracies near 100 % (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it for small n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# --- measuring calibration -----------------------------------------------------------------------

ECE_BINS = 15  # the usual choice since Guo et al. (2017)


@dataclass(frozen=True)
class ReliabilityBin:
    """Predictions whose top confidence fell in [lower, upper).

    Attributes:
        lower, upper: the bin's confidence range.
        count: predictions in the bin.
        confidence: their mean top confidence.
        accuracy: the share of them that were right.
    """

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def reliability_bins(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Top confidences against observed accuracy in ``bins`` equal-width bins (empty bins left out).

    Args:
        probs: (n, classes) predicted probabilities.
        targets: true class index of each row.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    if len(probs) == 0:
        return []
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    index = _bin_index(confidence, bins)
    out = []
    for i in range(bins):
        mask = index == i
        if mask.any():
            out.append(ReliabilityBin(i / bins, (i + 1) / bins, int(mask.sum()),
                                      float(confidence[mask].mean()), float(correct[mask].mean())))
    return out


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    # bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 cannot occur (max of a softmax)
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017): the mean gap between
    confidence and accuracy over equal-width confidence bins, weighted by how many predictions fall
    in each. 0 is perfect; 0.05 means confidences are off by about 5 points on average."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return float("nan")
    return calibration_error(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(targets, dtype=int), bins)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """``expected_calibration_error`` from each answer's stated confidence and whether it was right."""
    return float(_calibration_errors(np.asarray(confidence, dtype=np.float64),
                                     np.asarray(correct, dtype=np.float64)[None], bins)[0])


def _calibration_errors(confidence: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of ``correct`` (draws, n) against one row of confidences: per bin, the
    number right minus the confidences' sum, in absolute value, summed and divided by n."""
    index = _bin_index(confidence, bins)
    member = np.zeros((len(confidence), bins))
    member[np.arange(len(confidence)), index] = 1.0
    said = confidence @ member
    return np.abs(correct @ member - said).sum(1) / max(len(confidence), 1)


@dataclass(frozen=True)
class CalibrationCheck:
    """A measured ECE read against chance: even a model whose confidences are exactly right shows a
    gap on a finite number of answers (about 0.07 on 300 answers spread over the bins), so the ECE
    alone cannot say whether confidences are off.

    Attributes:
        ece: the measured expected calibration error.
        floor: the mean ECE of a perfectly calibrated model stating the same confidences on as many
            answers (each drawn right with exactly its stated probability).
        chance: the share of those draws whose ECE is at least the measured one.
        n: how many answers.
    """

    ece: float
    floor: float
    chance: float
    n: int

    @property
    def within_chance(self) -> bool:
        """True when a perfectly calibrated model would show a gap this large at least 1 time in 20."""
        return self.chance >= 0.05


def check_calibration(confidence: np.ndarray, correct: np.ndarray, draws: int = 400, seed: int = 0,
                      bins: int = ECE_BINS) -> CalibrationCheck:
    """The ECE of these answers and how often a perfectly calibrated model would show as much."""
    confidence = np.asarray(confidence, dtype=np.float64)
    ece = calibration_error(confidence, correct, bins)
    by_chance = _calibrated_errors(confidence, draws, seed, bins)
    return CalibrationCheck(ece, float(by_chance.mean()), float((by_chance >= ece - 1e-12).mean()), len(confidence))


def calibrated_floor(confidence: np.ndarray, draws: int = 400, seed: int = 0, bins: int = ECE_BINS) -> float:
    """The ECE that a perfectly calibrated model stating these confidences would show on average on
    this many answers (``CalibrationCheck.floor``)."""
    return float(_calibrated_errors(np.asarray(confidence, dtype=np.float64), draws, seed, bins).mean())


def _calibrated_errors(confidence: np.ndarray, draws: int, seed: int, bins: int) -> np.ndarray:
    # seeded, so the page says the same thing of the same answers every time
    right = np.random.default_rng(seed).random((draws, len(confidence)), dtype=np.float32) < confidence
    return _calibration_errors(confidence, right.astype(np.float32), bins)


@dataclass(frozen=True)
class ThresholdMeaning:
    """What a "not sure" threshold means on the images the model did not learn from.

    Attributes:
        threshold: the confidence below which the app answers "not sure".
        below, above: predictions under / at or over it.
        right_below, right_above: how many of those were right.
    """

    threshold: float
    below: int
    above: int
    right_below: int
    right_above: int

    def sentence(self) -> str:
        """E.g. "Below 60 %, it was right 45 % of the time on your images (9 of 20); at 60 % or
        more, 93 % (56 of 60)"."""
        t = f"{self.threshold:.0%}"
        if self.below + self.above == 0:
            return ""
        parts = []
        if self.below:
            parts.append(f"below {t} it was right {self.right_below / self.below:.0%} of the time "
                         f"({self.right_below} of {self.below})")
        else:
            parts.append(f"none of its answers was below {t}")
        if self.above:
            parts.append(f"at {t} or more, {self.right_above / self.above:.0%} "
                         f"({self.right_above} of {self.above})")
        else:
            parts.append(f"none reached {t}")
        text = "On your images (each judged by a model that had not seen it): " + "; ".join(parts) + "."
        return text


def threshold_meaning(probs: np.ndarray, targets: np.ndarray, threshold: float) -> ThresholdMeaning:
    """Count right and wrong answers below and at/above ``threshold`` (top confidence)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    right = probs.argmax(axis=1) == targets if len(probs) else np.zeros(0, dtype=bool)
    low = confidence < threshold
    return ThresholdMeaning(float(threshold), int(low.sum()), int((~low).sum()), int((right & low).sum()),
                            int((right & ~low).sum()))
