"""Safe to host for strangers: each way one request or one user could exhaust a public server is
met by a limit (transfer_gui.settings) and a refusal that says what to do. Real event functions, real
weights, real images, real zips; each test fails without its limit."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, copy_example, run_training
from transfer_gui.engine.archive import ArchiveLimits, extract_zip
from transfer_gui.engine.images import restrict_image_formats
from transfer_gui.engine.batch import prediction_rows
from transfer_gui.engine.bundle import load_bundle
from transfer_gui.engine.data import open_dataset, scan_csv
from transfer_gui.engine.images import read_failure
from transfer_gui.engine.errors import ArchiveError, DataError, ModelError, UserInputError
from transfer_gui.engine.figures import confusion_picture
from transfer_gui.app.memory import MemoryGate, ServerBusyError, release_free_memory, resident_bytes
from transfer_gui.app.server import Server, client_address
from transfer_gui.engine.workflow import open_model
from transfer_gui.settings import Limits, settings
from transfer_gui.app.registry import ServerFullError, SessionRegistry, TooManySessionsError
from transfer_gui.app.session import Session, TooManyEventsError
from transfer_gui.app.slots import AlreadyInLineError, LineFullError, TrainingSlots
from transfer_gui.engine.builtin import builtin_weights_file

LITE0 = "tf_efficientnet_lite0.in1k"


@pytest.fixture
def server():
    """``server(**limits)``: a Server with these limits (the rest default) and a fresh session."""
    made = []

    def make(**changes):
        h = Server(limits=dataclasses.replace(Limits(), **changes))
        session = h.new_session()
        made.append((h, session))
        return h, session

    yield make
    for h, session in made:
        session.close()
        h.close()


def _train(h, session, custom="", weights=None, mode="quick", epochs=0):
    return list(h.train.train(session, LITE0, custom, weights, mode, epochs, 0, 0.25, 0))


# --- one place, one prefix ------------------------------------------------------------------------

def test_limits_are_read_from_one_prefix_and_the_hosting_docs_list_each_with_its_default():
    assert Limits.from_env({}) == Limits()
    space = Limits.from_env({"SPACE_ID": "someone/app"})
    assert space.public and space.train_minutes == 20 and space.model_params_m == 100 and space.memory_mb == 6144
    assert not Limits.from_env({"SPACE_ID": "someone/app", "TLS_PUBLIC": "0"}).public
    own = Limits.from_env({"TLS_MAX_CLASSES": "50", "TLS_TRAIN_MINUTES": "soon", "TLS_MAX_FILES": "-3",
                           "TLS_PUBLIC": "yes"})
    assert own.max_classes == 50 and own.train_minutes == 20 and own.max_files == 20_000 and own.public
    hosting = (ROOT / "docs" / "hosting.md").read_text()
    section = hosting.split("## Hosting publicly", 1)[1].split("\n## ", 1)[0]
    for variable, default, what in settings():
        row = next((line for line in section.splitlines() if f"`{variable}`" in line), None)
        assert row is not None, f"docs/hosting.md's Hosting publicly table lacks {variable}"
        assert f"| {default} |" in row and what in row, row


# --- model creation -------------------------------------------------------------------------------

def test_a_public_server_builds_only_listed_or_hub_models_under_its_size_cap(server):
    h, session = server(public=True, model_params_m=100)
    h.data.load_example(session)
    with pytest.raises(UserInputError, match=r"vit_giant_patch14_dinov2\.lvd142m has 1,1\d\d million parameters; this "
                                       r"server allows models of up to 100 million"):
        _train(h, session, custom="vit_giant_patch14_dinov2.lvd142m")
    with pytest.raises(UserInputError, match=r"local-dir:\) cannot be chosen here"):
        _train(h, session, custom=f"local-dir:{ROOT / 'assets'}")
    assert session.predictor is None and "100 million parameters" in h.limits_note()
    # a private server too never takes a server folder from the page
    h2, s2 = server()
    h2.data.load_example(s2)
    with pytest.raises(UserInputError, match=r"local-dir:\) cannot be chosen here"):
        _train(h2, s2, custom="local-dir:/etc")
    # a listed model under the cap trains
    assert "Done." in _train(h, session)[-1][0]


def _edited_bundle(quick_bundle, tmp_path, name, config=None, metadata=None) -> Path:
    folder = tmp_path / name
    shutil.copytree(quick_bundle, folder)
    for file, change in (("config.json", config), ("transfer_gui.json", metadata)):
        if change:
            data = json.loads((folder / file).read_text())
            change(data)
            (folder / file).write_text(json.dumps(data))
    return folder


def test_a_bundles_config_cannot_choose_what_gets_built(quick_bundle, tmp_path):
    deeper = _edited_bundle(quick_bundle, tmp_path, "deep",
                            config=lambda c: c.update(model_args={"depth_multiplier": 40}))
    with pytest.raises(ModelError, match="model_args this app does not write \\(depth_multiplier\\)"):
        load_bundle(deeper)
    giant = _edited_bundle(quick_bundle, tmp_path, "giant",
                           config=lambda c: c.update(architecture="vit_giant_patch14_dinov2"))
    with pytest.raises(ModelError, match=r"1,1\d\d million parameters; this server allows up to 100 million"):
        load_bundle(giant, max_params=100_000_000)
    unknown = _edited_bundle(quick_bundle, tmp_path, "unknown", config=lambda c: c.update(architecture="no_such_net"))
    with pytest.raises(ModelError, match="'no_such_net', which timm does not have"):
        load_bundle(unknown)
    many = _edited_bundle(quick_bundle, tmp_path, "many", config=lambda c: c.update(
        num_classes=5000, label_names=[f"c{i}" for i in range(5000)]))
    with pytest.raises(ModelError, match="5000 classes; the limit here is 300"):
        load_bundle(many)
    assert load_bundle(quick_bundle, max_params=100_000_000).labels  # the real one still loads


@pytest.mark.parametrize("temperature", ["x", 0, -1.5, None, True, 1e9])
def test_a_bundles_temperature_must_be_a_sane_number(quick_bundle, tmp_path, temperature):
    folder = _edited_bundle(quick_bundle, tmp_path, "t",
                            metadata=lambda m: m.update(calibration={"temperature": temperature}))
    with pytest.raises(ModelError, match="calibration temperature .*must be a number from 0.01 to 100"):
        load_bundle(folder)


def test_a_bundle_with_a_sane_temperature_applies_it(quick_bundle, tmp_path):
    folder = _edited_bundle(quick_bundle, tmp_path, "t", metadata=lambda m: m.update(calibration={"temperature": 2.5}))
    predictor = open_model(folder).predictor
    assert predictor.temperature == 2.5
    probs = predictor.probabilities([next((ROOT / "assets" / "test_images").iterdir())])
    assert np.isfinite(probs).all() and probs.min() >= 0 and abs(probs.sum() - 1) < 1e-5
    (folder / "transfer_gui.json").write_text("{not json")
    with pytest.raises(ModelError, match="transfer_gui.json in t is not valid JSON"):
        load_bundle(folder)


# --- data -----------------------------------------------------------------------------------------

def test_a_labels_csv_is_read_row_by_row_with_a_cap_and_each_file_once(tmp_path):
    folder = copy_example(tmp_path / "set", labels=["animal", "bug"])
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    rows = [f"{f},{f.split('/')[0]}" for f in files]
    (folder / "labels.csv").write_text("filename,label\n" + "\n".join(rows + rows[:3]) + "\n")
    dataset = scan_csv(folder / "labels.csv")
    assert dataset.report.n_images == len(files)
    again = [s for s in dataset.report.skipped if "listed again" in s.reason]
    assert len(again) == 3 and "each file is used once" in again[0].reason
    with pytest.raises(DataError, match=f"lists more than {len(files) - 1} images; the limit here is"):
        scan_csv(folder / "labels.csv", limits=ArchiveLimits(max_files=len(files) - 1))
    # a CSV far larger than any image set: refused at the cap, not read into memory first
    with open(folder / "huge.csv", "w") as f:
        f.write("filename,label\n")
        f.writelines(f"{files[0]},animal\n" for _ in range(1_000_000))
    with pytest.raises(DataError, match="huge.csv lists more than 20000 images"):
        scan_csv(folder / "huge.csv")
    (folder / "wide.csv").write_text("filename,label\n" + "x" * 200_000 + ",animal\n")
    with pytest.raises(DataError, match="wide.csv cannot be read as a CSV file"):
        scan_csv(folder / "wide.csv")


def test_too_many_classes_are_refused_and_the_results_picture_stays_small_at_the_cap(tmp_path):
    folder = copy_example(tmp_path / "set")
    with pytest.raises(DataError, match="has 6 classes; the limit here is 3. Merge or leave out classes"):
        open_dataset(folder, limits=ArchiveLimits(max_classes=3))
    n = Limits().max_classes
    labels = [f"class {i}" for i in range(n)]
    counts = np.random.default_rng(0).integers(0, 3, (n, n)) + 5 * np.eye(n, dtype=int)
    picture = confusion_picture(labels, counts)
    assert max(picture.image.size) <= 2000  # 300 classes at the old 26-pixel cells: 7,800 pixels a side
    for true, predicted in (("class 0", "class 0"), ("class 17", "class 250"), ("class 299", "class 1")):
        assert picture.cell_at(*picture.centre(true, predicted)) == (true, predicted)


def test_uploaded_files_that_are_not_used_are_deleted_at_once(server, tmp_path):
    h, session = server()
    folder = copy_example(tmp_path / "set", labels=["animal", "bug"])
    (folder / "animal" / "notes.txt").write_text("not a picture " * 1000)
    (folder / "bug" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 5000)
    zip_path = tmp_path / "set.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in folder.rglob("*"):
            zf.write(p, p.relative_to(folder).as_posix())
    h.data.load_zip(session, str(zip_path))
    skipped = {s.path for s in session.dataset.report.skipped}
    assert {"animal/notes.txt", "bug/broken.jpg"} <= skipped
    on_disk = {p.resolve() for p in session.workdir.rglob("*") if p.is_file()}
    assert on_disk == {item.path.resolve() for item in session.dataset.items}


def test_a_zip_directory_over_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(40):
            zf.writestr(f"c/{i}.png", b"")
    long_names = tmp_path / "long.zip"
    with zipfile.ZipFile(long_names, "w") as zf:
        for i in range(3):
            zf.writestr(f"c/{'x' * 3000}{i}.png", b"")

    def parsed(*args, **kwargs):
        raise AssertionError("the zip's directory was parsed before its size was checked")

    monkeypatch.setattr(zipfile, "ZipFile", parsed)
    with pytest.raises(ArchiveError, match="many.zip holds 40 entries; the limit is 10. Upload fewer images"):
        extract_zip(many, tmp_path / "a", ArchiveLimits(max_files=10))
    with pytest.raises(ArchiveError, match="long.zip has a directory of .*it was not read"):
        extract_zip(long_names, tmp_path / "b", ArchiveLimits(max_files=5))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_batch_prediction_holds_at_most_its_decoded_pixel_budget(quick_bundle, tmp_path):
    predictor = open_model(quick_bundle).predictor
    files = []
    for i in range(6):  # 1 megapixel each, a few kB on disk
        Image.new("RGB", (1000, 1000), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        files.append((f"{i}.png", tmp_path / f"{i}.png"))

    def decoded_before_the_first_answer(**budget) -> int:
        pulled = []

        def images():
            for item in files:
                pulled.append(item)
                yield item

        rows = prediction_rows(predictor, images(), top_k=1, **budget)
        next(rows)
        seen = len(pulled)
        assert len([*rows]) == len(files) - 1  # every picture is still answered
        return seen

    assert decoded_before_the_first_answer() == 6  # one batch of 32 would hold all six
    assert decoded_before_the_first_answer(megapixels=2.5) == 3  # two in the batch, the third waits


# --- disk, sessions, queue --------------------------------------------------------------------------

def test_the_memory_gate_counts_the_process_and_every_reservation_waits_then_refuses():
    release_free_memory()
    here = resident_bytes()
    assert here > 100 * 2**20  # this process, with torch loaded, read from the system
    gate = MemoryGate(here + 300 * 2**20, wait_s=0.5)
    with gate.reserve(200 * 2**20, "the first"):
        assert gate.reserved == 200 * 2**20
        with pytest.raises(ServerBusyError, match=r"short of memory right now .* GB in use by everyone's work.*"
                                                  r"try again in a minute"):
            with gate.reserve(200 * 2**20, "the second"):
                pass
    assert gate.reserved == 0  # given back, also after the refusal
    done = []

    def second():
        with gate.reserve(200 * 2**20, "the second"):
            done.append(gate.reserved)

    with gate.reserve(200 * 2**20, "the first"):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.2)
        assert not done  # waiting for room while the first holds it
    waiter.join(5)
    assert done == [200 * 2**20]  # the first ended: the second ran
    with pytest.raises(ServerBusyError):  # more than the whole budget is refused at once
        with gate.reserve(here + 400 * 2**20, "too much"):
            pass
    with MemoryGate(0).reserve(10**15, "anything"):  # no budget: granted
        pass


def test_memory_the_allocator_keeps_freed_is_given_back_before_a_reservation_is_refused():
    from transfer_gui.engine.speed import tune_process

    tune_process()  # the allocator keeps up to 1 GB freed, as in the app
    release_free_memory()
    before = resident_bytes()
    blocks = [b"\x01" * 2**20 for _ in range(400)]  # written, so resident
    del blocks
    assert resident_bytes() > before + 300 * 2**20  # freed, but still resident
    gate = MemoryGate(before + 300 * 2**20, wait_s=0)
    with gate.reserve(100 * 2**20, "a picture"):  # fits once the freed memory is given back
        assert resident_bytes() < before + 200 * 2**20


@pytest.mark.slow
def test_heavy_work_reserves_its_memory_and_a_big_picture_waits_for_room_then_is_refused(server, quick_bundle,
                                                                                         tmp_path):
    zipped = tmp_path / "model.zip"
    shutil.make_archive(str(zipped.with_suffix("")), "zip", quick_bundle)
    h, session = server()
    h.model.load_model(session, str(zipped))
    # a budget with 300 MB to spare beyond what this process holds now (freed memory given back)
    release_free_memory()
    h.memory.budget, h.memory.wait_s = resident_bytes() + 300 * 2**20, 1  # the one gate the steps share
    small = ROOT / "assets" / "test_images" / "animal_dolphin.png"
    assert h.test.predict(session, str(small)).confidences  # a photo's few MB fit
    big = tmp_path / "big.png"
    Image.new("RGB", (9000, 9000), (10, 200, 10)).save(big)  # 0.2 MB on disk, 243 MB decoded
    with pytest.raises(UserInputError, match="short of memory right now"):
        h.test.predict(session, str(big))
    batch = h.event(h.test.batch_predict, heavy=True)  # a heavy event reserves a batch's worst case
    assert h.heavy_bytes >= 2 * 100e6 * 3  # the batch's 100 megapixels, decoded and converted
    with pytest.raises(gr.Error, match="short of memory right now"):
        batch(None, session, [str(small)], 0.5)
    assert h.memory.reserved == 0  # nothing held after the refusals, by the gate or the session:
    session.begin_event(1)  # its one place is free
    session.end_event()
    h.memory.budget = resident_bytes() + 2 * h.heavy_bytes
    assert batch(None, session, [str(small)], 0.5).table.shape[0] == 1


def test_heavy_events_share_one_small_group_across_all_users():
    from transfer_gui.app.layout import build_demo

    h = Server(limits=dataclasses.replace(Limits(), heavy_jobs=2))
    demo = build_demo(server=h)
    groups = {fn.fn.__qualname__: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.fn}
    for name in ("DataStep.load_zip", "DataStep.add_images", "DataStep.use_classes", "ModelStep.load_model",
                 "ModelStep.evaluate_model", "ResultsStep.view", "ResultsStep.mistakes_view",
                 "TestStep.batch_predict", "SortStep.load_pile", "SortStep.download", "CheckStep.corrected_zip"):
        assert groups[name] == ("heavy", 2), name
    assert groups["TestStep.predict"][0] != "heavy" and groups["TrainStep.train"][0] == "training"
    h.close()


def test_the_servers_disk_budget_covers_all_sessions(server, example_zip):
    h, session = server(server_disk_mb=0.5)
    with pytest.raises(UserInputError, match="the server's disk budget for all its users is nearly used up"):
        h.data.load_zip(session, str(example_zip))
    assert session.dataset is None and not any(session.workdir.iterdir())


def test_at_the_session_cap_an_empty_session_makes_room_and_nobodys_work_is_dropped(tmp_path):
    """At the server's cap the oldest session holding nothing gives way; sessions with the
    user's files are never dropped: a new one is refused instead."""
    registry = SessionRegistry(lambda: Session(root=tmp_path), max_sessions=2)
    first, idle = registry.get("a"), registry.get("b")
    (first.workdir / "picture.png").write_bytes(b"x")  # "a" holds something of its user's
    third = registry.get("c")  # "b" held nothing: it made room
    assert idle.closed and not first.closed and sorted(registry.keys()) == ["a", "c"]
    (third.workdir / "picture.png").write_bytes(b"x")
    with pytest.raises(ServerFullError, match=r"as many users as it takes \(2\). Try again in a few minutes"):
        registry.get("d")
    assert registry.get("a") is first and registry.get("c") is third and not first.closed
    registry.close("a")
    assert registry.get("d") is not None
    for key in registry.keys():
        registry.close(key)


