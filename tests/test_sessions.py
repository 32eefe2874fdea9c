"""Sessions on a real server: one cannot reach another's files or models through the HTTP API,
folders go when a session ends or expires, each session's disk use is capped, and the load
script's users all finish with only their own labels."""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file

from conftest import EXAMPLE, ROOT, TEST_IMAGES, copy_example, zip_folder
from transfer_gui.app.server import Server
from transfer_gui.app.hosting import launch_kwargs
from transfer_gui.app.layout import build_demo

MODEL = "tf_efficientnet_lite0.in1k"
TRAIN_ARGS = [MODEL, "", None, "quick", 0, 0, 0.25, 0, False]


@pytest.fixture(scope="module")
def server():
    h = Server(training_slots=1)
    demo = build_demo(server=h, queue_size=10)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield url, h
    demo.close()
    h.close()


def _call(url: str, api: str, data: list, session_hash: str) -> tuple[str, object]:
    """A raw HTTP API call as any client could make it: (event kind, data); ("refused", detail) when
    the server turns the call away before it joins the queue (inputs are checked there first)."""
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data, "session_hash": session_hash}, timeout=60)
    if r.status_code == 400:
        return "refused", r.json().get("detail")
    r.raise_for_status()
    text = httpx.get(f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=600).text
    lines = text.strip().splitlines()
    kind = lines[-2].removeprefix("event: ")
    return kind, json.loads(lines[-1].removeprefix("data: "))


def _file(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def _session_folders(h) -> set[Path]:
    return set(h.root.glob("tls-session-*"))


def test_a_session_cannot_read_or_load_another_sessions_files(server, tmp_path):
    url, h = server
    a_zip = zip_folder(copy_example(tmp_path / "a", ["animal", "computer", "bug"]), tmp_path / "a.zip")
    before = _session_folders(h)
    a = Client(url, verbose=False)
    a.predict(handle_file(str(a_zip)), api_name="/load_zip")
    a_status = a.predict(*TRAIN_ARGS, api_name="/train")[0]
    assert "**Done.**" in a_status
    (a_folder,) = _session_folders(h) - before
    a_image = next(a_folder.glob("upload-*/*/*.png"))
    a_bundle = next(a_folder.glob("bundle-*/trained-model.zip"))

    b = "b" * 11  # another browser session, speaking raw HTTP
    assert _call(url, "use_example", [], b)[0] == "complete"
    kind, out = _call(url, "train", TRAIN_ARGS, b)
    assert kind == "complete" and "**Done.**" in out[0]
    # B names A's files as its inputs: Gradio refuses any path outside its upload folder
    for api, data in [("predict", [_file(a_image), 0.0]), ("load_model", [_file(a_bundle)]),
                      ("load_zip", [_file(a_bundle)]), ("batch_predict", [[_file(a_image)], 0.5])]:
        kind, out = _call(url, api, data, b)
        assert kind in ("error", "refused"), (api, out)
    # ...and will not serve them either
    for path in (a_image, a_bundle, a_folder):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}gradio_api/file={path}")
        assert err.value.code == 403
    # B's own model still answers with B's labels only, A's with A's
    own = handle_file(str(TEST_IMAGES / "animal_dolphin.png"))
    kind, out = _call(url, "predict", [_file_uploaded(url, TEST_IMAGES / "animal_dolphin.png"), 0.0], b)
    assert kind == "complete"
    b_labels = {c["label"] for c in out[1]["confidences"]}
    assert b_labels <= {p.name for p in EXAMPLE.iterdir()} and len(b_labels) == 5
    a_labels = {c["label"] for c in a.predict(own, 0.0, api_name="/predict")[1]["confidences"]}
    assert a_labels == {"animal", "computer", "bug"}


def _file_uploaded(url: str, path: Path) -> dict:
    """Upload a file the way the browser does and return its FileData."""
    with open(path, "rb") as f:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=60)
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_a_tabs_session_lives_until_the_tab_closes_whatever_else_forgets_it():
    """The registry holds each tab's Session: events of one tab share it, a garbage collection
    does not end it (a weakly held one was collected and the unload then found nothing), and the
    unload ends it and deletes its files."""
    h = Server(training_slots=1)
    tab = gr.Request(session_hash="tab-a")
    session = h.event(h.on_load)(tab, None)
    folder, key = session.workdir, session.id
    h.event(h.data.load_example)(tab, None)
    del session
    gc.collect()
    assert folder.exists() and h.sessions.keys() == ["tab-a"]
    again = h.sessions.get("tab-a")
    assert again.id == key and again.dataset is not None  # the example went into the same session
    assert h.event(h.on_load)(gr.Request(session_hash="tab-b"), None) is not again
    h.on_unload(tab)
    assert not folder.exists() and again.closed and h.sessions.keys() == ["tab-b"]
    h.close()


