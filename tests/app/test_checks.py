"""Step 4's pictures to check and step 5's "not one of your classes", through the server's event
wrapper as the page calls them: real example drawings, real weights, a real photo."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from conftest import EXAMPLE, copy_example, run_training, zip_folder
from transfer_gui.app.server import Server
from transfer_gui.app.session import Session

PHOTO = EXAMPLE.parents[1] / "tests" / "data" / "chelsea.jpg"


@pytest.fixture(scope="module")
def h():
    return Server(training_slots=1)


@pytest.fixture
def session():
    s = Session()
    yield s
    s.close()


def _pick(h, session, rel: str):
    """Click the picture ``rel`` in the gallery of pictures to check."""
    view = h.results.view(session)
    shown = [Path(path) for path, _ in view.check_gallery]
    index = [p.as_posix().endswith(rel) for p in shown].index(True)
    return h.check.select(session, gr.SelectData(None, {"index": index, "value": None}))  # a plain event (w.plain)


@pytest.mark.slow
def test_fix_a_flipped_picture_in_one_click_undo_it_and_train_on_the_fix(h, session, tmp_path):
    data = copy_example(tmp_path / "d")
    shutil.move(data / "vehicle" / "bicycle_01.png", data / "animal" / "bicycle_01.png")
    h.event(h.data.load_zip)(None, session, str(zip_folder(data, tmp_path / "d.zip")))
    run_training(h, session)
    view = h.results.view(session)
    assert "picture(s) to check" in view.check_note
    captions = [caption for _, caption in view.check_gallery[:5]]
    assert any('Labelled "animal"; the model that had not seen it says' in c for c in captions)

    pick, move_to = _pick(h, session, "animal/bicycle_01.png")
    assert "**animal/bicycle_01.png** · Labelled *animal*" in pick and move_to["value"] != "animal"
    before = dict(session.dataset.report.counts)
    moved = h.event(h.check.move)(None, session, "vehicle")
    assert "moved from *animal* to *vehicle*" in moved.changes
    assert "Estimated accuracy before your changes" in moved.note and "Press **Train**" in moved.note
    after = session.dataset.report.counts
    assert (after["animal"], after["vehicle"]) == (before["animal"] - 1, before["vehicle"] + 1)
    assert all(Path(p).name != "bicycle_01.png" for p, _ in moved.gallery)  # decided: it leaves the list

    h.event(h.check.undo)(None, session)
    assert session.dataset.report.counts == before
    _pick(h, session, "animal/bicycle_01.png")
    h.event(h.check.move)(None, session, "vehicle")

    first = next(p for p, _ in h.results.view(session).check_gallery)
    _pick(h, session, Path(first).relative_to(session.dataset.root).as_posix())
    h.event(h.check.remove)(None, session)
    assert len(session.dataset.items) == 95
    download = h.event(h.check.corrected_zip, heavy=True)(None, session)
    with zipfile.ZipFile(download["value"]) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("changes.csv").decode())))
        assert "vehicle/bicycle_01.png" in zf.namelist() and len(zf.namelist()) == 95 + 1
    assert [(r["path"], r["action"], r["new_label"]) for r in rows][0] == ("animal/bicycle_01.png", "move", "vehicle")
    assert rows[1]["action"] == "remove" and len(rows) == 2

    run_training(h, session)  # the next training learns from the corrected set
    assert len(session.trained.dataset.items) == 95
    bike = next(i for i in session.trained.dataset.items if i.path.name == "bicycle_01.png")
    assert bike.label == "vehicle"
    note = h.results.view(session).check_note
    assert "Estimated accuracy before your changes" in note and "after them" in note


@pytest.mark.slow
def test_a_photo_is_not_one_of_your_classes_unless_switched_off(h, session):
    h.event(h.data.load_example)(None, session)
    run_training(h, session)
    verdict, confidences, *_ = h.event(h.test.predict)(None, session, str(PHOTO), 0.0, True)
    assert verdict.startswith("### Not one of your classes") and "The closest classes:" in verdict
    assert len(confidences) == 6  # every class's confidence is still shown
    verdict, *_ = h.event(h.test.predict)(None, session, str(PHOTO), 0.0, False)
    assert verdict.splitlines()[0].lstrip("# ") in session.dataset.labels
    drawing = str(session.dataset.items[0].path)
    verdict, *_ = h.event(h.test.predict)(None, session, drawing, 0.0, True)
    assert verdict.splitlines()[0].lstrip("# ") == session.dataset.items[0].label

    summary, table, _ = h.event(h.test.batch_predict, heavy=True)(None, session, [str(PHOTO), drawing], 0.0, True)
    assert table["label"].tolist() == ["not one of your classes", session.dataset.items[0].label]
    assert table["novelty"].iloc[0] > 1 > table["novelty"].iloc[1]
    assert "1 of them 'not one of your classes'" in summary