def test_one_client_address_holds_a_limited_number_of_sessions(tmp_path):
    registry = SessionRegistry(lambda: Session(root=tmp_path), per_client=2)
    mine = [registry.get(k, "10.0.0.7") for k in ("a", "b")]
    for s in mine:
        (s.workdir / "picture.png").write_bytes(b"x")
    with pytest.raises(TooManySessionsError, match=r"Your address already has 2 sessions open .* Close some tabs"):
        registry.get("c", "10.0.0.7")
    assert registry.get("c", "10.0.0.8") is not None  # another address is not affected
    assert registry.get("a", "10.0.0.7") is mine[0]  # its own sessions go on
    for key in registry.keys():
        registry.close(key)


def test_the_client_address_is_the_entry_the_outermost_proxy_added():
    class Req:  # the two attributes client_address reads from a request
        def __init__(self, peer, forwarded):
            self.client = type("Client", (), {"host": peer})()
            self.headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert client_address(Req("10.1.2.3", "6.6.6.6, 203.0.113.9"), proxy_hops=1) == "203.0.113.9"
    assert client_address(Req("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.9.9.9"), proxy_hops=2) == "203.0.113.9"
    assert client_address(Req("10.1.2.3", "6.6.6.6"), proxy_hops=0) == "10.1.2.3"  # the header is not trusted
    assert client_address(Req("10.1.2.3", ""), proxy_hops=1) == "10.1.2.3"
    assert client_address(None) == ""


