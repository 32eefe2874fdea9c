"""Step 1, "Your images": a zip of class folders, the example set, or classes built on the page;
then what was read, what was skipped and what looks risky."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import gradio as gr
import pandas as pd
from PIL import Image

from ..engine.errors import UserInputError
from ..engine.checks import Check
from .errors import refuse_while_training
from .session import Session
from .views import COUNTS_COLUMNS, OK, SKIPPED_COLUMNS, WARN

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["DataStep", "DataView", "ClassesView", "checks_view", "NO_IMAGES"]

NO_IMAGES = "No images yet: upload a zip, build classes, or use the example."
_GALLERY_PER_CLASS = 4


class DataView(NamedTuple):
    """What step 1 shows of the current image set."""

    summary: str
    counts: pd.DataFrame
    gallery: list
    skipped: pd.DataFrame
    checks: str
    check_images: Any  # a gr.update: the gallery only takes room when there is something to look at
    train_button: gr.Button
    session: Session


class ClassesView(NamedTuple):
    """The class builder after pictures were added (the pickers emptied for the next class)."""

    table: pd.DataFrame
    files: None
    snapshot: None
    session: Session


def checks_view(checks: list[Check]) -> tuple[str, list[tuple[str, str]]]:
    """Dataset checks as a Markdown checklist and a gallery of the images to look at."""
    lines = [f"{OK if c.ok else WARN} **{c.title}:** {c.message}" for c in checks]
    images = [img for c in checks if not c.ok for img in c.images]
    if images:
        lines.append("The images to look at are shown below.")
    return "  \n".join(lines), images


class DataStep:
    """Step 1's events."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    @staticmethod
    def view(session: Session) -> DataView:
        """What step 1 shows for the current dataset."""
        ds = session.dataset
        if ds is None:
            return DataView(NO_IMAGES, pd.DataFrame(columns=COUNTS_COLUMNS), [], pd.DataFrame(columns=SKIPPED_COLUMNS),
                            "", gr.update(value=[], visible=False), gr.Button(interactive=False), session)
        report = ds.report
        lines = [f"**{report.n_images} images in {len(ds.labels)} classes** are ready"
                 + (f"; **{len(report.skipped)} files were skipped** (listed below)." if report.skipped else ".")]
        lines += [f"{WARN} {note}" for note in report.notes]
        counts = pd.DataFrame({"class": list(report.counts), "images": list(report.counts.values())})
        gallery = []
        for label in ds.labels:
            items = [i for i in ds.items if i.label == label][:_GALLERY_PER_CLASS]
            gallery += [(str(i.path), label) for i in items]
        skipped = pd.DataFrame([{"file": s.path, "reason": s.reason} for s in report.skipped],
                               columns=SKIPPED_COLUMNS)
        checks_md, check_images = checks_view(report.checks)
        return DataView("\n\n".join(lines), counts, gallery, skipped, checks_md,
                        gr.update(value=check_images, visible=bool(check_images)), gr.Button(interactive=True),
                        session)

    def load_zip(self, session: Session, zip_file: str | None) -> DataView:
        """Read an uploaded .zip with one folder per class."""
        from ..engine.data import open_dataset

        if not zip_file:
            raise UserInputError("Choose a .zip file first: one folder per class, images inside.")
        refuse_while_training(session, "Loading new images")
        folder = session.new_folder("upload")
        try:
            session.require_server_room(Path(zip_file).stat().st_size, "Unpacking this zip")
            # the zip may unpack to no more than the session's free room (and the upload limits)
            dataset = open_dataset(zip_file, workdir=folder, limits=self.ctx.limits.archive.within(session.room()))
        except BaseException:
            session.drop_folder(folder)
            raise
        session.keep_folder("upload", folder)
        return self._use(session, dataset)

    def load_example(self, session: Session) -> DataView:
        """Use the bundled example dataset (6 classes of public-domain drawings)."""
        from ..engine.data import open_dataset
        from .assets import EXAMPLE_DATASET

        refuse_while_training(session, "Using the example images")
        return self._use(session, open_dataset(EXAMPLE_DATASET))

    def _use(self, session: Session, dataset) -> DataView:
        session.dataset = dataset
        session.use_loaded(None)  # a model trained on the old images goes; an upload stays
        # new images: a pile sorted into the old classes, and pictures filed under them, go too
        session.pile, session.filed, session.sorted_zip, session.comparison = None, {}, None, None
        session.review = None  # the pictures to check and the changes were about the old images
        return self.view(session)

    @staticmethod
    def classes_table(session: Session) -> pd.DataFrame:
        """The class builder's classes and image counts."""
        return pd.DataFrame({"class": list(session.classes),
                             "images": [len(v) for v in session.classes.values()]},
                            columns=COUNTS_COLUMNS)

    def add_images(self, session: Session, class_name: str, files: list[str] | None,
                   snapshot: str | Image.Image | None) -> ClassesView:
        """Add uploaded files and/or a webcam/clipboard snapshot (a file path or an image) to a
        named class. Unreadable files are kept out later, with reasons, when the classes are used."""
        from ..engine.images import load_image, read_failure
        from ..engine.names import ClassName, class_folder

        if not (class_name or "").strip():
            raise UserInputError("Type a class name first (letters, numbers, spaces; no slashes).")
        name = ClassName(class_name.strip(), "the class box")
        files = list(files or [])
        if not files and snapshot is None:
            raise UserInputError(f"Add some images for '{name}': upload files, take a webcam photo or paste one.")
        if snapshot is not None and (why := read_failure(snapshot)):
            raise UserInputError(f"The webcam/pasted picture cannot be used: {why}.")
        session.check_open()
        session.require_room(sum(Path(f).stat().st_size for f in files), "Adding these pictures")
        folder = class_folder(session.workdir / "classes", name)
        folder.mkdir(parents=True, exist_ok=True)
        added = session.classes.setdefault(name, [])
        for f in files:
            src = Path(f)
            dest = folder / f"{len(added):04d}_{src.name}"
            shutil.copyfile(src, dest)
            added.append(dest)
        if snapshot is not None:
            dest = folder / f"{len(added):04d}_snapshot.png"
            load_image(snapshot).save(dest)
            added.append(dest)
        gr.Info(f"'{name}' now has {len(added)} image{'s' if len(added) != 1 else ''}.")
        return ClassesView(self.classes_table(session), None, None, session)

    def clear_classes(self, session: Session) -> tuple[pd.DataFrame, Session]:
        """Empty the class builder."""
        refuse_while_training(session, "Starting over")
        session.classes.clear()
        shutil.rmtree(session.workdir / "classes", ignore_errors=True)
        return self.classes_table(session), session

    def use_classes(self, session: Session) -> DataView:
        """Use the classes built in the browser as the dataset."""
        from ..engine.data import scan_files

        refuse_while_training(session, "Using new classes")
        if not session.classes:
            raise UserInputError("Create at least two classes and add images to each first.")
        # The data set gets its own links to the builder's files, kept like an upload: "Start
        # over" or a picture added under the same name later must not delete or overwrite a
        # picture that the data set, its results or its model's retraining still use.
        builder = session.workdir / "classes"
        folder = session.new_folder("upload")
        try:
            shutil.copytree(builder, folder / "classes", copy_function=os.link)
            files = {name: [folder / "classes" / p.relative_to(builder) for p in paths]
                     for name, paths in session.classes.items()}
            dataset = scan_files(files, root=folder / "classes", limits=self.ctx.limits.archive)
        except BaseException:
            session.drop_folder(folder)
            raise
        session.keep_folder("upload", folder)
        return self._use(session, dataset)
