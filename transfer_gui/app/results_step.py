"""Step 4, "Results": the figures on images the model had not learned from, the clickable
confusion matrix, the reliability chart, the most confident mistakes and the pictures to check
(check_step.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from ..engine.figures import confusion_picture
from .check_step import CheckStep
from .plain import results_summary, worst_cell
from .session import Session
from .views import PER_CLASS_COLUMNS


__all__ = ["ResultsStep", "ResultsView", "CellView", "CellPick", "MapPick", "NO_RESULTS"]

NO_RESULTS = "Train a model (step 3) to see how it does on the images it did not learn from."
_MIN_BIN_ANSWERS = 3  # reliability chart: confidence bins with fewer answers are left out
_MAX_MISTAKES = 24  # the mistakes gallery shows the worst ones; heat maps cost ~0.1 s each on a CPU


class ResultsView(NamedTuple):
    """The whole Results step."""

    summary: str
    per_class: pd.DataFrame | None
    confusion: Any
    cell_true: gr.Dropdown
    cell_pred: gr.Dropdown
    cell_note: str
    cell_gallery: list
    mistakes: list
    show_heat: bool
    reliability: Any
    feature_map: Any
    map_note: str
    check_note: str
    check_gallery: list
    check_changes: str
    check_undo: Any
    check_pick: Any
    check_move: Any


class MapPick(NamedTuple):
    """A click on the map of what the model sees: that image, and what it is."""

    image: Any
    note: str


class CellView(NamedTuple):
    """The checked images of one confusion-matrix cell."""

    note: str
    gallery: list


class CellPick(NamedTuple):
    """A click on the confusion matrix: the cell's two classes, and its images."""

    true_label: Any
    predicted: Any
    note: Any
    gallery: Any