def test_sessions_idle_longer_than_the_limit_end_unless_training(monkeypatch):
    """API clients never close a tab: their sessions end after TLS_SESSION_IDLE_MIN without an
    event. A session whose training is running is not idle."""
    monkeypatch.setenv("TLS_SESSION_IDLE_MIN", "0.02")  # 1.2 s
    h = Server(training_slots=1)
    assert h.sessions.idle_s == pytest.approx(1.2)
    idle, busy, active = (h.sessions.get(k) for k in ("idle", "busy", "active"))
    busy.training.acquire()
    time.sleep(1.5)
    h.sessions.get("active")  # an event: activity, and a sweep on the way
    assert idle.closed and not idle.workdir.exists()
    assert not busy.closed and not active.closed and sorted(h.sessions.keys()) == ["active", "busy"]
    busy.training.release()
    time.sleep(1.5)
    assert h.sessions.expire_idle() == 2 and h.sessions.keys() == []
    h.close()


def test_an_expired_session_loses_its_folder(tmp_path, example_zip):
    h = Server(training_slots=1)
    demo = build_demo(server=h, queue_size=5, state_ttl_s=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        Client(url, verbose=False).predict(handle_file(str(example_zip)), api_name="/load_zip")
        (folder,) = _session_folders(h)
        assert any(folder.glob("upload-*/**/*.png"))
        deadline = time.monotonic() + 60
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not folder.exists()  # Gradio expired the state; its delete callback closed it
    finally:
        demo.close()
        h.close()
    assert not h.root.exists()  # the server's own folder goes with it


def test_each_session_has_a_disk_cap_and_nothing_lands_outside_it(tmp_path, example_zip, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # every temp folder under tmp_path
    (tmp_path / "tmp").mkdir()
    h = Server(training_slots=1, disk_limit=400_000)
    session = h.new_session()
    outside = {p for p in tmp_path.rglob("*") if session.workdir not in p.parents}
    with pytest.raises(gr.Error, match=r"unpacks to .*; the limit here is 400 kB. Upload fewer or smaller"):
        h.data.load_zip(session, str(example_zip))
    assert list(session.workdir.iterdir()) == []  # the refused upload left nothing
    pictures = sorted(str(p) for p in EXAMPLE.rglob("*.png"))  # 1.3 MB in all
    with pytest.raises(gr.Error, match=r"Adding these pictures needs .* of its 400 kB\. Use fewer"):
        h.data.add_images(session, "animal", pictures, None)
    h.data.add_images(session, "animal", pictures[:2], None)  # a little fits
    assert session.disk_used() <= session.disk_limit
    assert {p for p in tmp_path.rglob("*") if session.workdir not in p.parents} == outside
    session.close()
    assert not session.workdir.exists()
    h.close()


def test_replacing_data_does_not_pile_up_copies(example_zip):
    h = Server(training_slots=1)
    session = h.new_session()
    for _ in range(3):
        h.data.load_zip(session, str(example_zip))
    assert len(list(session.workdir.glob("upload-*"))) == 1
    session.close()
    h.close()


def _load_module():
    spec = importlib.util.spec_from_file_location("load", ROOT / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_three_users_at_once_all_finish_with_their_own_labels():
    """benchmarks/load.py with N=3: a real `python app.py` process and three gradio_client users."""
    load = _load_module()
    report = load.run_load(n_users=3, queue_size=20)
    print("\n" + report.table())
    assert [u.error for u in report.users] == [None, None, None]
    for u in report.users:
        assert set(u.seen) <= set(u.labels) and len(u.seen) == 3
    assert report.max_queue <= report.queue_limit
    assert report.leftover_folders == 0  # the server removed its session folders when stopped


def test_one_user_flooding_the_queue_is_refused_while_others_are_served(server, quick_bundle, tmp_path):
    """The queue holds 10 events. One session sends 12 fine-tunings at once: it gets one training
    and refusals for the rest (one job per user; a few events per user in the queue), instead of
    filling the queue; meanwhile another session loads a model and predicts."""
    url, h = server
    flooder = Client(url, verbose=False)
    flooder.predict(api_name="/use_example")
    finetune = [MODEL, "", None, "finetune", 30, 0, 0.25, 0, False]
    jobs = [flooder.submit(*finetune, api_name="/train") for _ in range(12)]
    deadline = time.monotonic() + 120
    while h.slots.busy()[0] == 0 and time.monotonic() < deadline:  # its first training has started
        time.sleep(0.2)
    other = Client(url, verbose=False)
    bundle_zip = shutil.make_archive(str(tmp_path / "model"), "zip", quick_bundle)
    other.predict(handle_file(bundle_zip), api_name="/load_model")
    answer = other.predict(handle_file(str(TEST_IMAGES / "animal_dolphin.png")), 0.0, api_name="/predict")
    assert answer[0].startswith("### ") and h.slots.busy()[0] == 1  # answered while the flood trains
    flooder.predict(api_name="/stop")
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result()[0])
        except Exception as exc:  # noqa: BLE001 - a refusal is the expected answer to a flood
            outcomes.append(f"refused: {exc}")
    trained = [o for o in outcomes if not o.startswith("refused")]
    assert len(trained) == 1 and len(outcomes) - len(trained) == 11
