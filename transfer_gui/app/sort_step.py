"""Step 7, "Sort a pile": suggestions for a pile of unlabelled pictures, least certain first; the
decisions join the training set and the head retrains; the sorted pictures go home as a zip.
Also the Test step's "file it under": a test picture that was answered wrong joins the training
data under the class the user names."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import gradio as gr

from ..engine.errors import UserInputError
from .errors import refuse_while_training
from .jobs import Budget, check_model, done, keep_trained, waited
from .labelled import merged_dataset
from .session import Session
from .views import fmt_s

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["SortStep", "SortView", "FiledView", "RETRAIN_EVERY", "MAX_PILE"]

RETRAIN_EVERY = 10  # decisions after which the head retrains by itself
# Pictures in one pile: every retraining asks the model about all undecided ones again (about 30
# a second on two CPU cores), so a pile is held to what that does in well under a minute.
MAX_PILE = 1000
_QUEUE_SHOWN = 12  # pictures shown in "next up"
NO_PILE = ("Train a model first (step 3, Quick is enough), then upload your unsorted pictures here: a zip, or many "
           "files at once.")


class SortView(NamedTuple):
    """The whole Sort step."""

    status: str
    current: Any
    question: str
    accept_button: Any
    other: Any
    queue: list
    download_button: Any
    model_download: Any  # step 6's button: the model retrained here
    session: Session


class FiledView(NamedTuple):
    """A test picture filed under a class."""

    note: str
    choice: Any


class SortStep:
    """Step 7's events, and the Test step's "file it under"."""

    def __init__(self, ctx: StepContext, curve: Callable[..., Iterator[Any]]):
        self.ctx = ctx
        self.learning_curve = curve  # step 3's "Would more images help?"

    # --- views ------------------------------------------------------------------------------------

    @staticmethod
    def view(session: Session, note: str = "") -> SortView:
        """What the Sort step shows: the picture asked about, its suggestion, the queue, progress."""
        pile = session.pile
        if pile is None:
            hidden = gr.update(value=None, visible=False)
            return SortView(note or NO_PILE, hidden, "", gr.Button(value="Yes", interactive=False),
                            gr.Radio(choices=[], value=None, interactive=False), [],
                            gr.DownloadButton(interactive=False), gr.skip(), session)
        waiting = pile.waiting()
        decided = pile.decided()
        corrected, in_round = pile.corrections()
        lines = [f"**{len(decided)} of {len(pile.items)} pictures sorted**, {len(waiting)} to go "
                 f"(least certain first: the smallest lead of the likeliest class over the next)."]
        if in_round:
            lines.append(f"Since the last training you corrected **{corrected} of {in_round}** suggestions"
                         + (": the model is getting these right." if corrected <= in_round // 10 else "."))
        if pile.round:
            last = [pile.corrections(r) for r in range(pile.round)]
            lines.append("Corrections per training round so far: " + ", ".join(f"{c} of {n}" for c, n in last if n))
        if session.trained is not None:
            lines.append(f"Model now: **{session.trained.estimate.sentence()}**.")
        if note:
            lines.insert(0, note)
        labels = list(session.predictor.labels) if session.predictor is not None else []
        if not waiting:
            return SortView("  \n".join(lines), gr.update(value=None, visible=False),
                            "**Nothing left to ask about.** Download the sorted pictures below.",
                            gr.Button(value="Yes", interactive=False),
                            gr.Radio(choices=labels, value=None, interactive=False), [],
                            SortStep._download_button(session), SortStep._model_button(session), session)
        item = waiting[0]
        question = f"### Is it **{item.suggestion}**? ({item.confidence:.0%} sure)"
        if len(item.top) > 1:
            question += "  \nNext likeliest: " + ", ".join(f"{label} {p:.0%}" for label, p in item.top[1:])
        question += f"  \n`{item.shown}`" + (" (skipped before)" if item.skipped else "")
        queue = [(str(i.file), f"{i.suggestion} {i.confidence:.0%}") for i in waiting[1:1 + _QUEUE_SHOWN]]
        return SortView("  \n".join(lines), gr.update(value=str(item.file), visible=True), question,
                        gr.Button(value=f"Yes, {item.suggestion}", interactive=True),
                        gr.Radio(choices=labels, value=None, interactive=True), queue,
                        SortStep._download_button(session), SortStep._model_button(session), session)

    @staticmethod
    def _download_button(session: Session):
        zip_path = session.sorted_zip
        return (gr.DownloadButton(value=str(zip_path), interactive=True) if zip_path is not None
                else gr.DownloadButton(interactive=False))

    @staticmethod
    def _model_button(session: Session):
        return (gr.DownloadButton(value=str(session.bundle_zip), interactive=True) if session.bundle_zip is not None
                else gr.DownloadButton(interactive=False))

    # --- the pile ---------------------------------------------------------------------------------

    def load_pile(self, session: Session, files: list[str] | None) -> SortView:
        """Take a pile of unlabelled pictures (images and/or zips) and ask the model about each."""
        from ..engine.batch import iter_image_files
        from ..engine.images import IMAGE_EXTENSIONS
        from ..engine.labelling import Pile

        if not files:
            raise UserInputError("Choose the unsorted pictures first: many image files, or a .zip of them.")
        if session.predictor is None or session.dataset is None:
            raise UserInputError("Train a model first (step 3, Quick is enough): it makes the suggestions.")
        refuse_while_training(session, "Sorting new pictures")
        limits = self.ctx.limits.archive.within(session.room())
        if len(files) > limits.max_files:
            raise UserInputError(f"That is {len(files)} files; the limit is {limits.max_files}. Upload fewer.")
        session.require_room(sum(Path(f).stat().st_size for f in files), "Keeping these pictures")
        folder = session.new_folder("pile")
        try:
            skipped: list[str] = []
            found = []
            for n, (shown, file) in enumerate(iter_image_files([(Path(f).name, Path(f)) for f in files],
                                                               folder / "unzipped", lambda s, why: skipped.append(s),
                                                               limits)):
                if file.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append(shown)
                    continue
                if len(found) == MAX_PILE:
                    raise UserInputError(f"That pile holds more than {MAX_PILE} pictures, the most one pile may have "
                                         "here. Sort it in parts.")
                if folder not in file.parents:  # not from a zip: Gradio may delete its copy of an upload
                    dest = folder / f"{n:05d}_{file.name}"
                    shutil.copyfile(file, dest)
                    file = dest
                found.append((shown, file))
            if not found:
                raise UserInputError("No pictures found in that upload (images, or a .zip of images).")
            pile = Pile(found)
            pile.suggest(session.predictor, on_skip=lambda s, why: skipped.append(s))
        except BaseException:
            session.drop_folder(folder)
            raise
        session.keep_folder("pile", folder)
        session.pile, session.sorted_zip = pile, None
        note = f"**{len(pile.waiting())} pictures to sort.**" + (
            f" {len(skipped)} file(s) were not readable pictures and were left out." if skipped else "")
        return self.view(session, note)

    def _decide(self, session: Session, decide) -> SortView:
        if session.pile is None or not session.pile.waiting():
            raise UserInputError("There is no picture waiting: upload a pile first.")
        item = decide(session.pile, session.pile.waiting()[0])
        session.sorted_zip = None  # out of date now
        return self.view(session, f"`{item.shown}`: {'skipped' if item.label is None else item.label}.")

    def accept(self, session: Session) -> SortView:
        """The suggestion is right."""
        return self._decide(session, lambda pile, item: pile.accept(item.file))

    def choose(self, session: Session, label: str | None) -> SortView:
        """The picture is of ``label`` (a correction when the suggestion said otherwise)."""
        if not label:
            return self.view(session)
        label = self._known_class(session, label)
        return self._decide(session, lambda pile, item: pile.choose(item.file, label))

    @staticmethod
    def _known_class(session: Session, label: str):
        """``label`` as the current model's own ``ClassName``: a picture is filed or sorted only
        under a class the model has (a request may send any text)."""
        labels = list(session.predictor.labels) if session.predictor is not None else []
        if label not in labels:
            raise UserInputError("Choose one of the model's classes"
                                 + (f" ({', '.join(labels[:10])})." if labels else ": train a model first (step 3)."))
        return labels[labels.index(label)]

    def skip(self, session: Session) -> SortView:
        """Ask about this one later."""
        return self._decide(session, lambda pile, item: pile.skip(item.file))

    def accept_above(self, session: Session, confidence: float) -> SortView:
        """Accept every suggestion at or above ``confidence``."""
        if session.pile is None:
            raise UserInputError("Upload a pile of pictures first.")
        n = session.pile.accept_above(float(confidence))
        session.sorted_zip = None
        return self.view(session, f"Accepted **{n}** suggestion(s) at {float(confidence):.0%} or more.")

    def retrain(self, session: Session, force: bool = True) -> Iterator[SortView]:
        """Train Quick again on the images of step 1 plus every picture sorted so far, then ask
        about the rest again. Without ``force`` only once ``RETRAIN_EVERY`` decisions are new."""
        # Not due: one update that changes nothing (a generator that yields nothing leaves the
        # page's progress timer running).
        unchanged = SortView(*(gr.skip() for _ in SortView._fields))
        pile = session.pile
        if pile is None or session.trained is None:
            if force:
                raise UserInputError("Upload a pile and sort a few pictures first.")
            yield unchanged
            return
        _, new = pile.corrections()
        if not force and new < RETRAIN_EVERY:
            yield unchanged
            return
        dataset = merged_dataset(session, self.ctx.limits.archive)
        if dataset is None:
            if force:
                raise UserInputError("Nothing new to learn from yet: sort a few pictures first.")
            yield unchanged
            return
        config = dataclasses.replace(session.trained.result.config, mode="quick", init_bundle=None,
                                     weights_cache=self.ctx.weights_cache)
        check_model(self.ctx.limits, session, config)  # a continued model's name came from an upload
        if not (yield from waited(self.ctx, session, "Retraining", lambda line: self.view(session, line))):
            yield self.view(session, "Stopped before retraining.")
            return
        try:
            clock = Budget(self.ctx.limits.train_seconds, session)
            # the current model and data set stay until the new model exists (keep_trained)
            result, last = None, 0.0
            for event in self.ctx.fit(session, config, dataset):
                clock.check()
                result = event.result or result
                if time.perf_counter() - last > 1.0:
                    last = time.perf_counter()
                    yield self.view(session, f"**Retraining on {len(dataset.items)} pictures...** {event.message}")
            if result is None or result.validation is None:
                yield self.view(session, "**Retraining stopped before a new model was trained**; the model you had "
                                         "is still the current one. Sort on and retrain.")
                return
            keep_trained(self.ctx, session, result, dataset)
            pile.round += 1
            pile.suggest(session.predictor)
        finally:
            done(self.ctx, session)
        yield self.view(session, f"**Retrained on {len(dataset.items)} labelled pictures in "
                                 f"{fmt_s(result.train_seconds)}**; the suggestions below are new.")

    def retrain_when_due(self, session: Session) -> Iterator[SortView]:
        """After a decision: retrain once ``RETRAIN_EVERY`` decisions are new (else nothing)."""
        yield from self.retrain(session, force=False)

    def download(self, session: Session) -> SortView:
        """The sorted pictures as a zip (one folder per class) with labels.csv."""
        from ..engine.labelling import write_sorted_zip

        if session.dataset is None:
            raise UserInputError("There are no pictures to download yet.")
        base: dict[str, list[Path]] = {}
        pile_files = {str(i.file) for i in session.pile.items} if session.pile else set()
        for item in session.dataset.items:
            if str(item.path) not in pile_files:  # the pile's own pictures come with who sorted them
                base.setdefault(item.label, []).append(item.path)
        for label, files in session.filed.items():
            base.setdefault(label, []).extend(f for f in files if f not in base.get(label, []))
        folder = session.new_folder("sorted")
        session.require_room(sum(p.stat().st_size for paths in base.values() for p in paths), "The sorted zip")
        write_sorted_zip(folder / "sorted-pictures.zip", base, session.pile)
        session.keep_folder("sorted", folder)
        session.sorted_zip = folder / "sorted-pictures.zip"
        return self.view(session, "The sorted pictures are ready: press **Download the sorted pictures**.")

    def curve(self, session: Session) -> Iterator[Any]:
        """"Would more images help?" on the labelled set as it is now (step 1's pictures and the
        sorted ones the last training learned from), with the current model's architecture."""
        if session.trained is None:
            raise UserInputError("Train a model first (step 3), then sort a few pictures.")
        config = session.trained.result.config
        yield from self.learning_curve(session, config.model, "", config.weights_file, config.seed)

    # --- the Test step's correction ---------------------------------------------------------------

    def file_test_picture(self, session: Session, image: str | None, label: str | None) -> FiledView:
        """A test picture the model got wrong: file it under ``label``; it joins the training data
        at the next training (step 3, or a retrain in step 7)."""
        from ..engine.names import class_folder

        if not label:
            return FiledView("", gr.skip())
        if not image:
            raise UserInputError("Choose a test picture first.")
        label = self._known_class(session, label)
        session.require_room(Path(image).stat().st_size, "Keeping this picture")
        folder = class_folder(session.workdir / "filed", label)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{sum(len(v) for v in session.filed.values()):04d}_{Path(image).name}"
        shutil.copyfile(image, dest)
        session.filed.setdefault(label, []).append(dest)
        n = sum(len(v) for v in session.filed.values())
        return FiledView(f"Filed under **{label}**. It joins the training data at the next training "
                         f"({n} picture(s) filed so far; press Train in step 3).", gr.update(value=None))

