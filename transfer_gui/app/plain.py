"""The Results step's summary in plain words: one sentence per fact first, for people who do not
program; the statistics with their names folded into a details section below them."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from ..engine.evaluation import INTERVAL_NAME, check_calibration
from .views import OK, WARN

if TYPE_CHECKING:
    from ..engine.evaluation import CalibrationCheck, EvalReport
    from ..engine.workflow import TrainedModel
    from .session import Session

__all__ = ["in_words", "results_summary", "worst_cell", "TRUSTED_ECE"]

# Expected calibration error up to which "when it says 80 %, it is right about 80 % of the time"
# is a fair sentence (the goal for 10+ images per class).
TRUSTED_ECE = 0.05
_DENOMINATORS = (2, 3, 4, 5, 10)  # "N in M" as people say it


def in_words(share: float) -> str:
    """A share as "N in M", M one of 2, 3, 4, 5, 10 (0.75 -> "3 in 4", 0.86 -> "9 in 10", 0.62 -> "3 in 5")."""
    share = min(max(share, 0.0), 1.0)
    if share >= 0.95:
        return "almost all"
    if share < 0.05:
        return "almost none"
    nearest = min((Fraction(round(share * d), d) for d in _DENOMINATORS),
                  key=lambda f: (abs(float(f) - share), f.denominator))
    return f"{nearest.numerator} in {nearest.denominator}"


def _confidence_sentence(trained: TrainedModel, check: CalibrationCheck) -> str:
    probs, targets = np.asarray(trained.checked_probs), np.asarray(trained.checked_targets)
    said = float(probs.max(1).mean())
    right = float((probs.argmax(1) == targets).mean())
    if trained.estimate.ece <= TRUSTED_ECE:
        return ("**Its confidence means what it says**: when it says 80 %, it is right about 80 % of the time "
                f"(on your pictures it said {said:.0%} on average and was right {right:.0%} of the time).")
    if check.within_chance:
        # on a few dozen pictures even exactly right percentages show gaps this size: saying "a little
        # low" or "a little high" there would read chance as a fault
        return (f"**As far as {len(targets)} pictures can tell, its confidence means what it says**: on average "
                f"it said {said:.0%} and was right {right:.0%} of the time, and the gaps in the chart "
                "below are as large as chance alone makes them on this many pictures.")
    if said < right:
        return (f"**It is right more often than it says**: on average it said {said:.0%} and was right "
                f"{right:.0%} of the time, so read its percentages as a little low.")
    return (f"**It is right less often than it says**: on average it said {said:.0%} but was right only "
            f"{right:.0%} of the time, so read its percentages as a little high.")


def _calibration(trained: TrainedModel) -> CalibrationCheck:
    probs = np.asarray(trained.checked_probs)
    return check_calibration(probs.max(1), probs.argmax(1) == np.asarray(trained.checked_targets))


def worst_cell(ev: EvalReport) -> tuple[int, int, int]:
    """(count, true class, predicted class) of the confusion matrix's cell with the most mistakes
    ((0, 0, 0) when there are none)."""
    n = len(ev.labels)
    off = [(ev.confusion[i][j], i, j) for i in range(n) for j in range(n) if i != j]
    return max(off) if off else (0, 0, 0)


def _worst_mix_up(ev: EvalReport) -> str | None:
    count, i, j = worst_cell(ev)
    if not count:
        return None
    return (f"Its most common mistake: **{ev.labels[i]}** taken for **{ev.labels[j]}** "
            f"({count} picture{'s' if count != 1 else ''}; the matrix below shows them all).")


def _details(session: Session, ev: EvalReport, check: CalibrationCheck | None) -> list[str]:
    """The figures with their names, as the statistics call them."""
    trained = session.trained
    lines: list[str] = []
    if trained is None:
        lines.append(f"Accuracy {ev.accuracy:.1%} on {ev.n_images} images · macro-F1 {ev.macro_f1:.2f}.")
    else:
        est = trained.estimate
        lines += [f"Accuracy {est.accuracy:.1%}, {INTERVAL_NAME} {est.low:.1%}-{est.high:.1%}, {est.how()} · "
                  f"macro-F1 {est.macro_f1:.2f}. The interval is where the share the model gets right on new "
                  "pictures like these most likely lies, given this many images.", est.note]
        if est.method == "cross-validation":
            lines.append("Every image below was judged by a model trained without it (the folds it was not in), "
                         "so the tables, the matrix and the mistakes cover all your images.")
        elif est.trained_on_all:
            lines.append("The figures below come from the held-out images of the evidence run, before the final "
                         "fine-tuning on all images.")
    if session.calibration is not None:
        lines.append(session.calibration.sentence())
    if check is not None:
        lines.append(f"Expected calibration error: {check.ece:.3f} (confidences are off from the observed "
                     f"accuracy by about {check.ece:.0%} on average; the chart below shows where). A model whose "
                     f"confidences were exactly right would show {check.floor:.3f} on average on {check.n} "
                     f"pictures, and {check.ece:.3f} or more in {check.chance:.0%} of tries.")
    return lines


def results_summary(session: Session) -> str:
    """The Results step's opening Markdown: plain sentences, then the details (needs
    ``session.evaluation``)."""
    ev = session.evaluation
    correct = round(ev.accuracy * ev.n_images)
    trained = session.trained
    check = _calibration(trained) if trained is not None else None
    if trained is None:  # an uploaded model, evaluated on every image of step 1
        plain = [f"**The uploaded model got {correct} of the {ev.n_images} pictures of step 1 right** "
                 f"({ev.accuracy:.0%})."]
    else:
        est = trained.estimate
        judged = ("each judged by a model that had not seen it" if est.method == "cross-validation"
                  else "kept out of its training to check it")
        plain = [f"**About {in_words(est.accuracy)} pictures like yours will be right** (somewhere between "
                 f"{est.low:.0%} and {est.high:.0%}).",
                 f"It got {correct} of {ev.n_images} of your pictures right, {judged}.",
                 _confidence_sentence(trained, check)]
    mix_up = _worst_mix_up(ev)
    if mix_up:
        plain.append(mix_up)
    if trained is not None:
        plain.append(f"{OK if trained.leakage.ok else WARN} {trained.leakage.message}")
    if trained is not None:
        plain.append('The "not sure" threshold in step 5 says what its percentages mean on your pictures.')
    details = "\n\n".join(_details(session, ev, check))
    return ("  \n".join(plain) + "\n\n<details><summary>Details, with the statistics' names</summary>\n\n"
            + details + "\n\n</details>")
