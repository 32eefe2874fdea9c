"""The app's event functions, called directly (no server), on real data and real weights."""

from __future__ import annotations

import re
import shutil
import threading

import gradio as gr
import pytest
from PIL import Image

from conftest import EXAMPLE, TEST_IMAGES, write_shapes, zip_folder
from transfer_gui.handlers import Handlers
from transfer_gui.session import Session


@pytest.fixture
def session():
    s = Session()
    yield s
    s.close()


@pytest.fixture(scope="module")
def h():
    return Handlers(training_slots=1)


def _train(h, session, mode="quick", epochs=0, stop_when=None):
    """Run the train generator to the end; press Stop at the first status matching stop_when."""
    updates = []
    for out in h.train(session, "tf_efficientnet_lite0.in1k", "", None, mode, epochs, 0, 0.25, 0):
        updates.append(out)
        if stop_when is not None and re.search(stop_when, out[0]) and not session.stop.is_set():
            h.stop(session)
    return updates


def test_example_dataset_fills_the_report_and_enables_training(h, session):
    summary, counts, gallery, skipped, train_btn, state = h.load_example(session)
    assert state is session and session.dataset is not None
    assert "96 images in 6 classes" in summary
    assert counts["images"].tolist() == [16] * 6
    assert len(gallery) == 6 * 4 and {caption for _, caption in gallery} == set(session.dataset.labels)
    assert skipped.empty and train_btn.interactive is True


def test_zip_with_junk_reports_skips_in_plain_words(h, session, tmp_path):
    root = write_shapes(tmp_path / "d")
    (root / "square" / "notes.txt").write_text("x")
    (root / "circle" / "bad.jpg").write_bytes(b"garbage")
    summary, counts, _, skipped, _, _ = h.load_zip(session, str(zip_folder(root, tmp_path / "d.zip")))
    assert "16 images in 2 classes" in summary and "2 files were skipped" in summary
    assert sorted(skipped["file"]) == ["circle/bad.jpg", "square/notes.txt"]
    assert session.workdir in next(iter(session.dataset.items)).path.parents  # files stay in the session


def test_wrong_archive_and_missing_file_are_gr_errors_with_the_fix(h, session, tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("not a zip")
    with pytest.raises(gr.Error, match="not a zip archive.*Compress the class folders"):
        h.load_zip(session, str(fake))
    with pytest.raises(gr.Error, match="Choose a .zip file first"):
        h.load_zip(session, None)
    one = tmp_path / "one"
    shutil.copytree(EXAMPLE / "animal", one / "animal")
    with pytest.raises(gr.Error, match="at least 2 classes"):
        h.load_zip(session, str(zip_folder(one, tmp_path / "one.zip")))
    assert session.dataset is None  # nothing half-loaded


def test_class_builder_makes_a_dataset(h, session):
    animals = sorted(str(p) for p in (EXAMPLE / "animal").iterdir())[:3]
    computers = sorted(str(p) for p in (EXAMPLE / "computer").iterdir())[:2]
    h.add_images(session, "animals", animals, None)
    table, files, snap, _ = h.add_images(session, "computers", computers, Image.open(TEST_IMAGES / "computer_keyboard_01.png"))
    assert table.to_dict("records") == [{"class": "animals", "images": 3}, {"class": "computers", "images": 3}]
    assert files is None and snap is None  # inputs cleared for the next class
    summary, *_ = h.use_classes(session)
    assert "6 images in 2 classes" in summary
    with pytest.raises(gr.Error, match="Type a class name"):
        h.add_images(session, "../etc", animals, None)
    table, _ = h.clear_classes(session)
    assert table.empty and not (session.workdir / "classes").exists()


def test_train_before_data_and_predict_before_training_explain_why(h, session):
    with pytest.raises(gr.Error, match="Load some images first"):
        next(h.train(session, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0))
    with pytest.raises(gr.Error, match="Train a model first"):
        h.predict(session, Image.open(TEST_IMAGES / "animal_dolphin.png"))
    assert h.predict(session, None) is None


def test_quick_training_streams_updates_then_a_model_to_test_and_download(h, session):
    h.load_example(session)
    updates = _train(h, session)
    assert len(updates) >= 3
    statuses = [u[0] for u in updates]
    assert any("Reading images" in s for s in statuses) and "**Done.**" in statuses[-1]
    loss, acc = updates[-1][1], updates[-1][2]
    assert set(loss["series"]) == {"training loss", "validation loss"}
    assert list(acc["series"].unique()) == ["validation accuracy"] and acc["value"].between(0, 1).all()
    download = updates[-1][5]
    assert session.bundle_zip.name == "trained-model.zip" and session.bundle_zip.is_file()
    assert download.value["orig_name"] == "trained-model.zip" and download.interactive
    assert "Validation accuracy" in updates[-1][6]
    label = h.predict(session, Image.open(TEST_IMAGES / "vehicle_hummer_01.png"))
    assert set(label) <= set(session.dataset.labels) and abs(sum(label.values()) - 1) < 0.02


def test_stop_during_fine_tune_keeps_the_best_model(h, session):
    h.load_example(session)
    updates = _train(h, session, mode="finetune", epochs=30, stop_when=r"Fine-tuning: epoch \d+/30, validation accuracy")
    final = updates[-1][0]
    assert "**Stopped.**" in final and "Kept the best model" in final
    assert session.result.stopped and session.predictor is not None and session.bundle_zip.is_file()
    ft_epochs = [r for r in session.result.history if r["phase"] == "finetune"]
    assert 1 <= len(ft_epochs) < 30
    assert session.result.best == min(session.result.history, key=lambda r: r["val_loss"])


def test_a_second_training_waits_for_a_stopping_one(h, session):
    """A closed tab frees Gradio's slot at once; our guard still keeps two runs from overlapping."""
    h.load_example(session)
    other = Session()
    try:
        h.load_example(other)
        first = h.train(session, "tf_efficientnet_lite0.in1k", "", None, "finetune", 30, 0, 0.25, 0)
        next(first)  # the first run now holds the training guard
        order = []

        def second():
            for _ in h.train(other, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0):
                if not order:
                    order.append("second started")
            order.append("second done")

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=3)
        assert t.is_alive() and order == []  # blocked on the guard, not training
        session.stop.set()
        for _ in first:
            pass
        t.join(timeout=300)
        assert order == ["second started", "second done"] and other.predictor is not None
    finally:
        other.close()


def test_session_close_removes_its_files(h):
    s = Session()
    h.load_example(s)
    folder = s.new_folder("x")
    assert folder.is_dir()
    s.close()
    assert not s.workdir.exists() and s.stop.is_set()
    s.close()  # twice is fine