def test_one_user_holds_one_place_in_the_training_line_and_the_line_has_a_length():
    line = TrainingSlots(slots=1, max_waiting=1)
    line.join("a")
    assert line.take("a", timeout=0.1)
    line.join("b")
    assert not line.take("b", timeout=0.1) and line.ahead("b") == 0
    with pytest.raises(LineFullError, match="1 training\\(s\\) running and 1 waiting, the most it takes"):
        line.join("c")
    with pytest.raises(AlreadyInLineError, match="still running or waiting"):
        line.join("a")
    line.leave("a")
    assert line.take("b", timeout=1.0) and line.busy() == (1, 0)


def test_one_user_cannot_flood_the_server_with_requests(server):
    h, session = server(user_events=2)
    table = h.event(h.data.classes_table)
    session.begin_event(2)
    session.begin_event(2)
    with pytest.raises(gr.Error, match="already has 2 requests running; wait for them"):
        table(None, session)
    with pytest.raises(TooManyEventsError):
        session.begin_event(2)
    session.end_event()
    assert table(None, session) is not None  # one finished: the next is served


def test_a_running_training_blocks_a_second_one_and_any_data_change_but_not_predictions(server, example_zip,
                                                                                      quick_bundle, tmp_path):
    h, session = server()
    h.data.load_example(session)
    bundle_zip = shutil.make_archive(str(tmp_path / "model"), "zip", quick_bundle)
    dataset = session.dataset
    run = h.train.train(session, LITE0, "", None, "finetune", 30, 0, 0.25, 0)
    next(run)  # it now holds the slot and this session's training lock
    try:
        with pytest.raises(UserInputError, match="cannot start while your training, export or learning curve"):
            next(h.train.train(session, LITE0, "", None, "quick", 0, 0, 0.25, 0))
        for change in (lambda: h.data.load_zip(session, str(example_zip)), lambda: h.data.load_example(session),
                       lambda: h.data.clear_classes(session), lambda: h.data.use_classes(session),
                       lambda: h.model.load_model(session, bundle_zip)):
            with pytest.raises(UserInputError, match="has to wait: a training, export or learning curve is running"):
                change()
        # another user loads a model and predicts meanwhile
        other = h.new_session()
        h.model.load_model(other, bundle_zip)
        verdict, *_ = h.test.predict(other, str(next((ROOT / "assets" / "test_images").iterdir())), 0.0)
        assert verdict.startswith("### ")
        other.close()
    finally:
        h.train.stop(session)
        for _ in run:
            pass
    assert session.dataset is dataset and all(item.path.is_file() for item in dataset.items)


