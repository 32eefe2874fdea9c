"""Sorting a pile: suggestions least certain first, decisions that join the training set, the Test
step's "file it under", the sorted zip, and the CLI's ``suggest``. Real weights, real images."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from conftest import EXAMPLE, TEST_IMAGES, run_training, zip_folder
from transfer_gui.engine.errors import UserInputError
from transfer_gui.app.server import Server
from transfer_gui.app.session import Session
from transfer_gui.engine.labelling import BY_SUGGESTION, BY_YOU, ask_order, margins, review_order, suggestion_rows

LABELLED_PER_CLASS = 4


def test_review_order_is_the_smallest_margin_first_with_the_suggested_classes_in_turn():
    probs = np.array([[0.90, 0.05, 0.05],   # class 0, margin 0.85
                      [0.50, 0.45, 0.05],   # class 0, 0.05
                      [0.30, 0.40, 0.30],   # class 1, 0.10
                      [0.34, 0.33, 0.33],   # class 0, 0.01
                      [0.45, 0.05, 0.50],   # class 2, 0.05 (a tie with row 1: the earlier row first)
                      [0.10, 0.60, 0.30]])  # class 1, 0.30
    assert np.allclose(margins(probs), [0.85, 0.05, 0.10, 0.01, 0.05, 0.30])
    assert review_order(probs, balanced=False).tolist() == [3, 1, 4, 2, 5, 0]  # the plain margin order
    # classes in the order of their least certain picture (0, 2, 1), each class's pictures in
    # margin order, the classes taken in turn
    assert review_order(probs).tolist() == [3, 4, 2, 1, 5, 0]


def test_suggestions_come_least_certain_first_with_calibrated_top_k(quick_bundle):
    from transfer_gui.engine.workflow import open_model

    predictor = open_model(quick_bundle).predictor
    images = [(p.name, p) for p in sorted(TEST_IMAGES.glob("*.png"))] + \
             [(p.name, p) for p in sorted((EXAMPLE / "bug").glob("*.png"))[:6]]
    rows = suggestion_rows(predictor, images, top_k=3)
    assert len(rows) == len(images)
    margin = [r["margin"] for r in rows]
    assert margin[0] == min(margin)  # the least certain first, then the stated order
    assert ask_order(margin, [r["label"] for r in rows]).tolist() == list(range(len(rows)))
    for label in {r["label"] for r in rows}:  # within a class, least certain first
        mine = [r["margin"] for r in rows if r["label"] == label]
        assert mine == sorted(mine)
    probs = predictor.probabilities([p for _, p in images])
    by_name = dict(zip([n for n, _ in images], probs))
    for row in rows:
        p = np.sort(by_name[row["path"]])[::-1]
        assert row["top1_confidence"] == pytest.approx(p[0]) and row["top2_confidence"] == pytest.approx(p[1])
        assert row["margin"] == pytest.approx(p[0] - p[1]) and row["label"] == row["top1_label"]
        assert "top4_label" not in row and row["top3_confidence"] <= row["top2_confidence"]


@pytest.fixture(scope="module")
def h():
    return Server(training_slots=1)


@pytest.fixture()
def sorting(h, tmp_path):
    """A session trained on 4 pictures per class of the example, with the other 12 per class as an
    unlabelled pile (file names no longer say their class)."""
    labelled, pile, truth = tmp_path / "labelled", tmp_path / "pile", {}
    pile.mkdir()
    for folder in sorted(p for p in EXAMPLE.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"))
        (labelled / folder.name).mkdir(parents=True)
        for f in files[:LABELLED_PER_CLASS]:
            shutil.copy(f, labelled / folder.name / f.name)
        for n, f in enumerate(files[LABELLED_PER_CLASS:]):
            dest = pile / f"photo_{len(truth):03d}.png"
            shutil.copy(f, dest)
            truth[dest.name] = folder.name
    session = Session()
    h.data.load_zip(session, str(zip_folder(labelled, tmp_path / "labelled.zip")))
    run_training(h, session)
    assert session.trained is not None and session.trained.estimate.n_images == 6 * LABELLED_PER_CLASS
    yield session, sorted(pile.glob("*.png")), truth
    session.close()


@pytest.mark.slow
def test_decisions_join_the_next_training_and_the_zip_and_csv_say_who_labelled_what(h, sorting, tmp_path,
                                                                                    monkeypatch):
    from transfer_gui.app import sort_step

    session, pile_files, truth = sorting
    with monkeypatch.context() as m:  # a pile over the limit is refused, with what to do
        m.setattr(sort_step, "MAX_PILE", 71)
        with pytest.raises(UserInputError, match="more than 71 pictures.*Sort it in parts"):
            h.sort.load_pile(session, [str(f) for f in pile_files])
    assert session.pile is None
    view = h.sort.load_pile(session, [str(f) for f in pile_files])
    pile = session.pile
    assert len(pile.items) == 72 and "72 pictures to sort" in view.status
    waiting = pile.waiting()
    assert waiting[0].margin == min(i.margin for i in pile.items)  # the least certain first, then in turn
    assert ask_order([i.margin for i in waiting], [i.suggestion for i in waiting]).tolist() == list(range(72))
    assert view.current["value"] == str(waiting[0].file)  # the one asked about
    assert f"Is it **{waiting[0].suggestion}**?" in view.question

    # accept, correct, skip: each acts on the picture shown, and the next least certain follows
    first = waiting[0]
    h.sort.accept(session)
    assert first.label == first.suggestion and first.by == BY_SUGGESTION
    second = pile.waiting()[0]
    other = next(label for label in session.predictor.labels if label != second.suggestion)
    h.sort.choose(session, other)
    assert second.label == other and second.by == BY_YOU and second.corrected
    third = pile.waiting()[0]
    h.sort.skip(session)
    assert third.label is None and third.skipped and pile.waiting()[-1] is third
    assert pile.corrections() == (1, 2)
    # the true class for the rest of the first ten, as a person would answer
    while len(pile.decided()) < 10:
        item = pile.waiting()[0]
        h.sort.choose(session, truth[item.shown])
    decided = {str(i.file): i.label for i in pile.decided()}

    updates = list(h.sort.retrain_when_due(session))  # ten decisions: the head retrains by itself
    assert updates and "Retrained on 34 labelled pictures" in updates[-1].status
    assert session.trained.estimate.n_images == 34  # 24 of step 1 + the 10 decided
    in_training = {str(item.path): item.label for item in session.dataset.items}
    assert all(in_training[path] == label for path, label in decided.items())
    assert pile.round == 1 and "Corrections per training round so far" in updates[-1].status
    assert all(i.suggestion for i in pile.waiting())  # asked again with the new model

    n = h.sort.accept_above(session, 0.0)  # accept every remaining suggestion
    assert "Accepted **62**" in n.status and not pile.waiting() and len(pile.decided()) == 72
    view = h.sort.download(session)
    assert view.download_button.interactive and session.sorted_zip.is_file()
    with zipfile.ZipFile(session.sorted_zip) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        images = [n for n in zf.namelist() if n != "labels.csv"]
    assert sorted(r["file"] for r in rows) == sorted(images) and len(images) == 24 + 72
    for row in rows:
        assert row["file"].split("/")[0] == row["label"]  # one folder per class
    by_file = {i.file.name: i for i in pile.decided()}
    for row in rows:
        name = row["file"].split("/", 1)[1].split("_", 1)[1]
        if name in by_file:
            assert row["labelled_by"] == by_file[name].by and row["label"] == by_file[name].label
        else:
            assert row["labelled_by"] == BY_YOU  # step 1's pictures
    assert sum(r["labelled_by"] == BY_SUGGESTION for r in rows) == sum(i.by == BY_SUGGESTION for i in pile.decided())


@pytest.mark.slow
def test_a_retrain_stopped_before_its_model_keeps_the_model_and_the_data_set(h, sorting):
    """Retrain, like Train, replaces the model (and the data set it was trained on) only once the
    new one exists."""
    session, pile_files, truth = sorting
    h.sort.load_pile(session, [str(f) for f in pile_files[:12]])
    while session.pile.waiting():
        h.sort.choose(session, truth[session.pile.waiting()[0].shown])
    model, dataset = session.model, session.dataset
    updates = []
    for view in h.sort.retrain(session):
        updates.append(view.status)
        if "Retraining on 36 pictures" in view.status and not session.stop.is_set():
            h.train.stop(session)  # the first update comes before the new pictures' features
    assert "stopped before a new model was trained" in updates[-1] and "still the current one" in updates[-1]
    assert session.model is model and session.dataset is dataset
    assert h.test.predict(session, str(pile_files[0])).confidences  # the model still answers
    updates = [view.status for view in h.sort.retrain(session)]
    assert "Retrained on 36 labelled pictures" in updates[-1]
    assert session.model is not model and len(session.dataset.items) == 36


def test_a_test_picture_filed_under_a_class_is_in_the_next_training(h, sorting, tmp_path):
    session, _, _ = sorting
    picture = tmp_path / "dolphin.png"
    shutil.copy(TEST_IMAGES / "animal_dolphin.png", picture)
    verdict = h.test.predict(session, str(picture))
    assert verdict.file_under.choices and verdict.file_under.interactive  # the model's classes to choose from
    note, _ = h.sort.file_test_picture(session, str(picture), "bug")  # the user says: file it under bug
    assert "Filed under **bug**" in note
    filed = session.filed["bug"][0]
    assert filed.is_file() and filed.read_bytes() == picture.read_bytes()
    run_training(h, session)
    items = {str(i.path): i.label for i in session.dataset.items}
    assert items[str(filed)] == "bug" and session.trained.estimate.n_images == 6 * LABELLED_PER_CLASS + 1


def test_cli_suggest_writes_suggestions_least_certain_first(cli, quick_bundle, tmp_path):
    out = tmp_path / "suggestions.csv"
    proc = cli("suggest", str(quick_bundle), str(TEST_IMAGES), "--csv", str(out), "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(list(TEST_IMAGES.glob("*.png")))
    margin = [float(r["margin"]) for r in rows]
    assert ask_order(margin, [r["label"] for r in rows]).tolist() == list(range(len(rows)))
    assert set(rows[0]) == {"path", "label", "confidence", "novelty", "top1_label", "top1_confidence", "top2_label",
                            "top2_confidence", "margin"}
    proc = cli("suggest", str(quick_bundle), str(TEST_IMAGES))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == [r["path"] for r in rows] and "least certain first" in proc.stderr
    assert cli("suggest", str(quick_bundle), str(TEST_IMAGES), "--top-k", "1").returncode == 2
