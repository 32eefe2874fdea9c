"""Step 4's "Pictures to check": the pictures whose label is likely wrong, near-duplicates and
outliers, each with its reason; keep, move or remove each in one click, undo, and download the
corrected data set. Changes apply to the data set of step 1, so the next training uses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import gradio as gr

from ..engine.errors import UserInputError
from .session import Session

if TYPE_CHECKING:
    from ..engine.corrections import Change
    from ..engine.label_check import Finding
    from ..engine.workflow import TrainedModel
    from .context import StepContext

__all__ = ["CheckStep", "CheckView", "PickView", "Review", "NO_CHECKS"]

NO_CHECKS = "Train a model (step 3) to see which pictures may be labelled wrong."
_SHOWN = 24  # pictures in the gallery at a time; the next ones come as these are decided
_CHANGES_SHOWN = 15


@dataclass
class Review:
    """The current model's pictures to check, and the user's decisions.

    Attributes:
        trained: the model the findings come from.
        findings: its pictures to check, most urgent first (indices into ``trained.dataset``).
        changes: every decision so far, oldest first (they outlive the model: after a new
            training the same list goes on).
        accuracy_before: the estimated accuracy when the first change was made.
        shown: the files of the gallery's pictures, in order.
        selected: the file of the picture clicked last, or None.
    """

    trained: TrainedModel
    findings: list[Finding]
    changes: list[Change] = field(default_factory=list)
    accuracy_before: float | None = None
    shown: list[Path] = field(default_factory=list)
    selected: Path | None = None

    def pending(self) -> list[Finding]:
        """Findings not decided yet."""
        decided = {c.path for c in self.changes}
        items = self.trained.dataset.items
        return [f for f in self.findings if items[f.index].path not in decided]

    def finding(self, path: Path) -> Finding | None:
        """The finding of the picture at ``path``."""
        items = self.trained.dataset.items
        return next((f for f in self.findings if items[f.index].path == path), None)


class CheckView(NamedTuple):
    """The whole "Pictures to check" section."""

    note: str
    gallery: list
    changes: str
    undo: Any
    pick: Any  # PickView's parts: the note and the class picker
    move_to: Any


class PickView(NamedTuple):
    """A click on a picture to check: its reason, and the class it would move to."""

    pick: str
    move_to: Any


def _review(session: Session) -> Review | None:
    """The review of the current model, made when a new model is trained (the decisions so far
    carry over to it)."""
    from ..engine.label_check import check_labels

    trained = session.trained
    if trained is None or trained.dataset is None or trained.result.features is None:
        return None
    review = session.review
    if review is None or review.trained is not trained:
        validation = trained.result.validation
        findings = check_labels(trained.dataset, trained.result.features, validation.indices, trained.checked_probs)
        review = Review(trained, findings, list(review.changes) if review else [],
                        review.accuracy_before if review else None)
        session.review = review
    return review


class CheckStep:
    """The events of "Pictures to check"."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    @staticmethod
    def view(session: Session) -> CheckView:
        """The pictures to check of the current model, and the changes so far."""
        review = _review(session)
        if review is None:
            return CheckView(NO_CHECKS, [], "", gr.Button(interactive=False), "", gr.Dropdown(choices=[], value=None))
        pending = review.pending()
        items = review.trained.dataset.items
        review.shown = [items[f.index].path for f in pending[:_SHOWN]]
        review.selected = None
        kinds = {k: sum(f.kind == k for f in pending) for k in ("label", "duplicate", "outlier")}
        if pending:
            what = [f"{n} {words}" for n, words in ((kinds["label"], "may be labelled wrong"),
                                                    (kinds["duplicate"], "near-duplicate(s)"),
                                                    (kinds["outlier"], "unlike all the others")) if n]
            note = (f"**{len(pending)} picture(s) to check** ({', '.join(what)}), the most likely to need a look "
                    "first. Click one, then keep it, move it or remove it.")
        else:
            note = "**Nothing left to check.** No picture looks labelled wrong, doubled or out of place."
        note += _before_after(session, review)
        # captions are plain text: the reason's *class* marks become quotes
        gallery = [(str(items[f.index].path), f"{n}. " + f.reason.replace("*", '"'))
                   for n, f in enumerate(pending[:_SHOWN], start=1)]
        lines = [f"- {c.sentence()}" for c in reversed(review.changes[-_CHANGES_SHOWN:])]
        changes = ("**Your changes** (newest first; they apply to the data set of step 1):\n" + "\n".join(lines)
                   if lines else "")
        return CheckView(note, gallery, changes, gr.Button(interactive=bool(review.changes)),
                         "Click a picture above to decide about it.",
                         gr.Dropdown(choices=list(review.trained.dataset.labels), value=None))

    @staticmethod
    def select(session: Session, evt: gr.SelectData) -> PickView:
        """A click on a picture to check: what was found, and its suggested class."""
        review = session.review if isinstance(session, Session) else None
        index = evt.index if isinstance(evt.index, int) else None
        if review is None or index is None or not 0 <= index < len(review.shown):
            return PickView(gr.skip(), gr.skip())
        review.selected = review.shown[index]
        finding = review.finding(review.selected)
        rel = review.trained.dataset.items[finding.index].rel
        return PickView(f"**{rel}** · {finding.reason}",
                        gr.update(value=finding.suggested))

    def keep(self, session: Session) -> CheckView:
        """The selected picture's label is right: it leaves the list."""
        return self._decide(session, "keep", None)

    def move(self, session: Session, label: str | None) -> CheckView:
        """Move the selected picture to class ``label``."""
        if not label:
            raise UserInputError("Choose the class to move the picture to first.")
        return self._decide(session, "move", label)

    def remove(self, session: Session) -> CheckView:
        """Leave the selected picture out of the data set (its file stays, undo puts it back)."""
        return self._decide(session, "remove", None)

    def _decide(self, session: Session, action: str, label: str | None) -> CheckView:
        from ..engine.corrections import Change, apply_changes

        review = session.review
        if review is None or review.selected is None:
            raise UserInputError("Click a picture to check first.")
        finding = review.finding(review.selected)
        if finding is None:  # the list changed since the click
            raise UserInputError("Click a picture to check first.")
        item = review.trained.dataset.items[finding.index]
        if label is not None and label not in review.trained.dataset.labels:
            raise UserInputError(f"'{label}' is not one of the classes; choose one from the list.")
        if label == item.label:
            action, label = "keep", None
        change = Change(item.path, item.rel, item.label, action, label, finding.reason)
        if action != "keep" and session.dataset is not None:
            session.dataset = apply_changes(session.dataset, {item.path: change.label_after},
                                            self.ctx.limits.archive)
        if review.accuracy_before is None:
            review.accuracy_before = review.trained.estimate.accuracy
        review.changes.append(change)
        return self.view(session)

    def undo(self, session: Session) -> CheckView:
        """Take back the last change."""
        from ..engine.corrections import apply_changes

        review = session.review
        if review is None or not review.changes:
            raise UserInputError("There is no change to undo.")
        change = review.changes[-1]
        if change.action != "keep" and session.dataset is not None:
            session.dataset = apply_changes(session.dataset, {change.path: change.given}, self.ctx.limits.archive)
        review.changes.pop()
        return self.view(session)

    def corrected_zip(self, session: Session) -> Any:
        """The data set as it is now (one folder per class) with changes.csv, to download."""
        from ..engine.corrections import write_corrected_zip

        if session.dataset is None:
            raise UserInputError("Load some images first (step 1).")
        review = session.review
        session.require_room(sum(item.path.stat().st_size for item in session.dataset.items), "The corrected data set")
        folder = session.new_folder("corrected")
        try:
            path = write_corrected_zip(session.dataset, review.changes if review else [],
                                       folder / "corrected-data-set.zip")
        except BaseException:
            session.drop_folder(folder)
            raise
        session.keep_folder("corrected", folder)
        return gr.update(value=str(path), visible=True)


def _before_after(session: Session, review: Review) -> str:
    """The estimated accuracy before the first change and, once a model was trained since, now."""
    if review.accuracy_before is None:
        return ""
    moved = sum(c.action != "keep" for c in review.changes)
    now = review.trained.estimate.accuracy
    if review.trained.dataset is session.dataset and moved:
        return (f"\n\nEstimated accuracy before your changes: **{review.accuracy_before:.0%}**; after them: "
                f"**{now:.0%}** (each checked by models that had not seen the picture).")
    if moved:
        return (f"\n\nEstimated accuracy before your changes: **{review.accuracy_before:.0%}**. Press **Train** in "
                "step 3 to see it after them.")
    return ""