@pytest.mark.slow
def test_training_stops_at_the_servers_time_budget_and_keeps_its_best(server):
    h, session = server(train_minutes=0.25)
    assert "a training runs at most 0.25 minutes" in h.limits_note()
    h.data.load_example(session)
    updates = run_training(h, session, mode="finetune", epochs=30)
    final = updates[-1][0]
    assert "Stopped at this server's limit of 0.25 minutes per training; the best model so far is kept." in final
    assert session.result.stopped and session.predictor is not None and session.bundle_zip.is_file()


# --- files ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_of_a_minimal_uploaded_bundle(server, quick_bundle, tmp_path):
    h, session = server()
    minimal = tmp_path / "minimal.zip"
    with zipfile.ZipFile(minimal, "w") as zf:
        for name in ("config.json", "model.safetensors"):
            zf.write(quick_bundle / name, name)
    h.model.load_model(session, str(minimal))
    report, download = h.download.export(session)
    assert report.count("**Passed**") == 2 and session.export_zip.is_file()


def test_pillow_opens_only_the_formats_we_list(tmp_path):
    fake = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "red").save(fake, "PPM")  # Pillow reads PPM whatever the name
    with Image.open(fake, formats=["PPM"]) as im:
        assert im.format == "PPM"
    assert read_failure(fake) == "damaged or not really an image (cannot be decoded)"
    restrict_image_formats()  # what the server does at start, for Gradio's own decoding
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(fake)


