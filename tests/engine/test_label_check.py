"""Check my labels and "none of these", on the real example drawings and real built-in weights:
a flipped picture ranks near the top with its reason, a near-copy filed under another class is
found, corrections change the data exactly, and a photo is "not one of your classes" before and
after the bundle round trip."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile

import numpy as np
import pytest

from conftest import EXAMPLE, copy_example
from transfer_gui.engine.bundle import load_bundle
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.corrections import KEEP, MOVE, REMOVE, Change, apply_changes, write_corrected_zip
from transfer_gui.engine.data import open_dataset
from transfer_gui.engine.errors import ModelError
from transfer_gui.engine.images import load_image
from transfer_gui.engine.label_check import DUPLICATE, LABEL, check_labels, label_issue_order
from transfer_gui.engine.novelty import NOVELTY_FILE
from transfer_gui.engine.training import train
from transfer_gui.engine.workflow import finish, open_model, save

PHOTO = EXAMPLE.parents[1] / "tests" / "data" / "chelsea.jpg"  # a photo of a cat: none of the drawings' classes


def _checked(folder):
    dataset = open_dataset(folder)
    result = train(dataset, TrainConfig(mode="quick", seed=0))
    trained = finish(result, dataset, device="cpu")
    findings = check_labels(dataset, result.features, result.validation.indices, trained.checked_probs)
    return dataset, result, trained, findings


@pytest.mark.slow
def test_a_flipped_picture_is_in_the_top_few_with_its_label_and_a_reason(tmp_path):
    data = copy_example(tmp_path / "d")
    shutil.move(data / "vehicle" / "bicycle_01.png", data / "animal" / "bicycle_01.png")  # a bicycle called an animal
    dataset, result, trained, findings = _checked(data)
    ranked = [dataset.items[f.index].rel for f in findings]
    assert "animal/bicycle_01.png" in ranked[:5]
    found = findings[ranked.index("animal/bicycle_01.png")]
    assert found.kind == LABEL and found.given == "animal" and found.suggested != "animal"
    assert found.reason.startswith("Labelled *animal*; the model that had not seen it says")
    # the benchmark's order (every picture, not only the flagged) puts it as high
    checked = list(result.validation.indices)
    order = label_issue_order(trained.checked_probs, np.asarray(dataset.targets)[checked], result.features[checked])
    assert "animal/bicycle_01.png" in [dataset.items[checked[int(i)]].rel for i in order[:5]]


@pytest.mark.slow
def test_a_near_copy_filed_under_another_class_is_found_both_ways(tmp_path):
    data = copy_example(tmp_path / "d")
    original = sorted((data / "vehicle").iterdir())[2]
    picture = load_image(original)  # as the app decodes it (transparency on white)
    picture.resize((int(picture.width * 0.9), int(picture.height * 0.9))).save(data / "computer" / "copy.jpg",
                                                                               quality=90)
    dataset, _, _, findings = _checked(data)
    by_rel = {dataset.items[f.index].rel: f for f in findings}
    copy, first = by_rel["computer/copy.jpg"], by_rel[f"vehicle/{original.name}"]
    assert f"Almost the same picture as vehicle/{original.name} in *vehicle*" in copy.reason
    assert "Almost the same picture as computer/copy.jpg in *computer*" in first.reason
    assert DUPLICATE in (copy.kind, first.kind) and copy.suggested == "vehicle"
    assert findings[0] in (copy, first)  # a copy under two classes is the most urgent


def test_move_remove_and_undo_change_the_data_exactly_and_the_zip_says_so(example_dataset, tmp_path):
    items = example_dataset.items
    bike = next(i for i in items if i.rel == "vehicle/bicycle_01.png")
    pig = next(i for i in items if i.label == "animal")
    moved = apply_changes(example_dataset, {bike.path: "animal", pig.path: None})
    counts = moved.report.counts
    assert counts["animal"] == 16 and counts["vehicle"] == 15 and len(moved.items) == 95
    assert next(i for i in moved.items if i.path == bike.path).label == "animal"
    assert pig.path not in {i.path for i in moved.items}
    back = apply_changes(moved, {bike.path: "vehicle", pig.path: "animal"})  # undo both
    assert [(i.path, i.label) for i in back.items] == [(i.path, i.label) for i in items]

    changes = [Change(bike.path, bike.rel, "vehicle", MOVE, "animal", "labelled *vehicle*; ..."),
               Change(pig.path, pig.rel, "animal", REMOVE), Change(items[0].path, items[0].rel, "animal", KEEP)]
    with zipfile.ZipFile(write_corrected_zip(moved, changes, tmp_path / "c.zip")) as zf:
        names = set(zf.namelist())
        rows = list(csv.DictReader(io.StringIO(zf.read("changes.csv").decode())))
    assert "animal/bicycle_01.png" in names and "vehicle/bicycle_01.png" not in names
    assert f"animal/{pig.path.name}" not in names and len(names) == 95 + 1
    assert [(r["path"], r["action"], r["new_label"]) for r in rows] == [
        ("vehicle/bicycle_01.png", "move", "animal"), (pig.rel, "remove", ""), (items[0].rel, "keep", "")]
    with pytest.raises(ValueError):
        Change(bike.path, bike.rel, "vehicle", MOVE)  # a move names its class


def test_a_photo_is_not_one_of_the_drawings_classes_and_the_check_travels_in_the_bundle(
        quick_result, example_dataset, tmp_path):
    trained = finish(quick_result, example_dataset, device="cpu")
    pictures = [PHOTO, example_dataset.items[0].path, *sorted((EXAMPLE.parent / "test_images").iterdir())[:2]]
    answers = trained.predictor.answers(pictures)
    assert answers.is_novel(0) and not answers.is_novel(1)  # a training drawing is its own nearest
    assert answers.novelty[1] < 0.01
    folder = save(trained, example_dataset, tmp_path / "b")
    assert (folder / NOVELTY_FILE).is_file()
    reloaded = open_model(folder).predictor.answers(pictures)
    np.testing.assert_allclose(reloaded.novelty, answers.novelty, atol=2e-3)  # features kept as float16
    np.testing.assert_allclose(reloaded.probs, answers.probs, atol=1e-5)

    import safetensors.torch
    import torch
    safetensors.torch.save_file({"bank": torch.zeros(3, 7, dtype=torch.float16)}, str(folder / NOVELTY_FILE),
                                metadata={"line": "0.5"})
    with pytest.raises(ModelError, match="novelty.safetensors holds features of shape"):
        load_bundle(folder)
