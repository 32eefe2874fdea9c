"""The six steps' event functions (app/*_step.py), called directly (no server), on real data and real weights."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from conftest import run_training, EXAMPLE, ROOT, TEST_IMAGES, write_shapes, zip_folder
from transfer_gui.engine.errors import UserInputError
from transfer_gui.app.server import Server
from transfer_gui.engine.probe import PENALTIES
from transfer_gui.app.session import Session


@pytest.fixture
def session():
    s = Session()
    yield s
    s.close()


@pytest.fixture(scope="module")
def h():
    return Server(training_slots=1)


def test_example_dataset_fills_the_report_and_enables_training(h, session):
    summary, counts, gallery, skipped, checks, check_images, train_btn, state = h.data.load_example(session)
    assert state is session and session.dataset is not None
    assert "96 images in 6 classes" in summary
    assert counts["images"].tolist() == [16] * 6
    assert len(gallery) == 6 * 4 and {caption for _, caption in gallery} == set(session.dataset.labels)
    assert skipped.empty and train_btn.interactive is True
    assert checks.count("OK ·") == 4 and "Look at this" not in checks
    assert check_images["value"] == [] and check_images["visible"] is False  # the example data is clean


def test_zip_with_junk_reports_skips_in_plain_words(h, session, tmp_path):
    root = write_shapes(tmp_path / "d")
    (root / "square" / "notes.txt").write_text("x")
    (root / "circle" / "bad.jpg").write_bytes(b"garbage")
    summary, counts, _, skipped, *_ = h.data.load_zip(session, str(zip_folder(root, tmp_path / "d.zip")))
    assert "16 images in 2 classes" in summary and "2 files were skipped" in summary
    assert sorted(skipped["file"]) == ["circle/bad.jpg", "square/notes.txt"]
    assert session.workdir in next(iter(session.dataset.items)).path.parents  # files stay in the session


def test_wrong_archive_and_missing_file_are_gr_errors_with_the_fix(h, session, tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("not a zip")
    with pytest.raises(UserInputError, match="not a zip archive.*Compress the class folders"):
        h.data.load_zip(session, str(fake))
    with pytest.raises(UserInputError, match="Choose a .zip file first"):
        h.data.load_zip(session, None)
    one = tmp_path / "one"
    shutil.copytree(EXAMPLE / "animal", one / "animal")
    with pytest.raises(UserInputError, match="at least 2 classes"):
        h.data.load_zip(session, str(zip_folder(one, tmp_path / "one.zip")))
    assert session.dataset is None  # nothing half-loaded


def test_class_builder_makes_a_dataset(h, session):
    animals = sorted(str(p) for p in (EXAMPLE / "animal").iterdir())[:3]
    computers = sorted(str(p) for p in (EXAMPLE / "computer").iterdir())[:2]
    h.data.add_images(session, "animals", animals, None)
    table, files, snap, _ = h.data.add_images(session, "computers", computers, Image.open(TEST_IMAGES / "computer_keyboard_01.png"))
    assert table.to_dict("records") == [{"class": "animals", "images": 3}, {"class": "computers", "images": 3}]
    assert files is None and snap is None  # inputs cleared for the next class
    summary, *_ = h.data.use_classes(session)
    assert "6 images in 2 classes" in summary
    with pytest.raises(UserInputError, match="Type a class name"):
        h.data.add_images(session, "  ", animals, None)
    with pytest.raises(UserInputError, match="holds a slash.*Rename that class"):
        h.data.add_images(session, "../etc", animals, None)
    used = {item.path: item.path.read_bytes() for item in session.dataset.items}
    table, _ = h.data.clear_classes(session)
    assert table.empty and not (session.workdir / "classes").exists()
    # "Start over" empties the builder; the data set in use keeps its pictures
    assert len(used) == 6 and all(path.exists() for path in used)
    h.data.add_images(session, "animals", computers, None)  # same class and file numbers as before
    assert {path: path.read_bytes() for path in used} == used


def test_train_before_data_and_predict_before_training_explain_why(h, session):
    with pytest.raises(UserInputError, match="Load some images first"):
        next(h.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0))
    with pytest.raises(UserInputError, match="Train a model first"):
        h.test.predict(session, Image.open(TEST_IMAGES / "animal_dolphin.png"))
    empty = h.test.predict(session, None)
    assert empty[:4] == ("", None, None, "") and empty.file_under.interactive is False
    with pytest.raises(UserInputError, match="Train a model first"):
        h.test.batch_predict(session, [str(TEST_IMAGES / "animal_dolphin.png")], 0.5)


@pytest.mark.slow
def test_quick_training_streams_updates_then_a_model_to_test_and_download(h, session):
    h.data.load_example(session)
    updates = run_training(h, session)
    assert len(updates) >= 3
    statuses = [u[0] for u in updates]
    assert any("Reading images" in s for s in statuses) and "**Done.**" in statuses[-1]
    loss, acc = updates[-1][1].value["data"], updates[-1][2].value["data"]
    assert {r[2] for r in loss} == {"training loss", "validation loss"}
    assert {r[2] for r in acc} == {"validation accuracy"}
    accuracies = [r[1] for r in acc if r[1] is not None and r[1] == r[1]]  # the NaN seed point aside
    assert len(accuracies) == len(PENALTIES) and all(0 <= a <= 1 for a in accuracies)  # one per setting tried
    assert "estimated by 5-fold cross-validation on all 96 images" in statuses[-1]
    download = updates[-1][5]
    assert session.bundle_zip.name == "trained-model.zip" and session.bundle_zip.is_file()
    assert download.value["orig_name"] == "trained-model.zip" and download.interactive
    assert "estimated by 5-fold cross-validation" in h.results.view(session)[0]
    verdict, label, heat, *_ = h.test.predict(session, Image.open(TEST_IMAGES / "vehicle_hummer_01.png"), 0.0)
    assert set(label) == set(session.dataset.labels) and abs(sum(label.values()) - 1) < 0.02
    assert max(label, key=label.get) in verdict and heat.size == (192, 178)


@pytest.mark.slow
def test_stop_during_fine_tune_keeps_the_quick_model(h, session):
    h.data.load_example(session)
    updates = run_training(h, session, mode="finetune", epochs=30,
                           stop_when=r"Fine-tuning: epoch \d+/30, accuracy on held-out images")
    final = updates[-1][0]
    assert "**Stopped.**" in final and "the quick model (the new head alone) was kept" in final
    assert session.result.stopped and session.predictor is not None and session.bundle_zip.is_file()
    ft_epochs = [r for r in session.result.history if r.phase == "finetune"]
    assert 1 <= len(ft_epochs) < 30
    assert session.result.best.phase == "head" and session.result.validation.trained_on_all


@pytest.mark.slow
def test_a_second_training_waits_for_a_stopping_one(h, session):
    """A closed tab frees Gradio's slot at once; our slots still keep two runs from overlapping,
    and the waiting user is told so."""
    h.data.load_example(session)
    other = Session()
    try:
        h.data.load_example(other)
        first = h.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "finetune", 30, 0, 0.25, 0)
        next(first)  # the first run now holds the training slot
        statuses = []

        def second():
            for status, *_ in h.train.train(other, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0):
                statuses.append(status)
            statuses.append("second done")

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=3)
        # waiting in line, told its place, not training
        assert t.is_alive() and statuses and other.predictor is None
        assert all("Waiting for a free training slot**: 1 running, you are next" in s for s in statuses)
        session.stop.set()
        for _ in first:
            pass
        t.join(timeout=300)
        assert statuses[-1] == "second done" and other.predictor is not None
        assert any("Done." in s for s in statuses)
    finally:
        other.close()


def test_a_stop_before_the_first_epoch_keeps_the_model_the_user_had(h, session):
    """Train replaces the model only once the new one exists: a second run stopped as it starts
    says so and leaves the first model answering, downloadable and measured."""
    h.data.load_example(session)
    run_training(h, session)
    predictor, bundle_zip, trained = session.predictor, session.bundle_zip, session.trained
    before = h.test.predict(session, Image.open(TEST_IMAGES / "animal_dolphin.png"))
    # Lite1's features are not cached yet, so the Stop lands before any model exists
    updates = run_training(h, session, model="tf_efficientnet_lite1.in1k", stop_when=r"Starting")
    assert "no new model to keep" in updates[-1][0]
    assert "The model you had is still the current one" in updates[-1][0]
    assert session.predictor is predictor and session.trained is trained and bundle_zip.exists()
    after = h.test.predict(session, Image.open(TEST_IMAGES / "animal_dolphin.png"))
    assert after[0] == before[0]


def test_session_close_removes_its_files(h):
    s = Session()
    h.data.load_example(s)
    folder = s.new_folder("x")
    assert folder.is_dir()
    s.close()
    assert not s.workdir.exists() and s.stop.is_set()
    s.close()  # twice is fine


@pytest.mark.slow
def test_a_run_still_going_when_its_session_closes_leaves_no_files(h, session):
    """The closed-tab race seen in CI: the tab's session is closed (files deleted) while Gradio is
    still driving its training. The run must end without writing the folder back, free its slot,
    and anything else the closed session is asked to store is refused with a message."""
    h.data.load_example(session)
    run = h.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "finetune", 30, 0, 0.25, 0)
    for status, *_ in run:
        if "Training the new head" in status or "Fine-tuning" in status:
            break
    session.close(wait_s=0)  # the run holds the training lock: files go at once, the run goes on
    assert not session.workdir.exists()
    updates = list(run)  # ...and is driven to its end, as Gradio does until it sees the disconnect
    assert not session.workdir.exists() and session.bundle_zip is None
    assert all("Done" not in u[0] for u in updates)
    assert h.slots.busy() == (0, 0)  # the slot is free for the next user
    with pytest.raises(UserInputError, match="session has ended.*Reload the page"):
        h.data.add_images(session, "cats", [str(TEST_IMAGES / "animal_dolphin.png")], None)
    assert not session.workdir.exists()


# --- results, heat maps, "not sure", batch prediction ---------------------------------------------

@pytest.fixture(scope="module")
def trained(h):
    """A session with the quick model trained on the example data (seed 0)."""
    s = Session()
    h.data.load_example(s)
    run_training(h, s)
    yield s
    s.close()


@pytest.mark.slow
def test_results_view_shows_metrics_matrix_and_cells_with_exactly_their_images(h, trained):
    ev = trained.evaluation
    summary, table, picture, true_dd, pred_dd, note, cell, mistakes, show_heat, reliability, *_ = h.results.view(trained)
    # plain sentences first, with the numbers they stand for; the statistics' names folded below
    from transfer_gui.app.plain import in_words

    plain, details = summary.split("<details>")
    est = trained.trained.estimate
    assert f"About {in_words(est.accuracy)} pictures like yours will be right" in plain
    assert f"between {est.low:.0%} and {est.high:.0%}" in plain
    assert f"It got {round(ev.accuracy * 96)} of 96 of your pictures right" in plain and ev.n_images == 96
    assert "No checked image is a copy" in plain and "macro-F1" not in plain and "Wilson" not in plain
    off = max((ev.confusion[i][j], i, j) for i in range(6) for j in range(6) if i != j)
    assert f"**{ev.labels[off[1]]}** taken for **{ev.labels[off[2]]}** ({off[0]} pictures" in plain
    # how far to trust its percentages, said with the numbers it is drawn from
    probs, targets = trained.trained.checked_probs, trained.trained.checked_targets
    said, right = probs.max(1).mean(), (probs.argmax(1) == targets).mean()
    from transfer_gui.engine.evaluation import check_calibration

    check = check_calibration(probs.max(1), probs.argmax(1) == targets)
    assert check.ece == pytest.approx(est.ece)
    way = ("**Its confidence means what it says**" if est.ece <= 0.05
           else "**As far as 96 pictures can tell, its confidence means what it says**" if check.chance >= 0.05
           else "right more often than it says" if said < right else "right less often than it says")
    assert way in plain and f"{said:.0%}" in plain and f"{right:.0%}" in plain
    assert "macro-F1" in details and "Wilson" in details and "Expected calibration error" in details
    assert f"would show {check.floor:.3f} on average on 96 pictures" in details
    assert "5-fold cross-validation on all 96 images" in details and "Confidences were" in details
    bins = reliability["value"]
    assert reliability["visible"] and set(bins["series"]) == {"perfectly calibrated", "your model"}
    shown = [b for b in trained.trained.reliability() if b.count >= 3]
    assert len(bins) == 2 + len(shown) and sum(b.count for b in trained.trained.reliability()) == 96
    assert table["class"].tolist() == ev.labels and table["images"].sum() == ev.n_images
    assert picture.size[0] > 300 and show_heat is False
    # it opens on the cell with the most mistakes
    off = max((ev.confusion[i][j], i, j) for i in range(6) for j in range(6) if i != j)
    assert (true_dd.value, pred_dd.value) == (ev.labels[off[1]], ev.labels[off[2]])
    # a click on each cell of the picture shows exactly that cell's images, as judged out of fold
    from transfer_gui.engine.figures import confusion_picture

    geometry = confusion_picture(ev.labels, ev.confusion)
    val_items = [trained.dataset.items[i] for i in trained.result.validation.indices]
    probs = trained.result.validation.logits
    for i, t in enumerate(ev.labels):
        for j, p in enumerate(ev.labels):
            x, y = geometry.centre(t, p)
            event = gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})
            got_t, got_p, note, gallery = h.results.select_cell(trained, event)
            assert (got_t, got_p) == (t, p)
            expected = {str(it.path) for it, pr in zip(val_items, probs)
                        if it.label == t and ev.labels[pr.argmax()] == p}
            assert {path for path, _ in gallery} == expected
            assert len(gallery) == ev.confusion[i][j] and f"**{len(gallery)} checked image" in note
    # outside the grid: nothing changes
    assert h.results.select_cell(trained, gr.SelectData(None, {"index": [1, 1], "value": None})) == (gr.skip(),) * 4
    # what the model sees: every image on the map, from the features the training left in the
    # session's cache; a click on a dot shows that image and the answer it got out of fold
    view = h.results.view(trained)
    assert view.feature_map["visible"] is True and "Compare with training from scratch" in view.map_note
    picture = trained.feature_map
    assert view.feature_map["value"] is picture.image and len(picture.maps) == 1
    fmap = picture.maps[0]
    assert fmap.title == "pretrained weights" and fmap.indices == list(range(96))
    said = {trained.dataset.items[i].rel: r.predicted_label
            for i, r in zip(trained.result.validation.indices, ev.images)}
    wrong = next(k for k, (t, p) in enumerate(zip(fmap.true, fmap.predicted)) if p != t)
    item = trained.dataset.items[fmap.indices[wrong]]
    x, y = picture.points[0][wrong]
    image, note = h.results.select_point(trained, gr.SelectData(None, {"index": [x, y], "value": None}))
    assert image["value"] == str(item.path) and f"class **{item.label}**" in note
    assert f"answered **{said[item.rel]}**" in note and said[item.rel] != item.label
    # mistakes: top losses first; with heat maps, each is an overlay of the picture's size
    assert len(mistakes) == len(ev.mistakes)
    heat = h.results.mistakes_view(trained, True)
    for (plain, caption), (overlay, caption2) in zip(mistakes, heat):
        assert caption == caption2 and overlay.size == Image.open(plain).size


def test_not_sure_below_the_threshold_shows_the_candidates(h, trained):
    image = Image.open(TEST_IMAGES / "fruit_lemon_wedge_ganson.png")
    verdict, label, *_ = h.test.predict(trained, image, 1.0)
    assert verdict.startswith("### Not sure") and "Top candidates" in verdict
    top = max(label, key=label.get)
    assert top in verdict
    verdict, _, _, note, _ = h.test.predict(trained, image, 0.0)
    assert verdict.startswith(f"### {top}") and f"evidence for '{top}'" in note
    # what the threshold means, counted on the 96 out-of-fold answers
    meaning = trained.trained.threshold(0.6)
    text = h.results.threshold_note(trained, 0.6)
    assert meaning.below + meaning.above == 96 and f"({meaning.right_below} of {meaning.below})" in text
    assert text.startswith("On your images") and "below 60%" in text
    assert h.results.threshold_note(Session(), 0.6) == ""  # nothing trained: nothing to say


@pytest.mark.slow
def test_batch_prediction_csv_equals_the_cli_rows(h, trained, tmp_path):
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    for p in sorted(TEST_IMAGES.glob("*.png"))[:3]:
        shutil.copy(p, folder / "more" / p.name)
    (folder / "more" / "notes.jpg").write_bytes(b"not an image")
    zip_folder(folder / "more", folder / "batch.zip")
    single = folder / "vehicle.png"
    shutil.copy(TEST_IMAGES / "vehicle_hummer_01.png", single)
    summary, table, csv_button = h.test.batch_predict(trained, [str(folder / "batch.zip"), str(single)], 0.6)
    assert "4 picture(s) classified" in summary and "1 file(s) skipped: batch.zip:notes.jpg" in summary
    assert table.columns.tolist() == ["image", "label", "confidence", "novelty"] and len(table) == 4
    app_rows = list(csv.DictReader(open(csv_button.value["path"])))
    cli_csv = tmp_path / "cli.csv"
    proc = subprocess.run([sys.executable, "-m", "transfer_gui", "predict", str(trained.bundle_zip),
                           "batch.zip", "vehicle.png", "--threshold", "0.6", "--csv", str(cli_csv)],
                          cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    cli_rows = list(csv.DictReader(open(cli_csv)))
    assert [r["path"] for r in app_rows] == [r["path"] for r in cli_rows] == table["image"].tolist()
    assert [r["label"] for r in app_rows] == [r["label"] for r in cli_rows]
    assert list(app_rows[0]) == list(cli_rows[0])  # same columns, same order
    for a, c in zip(app_rows, cli_rows):
        for key in a:
            if "confidence" in key:
                assert float(a[key]) == pytest.approx(float(c[key]), abs=1e-5)
            elif key == "novelty":  # a distance over a line of ~0.5: the features' last digits, doubled
                assert float(a[key]) == pytest.approx(float(c[key]), abs=1e-4)
            else:
                assert a[key] == c[key]


def test_dataset_checks_in_step_one_show_the_offending_images(h, session, tmp_path):
    root = write_shapes(tmp_path / "d")
    (root / "circle" / "copy.png").write_bytes((root / "square" / "square_0.png").read_bytes())
    _, _, _, _, checks, update, _, _ = h.data.load_zip(session, str(zip_folder(root, tmp_path / "d.zip")))
    images = update["value"]
    assert update["visible"] is True
    assert "**Look at this** · **Conflicting labels:** The same image is labelled 'circle' and 'square'" in checks
    assert sorted(caption for _, caption in images) == ["labelled 'circle': circle/copy.png",
                                                        "labelled 'square': square/square_0.png"]
    assert all(session.workdir in Path(p).parents for p, _ in images)


# --- export, load back, continue, publish ----------------------------------------------------------

@pytest.mark.slow
def test_export_reports_both_parity_checks_and_offers_the_files(h, trained):
    report, button = h.download.export(trained)
    assert report.count("**Passed**") == 2 and "TorchScript: parity check passed" in report
    assert "ONNX: parity check passed" in report and button.interactive
    import zipfile

    with zipfile.ZipFile(button.value["path"]) as zf:
        assert {"model.onnx", "model.torchscript.pt", "labels.json", "README.md"} <= set(zf.namelist())
    assert "## How well it did" in h.download.card_view(trained)


@pytest.mark.slow
def test_evaluating_a_model_on_the_images_it_learned_says_so_and_keeps_its_results(h, trained):
    """Step 2's Evaluate on step 1's images, right after training on them: the figure is named
    for what it is, never "unseen", and the cross-validated results stay."""
    before = h.results.view(trained)[0]
    note, summary, *_ = h.model.evaluate_model(trained)
    assert "Measured on the 96 images it was trained on" in note and "not how it will do on new pictures" in note
    assert trained.trained is not None and summary == before and "cross-validation" in summary


@pytest.mark.slow
def test_an_uploaded_model_is_tested_evaluated_and_continued_with_a_new_class(h, trained, tmp_path):
    from conftest import copy_example

    new = Session()
    try:
        status, keep, download, _ = h.model.load_model(new, str(trained.bundle_zip))
        assert "Loaded tf_efficientnet_lite0.in1k" in status and "6 classes" in status
        assert keep.visible and keep.value is True and download.interactive
        image = Image.open(TEST_IMAGES / "fruit_lemon_wedge_ganson.png")
        assert h.test.predict(new, image, 0.0)[1] == pytest.approx(h.test.predict(trained, image, 0.0)[1], abs=1e-6)
        # evaluate it on "new" data: the example zip, all of it
        h.data.load_zip(new, str(zip_folder(EXAMPLE, tmp_path / "all.zip")))
        assert new.predictor is new.loaded.predictor  # new data does not drop the uploaded model
        note, summary, *_ = h.model.evaluate_model(new)
        right = round(new.evaluation.accuracy * 96)
        assert "Evaluated on 96 images" in note and f"got {right} of the 96 pictures of step 1 right" in summary
        # continue training on data with a seventh class: the head grows
        data = copy_example(tmp_path / "seven")
        shutil.copytree(EXAMPLE / "animal", data / "zebra")  # a made-up class, enough to check the head
        h.data.load_zip(new, str(zip_folder(data, tmp_path / "seven.zip")))
        updates = list(h.train.train(new, "resnet18.a1_in1k", "", None, "quick", 0, 0, 0.25, 0, True))
        assert "**Done.**" in updates[-1][0] and any("Loading the saved model" in u[0] for u in updates)
        assert new.result.labels == sorted(EXAMPLE_LABELS + ["zebra"]) and len(new.predictor.labels) == 7
        # the uploaded model's classes that are missing from the data are refused with the reason
        h.data.load_zip(new, str(zip_folder(copy_example(tmp_path / "two", ["animal", "bug"]), tmp_path / "two.zip")))
        with pytest.raises(UserInputError, match="no images here"):
            list(h.train.train(new, "", "", None, "quick", 0, 0, 0.25, 0, True))
    finally:
        new.close()
    with pytest.raises(UserInputError, match="not a zip archive"):
        h.model.load_model(Session(), str(TEST_IMAGES / "animal_dolphin.png"))


def test_publish_offline_says_so(h, trained, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError, match="Publishing needs the internet"):
        h.download.push(trained, "alice/flowers", "hf_token", True)
    with pytest.raises(UserInputError, match="Train a model"):
        h.download.push(Session(), "alice/flowers", "hf_token", True)
    # no token pasted: the token of "Sign in with Hugging Face" is used (then the Hub is needed)
    with pytest.raises(UserInputError, match="Publishing needs the internet"):
        h.download.push(trained, "alice/flowers", "", True,
                        oauth_token=gr.OAuthToken(token="hf_signed_in", scope="", expires_at=0))
    with pytest.raises(UserInputError, match="on a Space, sign in with Hugging Face; elsewhere paste one"):
        h.download.push(trained, "alice/flowers", "", True, oauth_token=None)
    with pytest.raises(UserInputError, match="the model must be public"):  # a Space cannot show a private model
        h.download.push(trained, "alice/flowers", "hf_token", True, True)


EXAMPLE_LABELS = sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())


# --- pretrained vs scratch, learning curve -----------------------------------------------------------

@pytest.mark.slow
def test_compare_draws_live_and_stop_ends_it_with_what_was_checked(h, session):
    h.data.load_example(session)
    updates = []
    for update in h.train.compare(session, "tf_efficientnet_lite0.in1k", "", None, 0):
        updates.append(update)
        if "Training from scratch" in update.status:
            session.stop.set()  # as the Stop button does
    live = [u for u in updates if "Training pretrained" in u.status]
    assert live and isinstance(live[-1].plot["value"], Image.Image)  # the picture grows while it runs
    assert live[-1].compare_button.interactive is False and live[-1].stop_button.interactive is True
    final = updates[-1]
    assert final.status.startswith("**Stopped.** **Pretrained:") and "same 24 held-out images" in final.status
    assert final.plot["visible"] is True and final.plot["value"].size == (720, 360)
    assert final.compare_button.interactive is True and final.stop_button.interactive is False
    assert session.trained is None  # an experiment: it keeps no model


@pytest.mark.slow
def test_curve_button_draws_the_curve_with_a_sentence(h, trained):
    outputs = list(h.train.curve(trained, "tf_efficientnet_lite0.in1k", "", None, 0))
    assert any("Training on 25% of the training images" in o[0] for o in outputs[:-1])
    note, plot, _ = outputs[-1]
    assert plot["visible"] is True  # hidden until now: no empty plot on the page
    assert note.startswith(("**Still rising", "**Flat")) and "24 held-out images" in note
    assert isinstance(plot["value"], Image.Image) and plot["value"].size == (720, 340)


@pytest.mark.slow
def test_trying_every_built_in_model_ranks_them_and_one_click_picks_the_best(h, monkeypatch):
    import huggingface_hub.constants

    from transfer_gui.engine.catalog import CATALOG

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # online, the shortlist would join

    session = Session()
    try:
        with pytest.raises(UserInputError, match="Load some images first"):
            next(h.trials.try_models(session))
        h.data.load_example(session)
        updates = list(h.event(h.trials.try_models)(None, session))
        status, table, use_button, _ = updates[-1]
        assert any(u[0].startswith("**Trying tf_efficientnet_lite1.in1k**") for u in updates[:-1])
        built_in = [m for m in CATALOG if m.builtin]
        assert len(table) == len(built_in) and not session.training.locked()  # the slot is given back
        best = session.model_trials[0]
        assert [t.accuracy for t in session.model_trials] == sorted((t.accuracy for t in session.model_trials),
                                                                    reverse=True)
        assert table["model"].iloc[0] == best.title and table["about right"].iloc[0] == f"{best.accuracy:.0%}"
        assert f"**{best.title} did best on your pictures**: about {best.accuracy:.0%} right" in status
        assert use_button.visible is True and use_button.value == f"Use {best.title}"
        assert h.trials.use_best(session)["value"] == best.model
        # the winner's features are cached: its Quick training now skips the backbone
        assert "**Done.**" in run_training(h, session, model=best.model)[-1][0]
    finally:
        session.close()