class ResultsStep:
    """Step 4's events."""

    @classmethod
    def view(cls, session: Session) -> ResultsView:
        """The Results step for the current model."""
        ev = session.evaluation
        if ev is None:
            picker = gr.Dropdown(choices=[], value=None)
            return ResultsView(NO_RESULTS, None, None, picker, picker, "", [], [], False,
                               gr.update(value=None, visible=False), *cls.map_view(session), *CheckStep.view(session))
        table = pd.DataFrame([{"class": k, "precision": round(v["precision"], 2), "recall": round(v["recall"], 2),
                               "F1": round(v["f1"], 2), "images": v["support"]} for k, v in ev.per_class.items()],
                             columns=PER_CLASS_COLUMNS)
        picture = confusion_picture(ev.labels, ev.confusion).image
        # Start on the cell with the most mistakes: the first thing worth looking at.
        n, i, j = worst_cell(ev)
        true_label, predicted = (ev.labels[i], ev.labels[j]) if n else (ev.labels[0], ev.labels[0])
        return ResultsView(results_summary(session), table, picture,
                           gr.Dropdown(choices=ev.labels, value=true_label),
                           gr.Dropdown(choices=ev.labels, value=predicted),
                           *cls.cell_view(session, true_label, predicted), cls.mistakes_view(session, False), False,
                           cls._reliability(session), *cls.map_view(session), *CheckStep.view(session))

    @staticmethod
    def map_view(session: Session) -> tuple[Any, str]:
        """(the map of what the model sees, its note): the trained model's images on the map of
        their features, and beside it the same images through random weights once a comparison
        has read them. Hidden without a trained model."""
        from ..engine.feature_map import map_picture, trained_maps

        trained = session.trained
        dataset = trained.dataset if trained is not None else None  # what its indices point into
        if trained is None or dataset is None:
            session.feature_map = None
            return gr.update(value=None, visible=False), ""
        comparison = session.comparison
        random_features = None
        same = comparison is not None and comparison.fingerprint == dataset.fingerprint()
        if same and comparison.random_features is not None and comparison.model == trained.result.config.model:
            random_features = comparison.random_features
        maps = trained_maps(trained, dataset, session.cache, random_features)
        session.feature_map = map_picture(maps, dataset.labels)
        note = ("Each dot is one of your images, placed by what the model's features say about it (t-SNE: "
                "images the features find alike land close together; your labels only colour the dots). "
                "Click a dot to see its image.")
        if len(maps) == 1:
            note += (" Press *Compare with training from scratch* in step 3 to see, beside it, the same images "
                     "through random weights.")
        return gr.update(value=session.feature_map.image, visible=True), note

    @staticmethod
    def select_point(session: Session, evt: gr.SelectData) -> MapPick:
        """A click on the map: the image of the nearest dot, with its class and the answer it got."""
        picture = session.feature_map if isinstance(session, Session) else None
        trained = session.trained if isinstance(session, Session) else None
        if picture is None or trained is None or trained.dataset is None or not isinstance(evt.index, (list, tuple)):
            return MapPick(gr.skip(), gr.skip())
        found = picture.point_at(*evt.index)
        if found is None:
            return MapPick(gr.skip(), "No image right there: click on a dot.")
        k, index = found
        fmap = picture.maps[k]
        item = trained.dataset.items[index]
        said = fmap.predicted[fmap.indices.index(index)]
        note = f"**{item.rel}** · class **{item.label}**"
        if said is not None:
            note += (f" · answered **{said}** by a model that had not learned from it" if said != item.label
                     else " · answered right by a model that had not learned from it")
        return MapPick(gr.update(value=str(item.path), visible=True), note)

    @staticmethod
    def _reliability(session: Session):
        """The reliability chart: confidence against how often the model was right, beside the
        diagonal where the two agree."""
        if session.trained is None:
            return gr.update(value=None, visible=False)
        rows = [{"confidence": 0.0, "accuracy": 0.0, "series": "perfectly calibrated"},
                {"confidence": 1.0, "accuracy": 1.0, "series": "perfectly calibrated"}]
        # a bin of one or two answers is 0 % or 100 % by chance and makes the line jump; the
        # expected calibration error above still counts every answer
        rows += [{"confidence": b.confidence, "accuracy": b.accuracy, "series": "your model"}
                 for b in session.trained.reliability() if b.count >= _MIN_BIN_ANSWERS]
        df = pd.DataFrame(rows).astype({"confidence": float, "accuracy": float, "series": str})
        return gr.update(value=df, visible=True)

    @staticmethod
    def threshold_note(session: Session, threshold: float) -> str:
        """What the "not sure" threshold means, measured on the images of step 1."""
        if session.trained is None:
            return ""
        return session.trained.threshold(float(threshold or 0.0)).sentence()

    @staticmethod
    def _image_path(session: Session, rel: str) -> str:
        trained = session.trained
        data = trained.dataset if trained is not None and trained.dataset is not None else session.dataset
        root = data.root if data else Path(".")
        return rel if Path(rel).is_absolute() else str(root / rel)

    @classmethod
    def cell_view(cls, session: Session, true_label: str | None, predicted: str | None) -> CellView:
        """The checked images of one confusion-matrix cell."""
        ev = session.evaluation
        if ev is None or not true_label or not predicted:
            return CellView("", [])
        try:
            cell = ev.cell(true_label, predicted)
        except KeyError:
            return CellView("", [])
        what = "correctly recognised" if true_label == predicted else f"taken for '{predicted}'"
        note = f"**{len(cell)} checked image(s) of '{true_label}' were {what}**"
        note += ", most confident first." if cell else "."
        gallery = [(cls._image_path(session, r.path), f"{r.predicted_label} {r.confidence:.0%} · {r.path}")
                   for r in cell]
        return CellView(note, gallery)

    @classmethod
    def select_cell(cls, session: Session, evt: gr.SelectData) -> CellPick:
        """A click on the confusion matrix picture: pick that cell."""
        ev = session.evaluation if isinstance(session, Session) else None
        if ev is None or not isinstance(evt.index, (list, tuple)) or len(evt.index) != 2:
            return CellPick(gr.skip(), gr.skip(), gr.skip(), gr.skip())
        found = confusion_picture(ev.labels, ev.confusion).cell_at(*evt.index)
        if found is None:
            return CellPick(gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return CellPick(found[0], found[1], *cls.cell_view(session, *found))

    @classmethod
    def mistakes_view(cls, session: Session, show_heat: bool) -> list:
        """The most confident mistakes (top losses) as a gallery; with ``show_heat``, each one
        drawn with the heat map of the class the model wrongly chose."""
        from ..engine.explain import heat_map

        ev = session.evaluation
        if ev is None:
            return []
        out = []
        for m in ev.mistakes[:_MAX_MISTAKES]:
            caption = (f"{m.true_label} → {m.predicted_label} ({m.confidence:.0%}; "
                       f"{m.true_confidence:.0%} for {m.true_label})")
            path = cls._image_path(session, m.path)
            predictor = session.predictor  # a training starting meanwhile forgets the session's model
            if show_heat and predictor is not None:
                key = (path, m.predicted_label)
                if key not in session.heat_cache:
                    session.heat_cache[key] = heat_map(predictor, path, m.predicted_label).overlay()
                out.append((session.heat_cache[key], caption))
            else:
                out.append((path, caption))
        return out