@pytest.mark.slow
def test_no_server_path_or_token_in_a_bundle_or_a_log_line(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transfer_gui")
    h, session = server()
    private = tmp_path / "private folder" / "my-weights.safetensors"
    private.parent.mkdir()
    shutil.copyfile(builtin_weights_file(LITE0), private)
    h.data.load_example(session)
    _train(h, session, custom="tf_efficientnet_lite0", weights=str(private))
    first = session.bundle_folder
    assert json.loads((first / "transfer_gui.json").read_text())["training"]["weights_file"] == "my-weights.safetensors"
    h.model.load_model(session, str(session.bundle_zip))
    list(h.train.train(session, LITE0, "", None, "quick", 0, 0, 0.25, 0, True))
    second = session.bundle_folder
    meta = json.loads((second / "transfer_gui.json").read_text())
    assert meta["training"]["init_bundle"] and "/" not in meta["training"]["init_bundle"]
    token = "hf_NotARealTokenButSecret123"
    with pytest.raises(UserInputError):
        h.download.push(session, "someone/model", token, True)  # offline here; online it would push
    secrets = [str(tmp_path), str(session.workdir), str(h.root), token]
    for folder in (first, second):
        for file in folder.rglob("*"):
            text = file.read_bytes().decode("utf-8", "ignore")
            assert not [s for s in secrets if s in text], f"{file.name} names a server path or the token"
    lines = [r.getMessage() for r in caplog.records]
    assert lines and not [line for line in lines if any(s in line for s in secrets)]


def test_cli_push_warns_about_a_token_on_the_command_line(cli, quick_bundle):
    proc = cli("push", quick_bundle, "someone/model", "--token", "hf_NotARealToken", offline=True)
    assert "warning: a token given with --token shows in the process list" in proc.stderr
    assert "hf_NotARealToken" not in proc.stderr and "hf_NotARealToken" not in proc.stdout


@pytest.mark.slow
def test_cli_train_refuses_an_out_folder_holding_other_files(cli, example_zip, tmp_path):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    proc = cli("train", example_zip, "--out", out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is not empty and holds no bundle of this app" in proc.stderr and "--force" in proc.stderr
    assert (out / "thesis.txt").read_text() == "years of work" and len(list(out.iterdir())) == 1
    proc = cli("train", example_zip, "--out", out, "--force")
    assert proc.returncode == 0 and (out / "model.safetensors").is_file() and (out / "thesis.txt").is_file()
    proc = cli("train", example_zip, "--out", out)  # a bundle of this app: training again replaces it
    assert proc.returncode == 0
