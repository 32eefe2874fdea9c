"""The command line as a user runs it: outputs and exit codes, of real processes for training and a bad
input, of the CLI's main() in this process for the rest (see the ``cli`` fixture)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import EXAMPLE, ROOT, TEST_IMAGES, copy_example

ENV_OFFLINE = {"HF_HUB_OFFLINE": "1"}


def run(*args, env=None, timeout=600):
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "transfer_gui", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, example_zip):
    out = tmp_path_factory.mktemp("cli") / "model"
    proc = run("train", example_zip, "--out", out, "--zip", out.with_suffix(".zip"), "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout), proc.stderr


@pytest.mark.slow
def test_train_prints_progress_and_one_json_object(trained):
    out, result, stderr = trained
    assert {"out", "model", "mode", "labels", "val_accuracy", "estimate", "ece", "train_seconds", "skipped"} <= set(result)
    assert result["model"] == "tf_efficientnet_lite0.in1k" and result["mode"] == "quick"
    assert result["labels"] == sorted(p.name for p in EXAMPLE.iterdir())
    assert result["val_accuracy"] > 0.4 and result["skipped"] == []
    est = result["estimate"]  # cross-validated on all 96 images, the final head trained on all of them
    assert est["method"] == "cross-validation" and est["folds"] == 5 and est["n_images"] == 96
    assert est["trained_on_all_images"] and result["n_train"] == 96
    assert est["interval"][0] < est["accuracy"] == result["val_accuracy"] < est["interval"][1]
    assert 0 <= result["ece"] == est["ece"] <= 1 and result["calibration"]["fitted"]
    # the calibration chosen is recorded with the model, and how it was fitted
    saved = json.loads((out / "transfer_gui.json").read_text())["calibration"]
    assert saved == result["calibration"] and saved["method"] == "temperature scaling of the final model"
    assert saved["fitted_on"] == "cross-validation" and saved["n_images"] == 96
    assert "Reading images with the pretrained model" in stderr and "Finished" in stderr
    assert "estimated by 5-fold cross-validation on all 96 images" in stderr
    assert (out / "model.safetensors").is_file() and out.with_suffix(".zip").is_file()


def test_evaluate_matches_names_and_reports_metrics(trained, tmp_path, cli):
    out, result, _ = trained
    data = copy_example(tmp_path / "eval", ["computer", "animal"])  # a subset of classes, by name
    (data / "computer" / "notes.txt").write_text("not an image")
    proc = cli("evaluate", out, data)
    assert proc.returncode == 0, proc.stderr
    ev = json.loads(proc.stdout)
    assert {"accuracy", "macro_f1", "ece", "per_class", "labels", "confusion_matrix", "n_images", "skipped"} <= set(ev)
    assert 0 <= ev["ece"] <= 1
    assert ev["n_images"] == 32 and ev["labels"] == result["labels"]
    assert ev["skipped"] == [{"path": "computer/notes.txt", "reason": "not an image file (.txt)"}]
    assert sum(map(sum, ev["confusion_matrix"])) == 32
    assert ev["per_class"]["computer"]["support"] == 16


def test_predict_json_lines_and_csv_agree(trained, tmp_path, cli):
    out, result, _ = trained
    (tmp_path / "junk.png").write_bytes(b"nope")
    proc = cli("predict", out.with_suffix(".zip"), TEST_IMAGES, tmp_path / "junk.png", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(list(TEST_IMAGES.iterdir()))
    assert list(rows[0]) == ["path", "label", "confidence", "novelty", "top1_label", "top1_confidence",
                             "top2_label", "top2_confidence"]
    # held-out drawings of the six classes: each gets its top class, except one at most that is
    # unlike every training drawing (seen: the flower drawing at 1.02, which the model called
    # "animal", 42 %)
    refused = [r for r in rows if r["label"] == "not one of your classes"]
    assert len(refused) <= 1 and all(r["novelty"] > 1 for r in refused)
    assert all(r["label"] in result["labels"] and r["label"] == r["top1_label"] for r in rows if r not in refused)
    assert "skipped" in proc.stderr and "junk.png" in proc.stderr
    csv_path = tmp_path / "p.csv"
    proc2 = cli("predict", out, TEST_IMAGES, "--top-k", "2", "--csv", csv_path)
    assert proc2.returncode == 0 and proc2.stdout == ""
    with open(csv_path) as f:
        csv_rows = list(csv.DictReader(f))
    assert [(r["path"], r["label"]) for r in csv_rows] == [(r["path"], r["label"]) for r in rows]
    assert [float(r["confidence"]) for r in csv_rows] == pytest.approx([r["confidence"] for r in rows])


def test_predict_says_a_photo_is_none_of_the_classes_unless_told_to_always_name_one(trained, cli):
    out, result, _ = trained
    photo = ROOT / "tests" / "data" / "chelsea.jpg"
    row = json.loads(cli("predict", out.with_suffix(".zip"), photo).stdout)
    assert row["label"] == "not one of your classes" and row["novelty"] > 1
    assert row["top1_label"] in result["labels"]  # the closest classes are still listed
    forced = json.loads(cli("predict", out, photo, "--always-a-class").stdout)
    assert forced["label"] == row["top1_label"] and forced["novelty"] == pytest.approx(row["novelty"])


@pytest.mark.slow
def test_check_labels_ranks_a_flipped_picture_near_the_top_with_its_reason(tmp_path, cli):
    data = copy_example(tmp_path / "d")
    (data / "vehicle" / "bicycle_01.png").rename(data / "animal" / "bicycle_01.png")
    proc = cli("check-labels", data)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert list(rows[0]) == ["rank", "path", "given_label", "suggested_label", "kind", "reason"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    bike = next(r for r in rows if r["path"] == "animal/bicycle_01.png")
    assert bike["rank"] <= 5 and bike["given_label"] == "animal" and bike["kind"] == "label"
    assert bike["reason"].startswith("Labelled *animal*; the model that had not seen it says")
    assert "pictures are worth a look" in proc.stderr
    proc = cli("check-labels", data, "--csv", tmp_path / "c.csv")
    with open(tmp_path / "c.csv") as f:
        assert [dict(r, rank=int(r["rank"])) for r in csv.DictReader(f)] == rows


def test_models_lists_the_catalog_with_availability(cli):
    proc = cli("models", offline=True)
    assert proc.returncode == 0
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) >= 8
    builtin = [r["name"] for r in rows if r["availability"] == "built in (works offline)"]
    assert builtin == ["tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"]
    assert all(r["availability"] in ("needs internet (offline now)", "downloaded (works offline)")
               for r in rows if r["name"] not in builtin)


@pytest.mark.parametrize("args, message", [
    (["train", "/no/such/folder", "--out", "/tmp/x"], "does not exist"),
    (["train", EXAMPLE, "--out", "/tmp/x", "--model", "resnet_999"], "Unknown model"),
    (["train", EXAMPLE, "--out", "/tmp/x", "--model", "resnet18.a1_in1k"], "needs the internet"),
    (["train", TEST_IMAGES / "animal_dolphin.png", "--out", "/tmp/x"], "not a zip archive"),
    (["train", EXAMPLE / "animal", "--out", "/tmp/x"], "at least 2 classes"),
    (["predict", "/no/bundle", TEST_IMAGES], "does not exist"),
    (["train", EXAMPLE, "--out", "/tmp/x", "--epochs", "0"], "Epochs must be between"),
    (["train"], "required"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, message, cli):
    proc = cli(*args, offline=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_bad_input_process_exits_2_with_one_line():
    proc = run("train", EXAMPLE, "--out", "/tmp/x", "--model", "resnet18.a1_in1k", env=ENV_OFFLINE)
    assert proc.returncode == 2, proc.stderr
    assert "needs the internet" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_too_few_images_in_a_class(tmp_path, cli):
    data = copy_example(tmp_path / "d", ["animal", "computer"])
    for p in sorted((data / "computer").iterdir())[1:]:
        p.unlink()
    proc = cli("train", data, "--out", tmp_path / "m")
    assert proc.returncode == 2 and "'computer' (1)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_export_writes_checked_files_and_push_refuses_offline(trained, tmp_path, cli):
    out, _, _ = trained
    proc = cli("export", out.with_suffix(".zip"), "--out", tmp_path / "x", "--images", TEST_IMAGES)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] is True and [c["format"] for c in result["checks"]] == ["torchscript", "onnx"]
    assert all(c["n_images"] == 8 and c["max_abs_diff"] <= 1e-3 for c in result["checks"])  # 6 + 2 odd shapes
    assert "TorchScript: parity check passed" in proc.stderr and "ONNX: parity check passed" in proc.stderr
    assert {"model.onnx", "model.torchscript.pt", "labels.json"} <= {p.name for p in (tmp_path / "x").iterdir()}
    proc = cli("push", out, "alice/flowers", "--token", "hf_x", offline=True)
    assert proc.returncode == 2 and "cannot be reached" in proc.stderr and proc.stdout == ""
    proc = cli("push", out, "alice/flowers", "--space", offline=True)  # refused before any upload
    assert proc.returncode == 2 and "must be public: add --public" in proc.stderr and proc.stdout == ""


def test_continue_from_a_bundle_adds_a_class(tmp_path, cli):
    four = copy_example(tmp_path / "four", ["animal", "bug", "computer", "flower"])
    proc = cli("train", four, "--out", tmp_path / "m4")
    assert proc.returncode == 0, proc.stderr
    five = copy_example(tmp_path / "five", ["animal", "bug", "computer", "flower", "fruit"])
    proc = cli("train", five, "--out", tmp_path / "m5", "--continue-from", tmp_path / "m4")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["labels"] == ["animal", "bug", "computer", "flower", "fruit"]
    assert "Loading the saved model from" in proc.stderr
    proc = cli("train", copy_example(tmp_path / "two", ["animal", "bug"]), "--out", tmp_path / "m2",
               "--continue-from", tmp_path / "m4")
    assert proc.returncode == 2 and "no images here: computer, flower" in proc.stderr


@pytest.mark.slow
def test_compare_models_tries_every_built_in_model_and_ranks_them_by_the_estimate_the_page_shows(
        cli, example_dataset, quick_result):
    from transfer_gui.engine.catalog import CATALOG
    from transfer_gui.engine.workflow import finish

    from transfer_gui.engine.model_trials import models_to_try

    proc = cli("compare-models", str(EXAMPLE), offline=True)  # online, the shortlist's others would join
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["models"]
    assert {m.name for m in CATALOG if m.builtin} <= {r["model"] for r in rows}
    assert sorted(r["model"] for r in rows) == sorted(models_to_try(online=False))  # and any downloaded before
    assert [r["accuracy"] for r in rows] == sorted((r["accuracy"] for r in rows), reverse=True)
    assert all(r["low"] <= r["accuracy"] <= r["high"] and r["seconds"] > 0 and r["ms_per_picture"] > 0 for r in rows)
    # the built-in model's row is the estimate Quick gives it (seed 0), as the Results step says it
    lite0 = next(r for r in rows if r["model"] == "tf_efficientnet_lite0.in1k")
    estimate = finish(quick_result, example_dataset, device="cpu").estimate
    assert lite0["accuracy"] == round(estimate.accuracy, 4) and lite0["input_px"] == 224
    assert "trying tf_efficientnet_lite1.in1k" in proc.stderr
    bad = cli("compare-models", str(EXAMPLE), "--models", "../etc/passwd")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
