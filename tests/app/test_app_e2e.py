"""The real app on 127.0.0.1, driven with gradio_client: one Client is one browser session."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image
from gradio_client import Client, handle_file

from conftest import EXAMPLE, ROOT, TEST_IMAGES, copy_example, zip_folder

MODEL = "tf_efficientnet_lite0.in1k"


@pytest.fixture(scope="module")
def app_url():
    from transfer_gui.app.hosting import launch_kwargs
    from transfer_gui.app.layout import build_demo

    demo = build_demo(training_slots=1, queue_size=10)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                            **launch_kwargs())
    yield url
    demo.close()


def _train(client: Client, mode="quick", epochs=0):
    """Submit training; return (updates with their arrival times, final outputs)."""
    t0 = time.perf_counter()
    job = client.submit(MODEL, "", None, mode, epochs, 0, 0.25, 0, api_name="/train")
    updates = [(time.perf_counter() - t0, out) for out in job]
    return updates, job.result()


@pytest.mark.slow
def test_upload_train_predict_download_and_cli_agrees(app_url, example_zip, tmp_path):
    client = Client(app_url, verbose=False)
    summary, counts, _, skipped, checks, _ = client.predict(handle_file(str(example_zip)), api_name="/load_zip")
    assert "96 images in 6 classes" in summary and skipped["data"] == []
    assert "**Conflicting labels:** No image carries two different labels" in checks
    updates, final = _train(client)
    assert len(updates) > 1  # progress arrived while training, not just at the end
    assert any("Reading images" in u[1][0] for u in updates[:-1])
    status, loss, acc, download = final
    bundle_zip = download["value"]  # a component update: {"value": downloaded file, "interactive": True}
    assert download["interactive"] and bundle_zip.endswith("trained-model.zip")
    assert "**Done.**" in status
    # plot updates: {"value": {"data": rows, ...}, "x_title": ...}; each run seeds its series with a NaN point
    # Quick: one point per setting tried for the new last layer, each checked by cross-validation,
    # on an axis of whole numbers: the settings are categories "1", "2", ...
    assert loss["x_title"].startswith("setting tried") and len(loss["value"]["data"]) > 2
    assert loss["value"]["datatypes"]["epoch"] == "nominal"
    x = loss["value"]["columns"].index("epoch")
    assert {row[x] for row in loss["value"]["data"]} == {str(i) for i in range(1, 10)}
    assert len(acc["value"]["data"]) > 1
    # the Results step (the browser runs it after training succeeds)
    (results, per_class, confusion, cell_true, cell_pred, note, cell, mistakes, _, reliability, feature_map,
     map_note, check_note, check_gallery, *_) = client.predict(api_name="/results")
    # what the model sees: a map of all 96 images (the pretrained half; no comparison was run)
    assert feature_map["visible"] is True and "t-SNE" in map_note
    with Image.open(feature_map["value"]) as picture:
        assert picture.width == 432
    assert "5-fold cross-validation on all 96 images" in results and "Confidences were" in results
    assert "picture(s) to check" in check_note and len(check_gallery) >= 1  # each with its reason
    assert all(". " in item["caption"] for item in check_gallery)
    assert {row[2] for row in reliability["value"]["data"]} >= {"perfectly calibrated"}  # a component update
    # what the "not sure" threshold means, measured on the same out-of-fold answers
    assert client.predict(0.6, api_name="/not_sure_meaning").startswith("On your images")
    assert confusion.endswith(".png") or confusion.endswith(".webp")
    assert len(per_class["data"]) == 6
    verdict, pred, heat, heat_note, file_under = client.predict(
        handle_file(str(TEST_IMAGES / "vehicle_hummer_01.png")), 0.0, api_name="/predict")
    # "Wrong? File it under" offers the model's classes
    assert [c[0] for c in file_under["choices"]] == sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())
    assert pred["label"] in verdict and heat and "where the model found" in heat_note
    labels = [c["label"] for c in pred["confidences"]]
    assert set(labels) < {p.name for p in EXAMPLE.iterdir()} and len(labels) == 5  # the top 5 shown
    # the downloaded bundle, loaded by the command line, gives the app's top-1
    proc = subprocess.run([sys.executable, "-m", "transfer_gui", "predict", bundle_zip,
                           str(TEST_IMAGES / "vehicle_hummer_01.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["label"] == pred["label"]
    assert row["confidence"] == pytest.approx(pred["confidences"][0]["confidence"], abs=1e-4)


@pytest.mark.slow
def test_two_sessions_train_different_data_and_keep_their_own_labels(app_url, tmp_path):
    a_zip = zip_folder(copy_example(tmp_path / "a", ["animal", "computer", "bug"]), tmp_path / "a.zip")
    b_zip = zip_folder(copy_example(tmp_path / "b", ["flower", "fruit", "vehicle"]), tmp_path / "b.zip")
    clients = {"a": Client(app_url, verbose=False), "b": Client(app_url, verbose=False)}
    clients["a"].predict(handle_file(str(a_zip)), api_name="/load_zip")
    clients["b"].predict(handle_file(str(b_zip)), api_name="/load_zip")
    finals = {}

    def run(name):
        finals[name] = _train(clients[name])[1]

    threads = [threading.Thread(target=run, args=(n,)) for n in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert "**Done.**" in finals["a"][0] and "**Done.**" in finals["b"][0]
    image = handle_file(str(TEST_IMAGES / "animal_dolphin.png"))
    labels_a = {c["label"] for c in clients["a"].predict(image, 0.5, api_name="/predict")[1]["confidences"]}
    labels_b = {c["label"] for c in clients["b"].predict(image, 0.5, api_name="/predict")[1]["confidences"]}
    assert labels_a == {"animal", "computer", "bug"} and labels_b == {"flower", "fruit", "vehicle"}


def test_engine_errors_reach_the_client_as_messages(app_url, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from gradio_client.exceptions import AppError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on this machine

    client = Client(app_url, verbose=False)
    bad = tmp_path / "photos.zip"
    bad.write_text("this is not a zip")
    with pytest.raises(AppError, match="not a zip archive"):
        client.predict(handle_file(str(bad)), api_name="/load_zip")
    with pytest.raises(AppError, match="Load some images first"):
        client.predict(MODEL, "", None, "quick", 0, 0, 0.25, 0, api_name="/train")
    client.predict(api_name="/use_example")
    with pytest.raises(AppError, match="needs the internet.*Pick the built-in model"):
        client.predict(MODEL, "resnet18.a1_in1k", None, "quick", 0, 0, 0.25, 0, api_name="/train")


@pytest.mark.slow
def test_the_readmes_python_example_runs_against_a_real_server(app_url, example_zip, capsys):
    """The README's gradio_client block, as written, with this server and real files put in."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python, against a running app", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for placeholder, real in (("http://127.0.0.1:7860/", app_url), ("my_pictures.zip", str(example_zip)),
                              ("photo.jpg", str(TEST_IMAGES / "vehicle_hummer_01.png"))):
        assert placeholder in code
        code = code.replace(placeholder, real)
    exec(compile(code, "README.md", "exec"), {})
    status, answer = capsys.readouterr().out.splitlines()[-2:]
    assert status.startswith("**Done.**"), status
    label, confidence = answer.rsplit(" ", 1)
    assert label in {p.name for p in EXAMPLE.iterdir() if p.is_dir()} and 0 < float(confidence) <= 1


def test_the_api_lists_named_parameters_and_only_the_public_steps(app_url):
    api = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)
    endpoints = api["named_endpoints"]
    assert {"/use_example", "/demo", "/train", "/predict", "/batch_predict"} <= set(endpoints)
    assert not {"/sort_accept", "/file_under", "/cell", "/mistakes", "/model_card"} & set(endpoints)
    assert len(endpoints) == 16  # /compare_models: step 2's "try every built-in model"
    names = {name: [p["parameter_name"] for p in ep["parameters"]] for name, ep in endpoints.items()}
    assert names["/predict"] == ["image", "threshold", "none_of_these"]
    assert names["/train"][:4] == ["model_choice", "custom_model", "weights_file", "mode"]
    assert not any(n.startswith("param_") for params in names.values() for n in params)
