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
from transfer_gui.engine.errors import UserInputError
from transfer_gui.app.server import Server
from transfer_gui.app.hosting import launch_kwargs
from transfer_gui.app.layout import build_demo
from transfer_gui.app.session import Session, TooManyEventsError
from transfer_gui.settings import Limits

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


@pytest.mark.slow
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
    for api, data in [("predict", [_file(a_image), 0.0, True]), ("load_model", [_file(a_bundle)]),
                      ("load_zip", [_file(a_bundle)]), ("batch_predict", [[_file(a_image)], 0.5, True])]:
        kind, out = _call(url, api, data, b)
        assert kind in ("error", "refused"), (api, out)
    # ...and will not serve them either
    for path in (a_image, a_bundle, a_folder):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}gradio_api/file={path}")
        assert err.value.code == 403
    # B's own model still answers with B's labels only, A's with A's
    own = handle_file(str(TEST_IMAGES / "animal_dolphin.png"))
    kind, out = _call(url, "predict", [_file_uploaded(url, TEST_IMAGES / "animal_dolphin.png"), 0.0, True], b)
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


@pytest.mark.slow
def test_a_tabs_session_outlives_its_page_going_away_for_the_grace_period():
    """The registry holds each tab's Session: events of one tab share it, and a garbage collection
    does not end it. When the page goes away (Gradio's unload: a closed tab, or only a network
    drop) the session waits the grace period for it to come back; an event in time keeps it, and
    only a page gone for longer loses its files."""
    h = Server(training_slots=1, limits=Limits(session_grace_min=0.02))  # 1.2 s
    tab = gr.Request(session_hash="tab-a")
    session = h.event(h.on_load)(tab, None)
    h.event(h.data.load_example)(tab, None)
    h.event(h.data.add_images)(tab, None, "mine", [str(TEST_IMAGES / "animal_dolphin.png")], None)
    folder, key = session.workdir, session.id
    del session
    gc.collect()
    assert folder.exists() and h.sessions.keys() == ["tab-a"]
    again = h.sessions.get("tab-a")
    assert again.id == key and again.dataset is not None  # the example went into the same session
    assert h.event(h.on_load)(gr.Request(session_hash="tab-b"), None) is not again
    h.on_unload(tab)  # the page went away...
    time.sleep(0.6)
    h.event(h.data.classes_table)(tab, None)  # ...and came back in time: nothing happened
    time.sleep(1.0)
    assert h.sessions.expire_idle() == 0 and not again.closed and folder.exists()
    h.on_unload(tab)  # gone again, for longer than the grace period
    time.sleep(1.5)
    h.sessions.expire_idle()
    assert again.closed and not folder.exists() and "tab-a" not in h.sessions.keys()
    h.close()


@pytest.mark.slow
def test_sessions_idle_longer_than_the_limit_end_unless_training(monkeypatch):
    """API clients never close a tab: their sessions end after TLS_SESSION_IDLE_MIN without an
    event. A session whose training is running is not idle."""
    monkeypatch.setenv("TLS_SESSION_IDLE_MIN", "0.02")  # 1.2 s
    h = Server(training_slots=1, limits=Limits.from_env())  # as the app's entry point reads them
    assert h.sessions.idle_s == pytest.approx(1.2)
    idle, busy, active = (h.sessions.get(k) for k in ("idle", "busy", "active"))
    busy.training.acquire()
    deadline = time.monotonic() + 10
    while not idle.closed and time.monotonic() < deadline:  # the server's own sweep, every 0.5 s
        h.sessions.get("active")  # an event now and then: activity
        time.sleep(0.3)
    assert idle.closed and not idle.workdir.exists()
    assert not busy.closed and not active.closed and sorted(h.sessions.keys()) == ["active", "busy"]
    busy.training.release()
    time.sleep(2.5)  # no event at all: the server's own sweep ends them
    assert h.sessions.keys() == [] and busy.closed and active.closed
    h.close()


@pytest.mark.slow
def test_an_expired_session_loses_its_folder(tmp_path, example_zip, monkeypatch):
    """Gradio expiring the page's state counts as the page going away: the session's folder goes
    after the grace period (here 1.2 s)."""
    monkeypatch.setenv("TLS_SESSION_GRACE_MIN", "0.02")
    h = Server(training_slots=1, limits=Limits.from_env())  # as the app's entry point reads them
    demo = build_demo(server=h, queue_size=5, state_ttl_s=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        Client(url, verbose=False).predict(handle_file(str(example_zip)), api_name="/load_zip")
        (folder,) = _session_folders(h)
        assert any(folder.glob("upload-*/**/*.png"))
        deadline = time.monotonic() + 60
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not folder.exists()  # Gradio expired the state, and the grace period passed
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
    with pytest.raises(UserInputError, match=r"unpacks to .*; the limit here is 400 kB. Upload fewer or smaller"):
        h.data.load_zip(session, str(example_zip))
    assert list(session.workdir.iterdir()) == []  # the refused upload left nothing
    pictures = sorted(str(p) for p in EXAMPLE.rglob("*.png"))  # 1.3 MB in all
    with pytest.raises(UserInputError, match=r"Adding these pictures needs .* of its 400 kB\. Use fewer"):
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _drop_heartbeat(url: str, session_hash: str, seconds: float) -> None:
    """What a browser does when its network drops: the page's heartbeat connection is open for
    a while, then closes (Gradio then runs the page's unload)."""
    with httpx.stream("GET", f"{url}gradio_api/heartbeat/{session_hash}", timeout=30) as r:
        next(r.iter_lines())  # connected: the first "ALIVE"
        time.sleep(seconds)


@pytest.mark.slow
def test_a_network_drop_keeps_the_users_model_and_only_a_long_absence_ends_the_session(monkeypatch):
    """Through the HTTP API as the issue measured it: example, Quick, a prediction; the heartbeat
    drops for 2 s; the next prediction gives the same answer. A page gone for longer than the grace
    period (here 15 s) loses its session, and with it its model."""
    monkeypatch.setenv("TLS_SESSION_GRACE_MIN", "0.25")
    h = Server(training_slots=1, limits=Limits.from_env())  # as the app's entry point reads them
    demo = build_demo(server=h, queue_size=10)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        user = "phone-on-a-train"
        assert _call(url, "use_example", [], user)[0] == "complete"
        kind, out = _call(url, "demo", [], user)
        assert kind == "complete" and "**Done.**" in out[0]
        picture = _file_uploaded(url, TEST_IMAGES / "animal_dolphin.png")
        kind, first = _call(url, "predict", [picture, 0.0, True], user)
        assert kind == "complete"
        _drop_heartbeat(url, user, 2.0)
        time.sleep(5.0)
        assert h.sessions.find(user) is not None
        kind, again = _call(url, "predict", [picture, 0.0, True], user)
        assert kind == "complete" and again[0] == first[0] and again[1]["label"] == first[1]["label"]
        folder = h.sessions.find(user).workdir
        _drop_heartbeat(url, user, 0.5)  # this time the page does not come back
        deadline = time.monotonic() + 60
        # The registry forgets the session first and deletes its folder just after, outside its
        # lock, so both are waited for.
        while (h.sessions.find(user) is not None or folder.exists()) and time.monotonic() < deadline:
            time.sleep(1.0)
        assert h.sessions.find(user) is None and not folder.exists()
        kind, out = _call(url, "predict", [picture, 0.0, True], user)
        assert kind == "error" and "Train a model first" in str(out)
    finally:
        demo.close()
        h.close()


@pytest.mark.slow
def test_random_session_hashes_make_no_folders_and_lock_nobody_out(monkeypatch):
    """A flood of queue joins, each with a new random session hash from one address: the empty
    sessions their events make give way to each other at the address's cap, no folder is made for
    them, and a user who holds pictures from the same address keeps them."""
    monkeypatch.setenv("TLS_SESSIONS_PER_CLIENT", "3")
    h = Server(training_slots=1, limits=Limits.from_env())  # as the app's entry point reads them
    demo = build_demo(server=h, queue_size=30)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        assert _call(url, "use_example", [], "real-user")[0] == "complete"
        owner = h.sessions.find("real-user")
        for i in range(20):
            kind, out = _call(url, "predict", [None, 0.5, True], f"random-{i:04d}")
            assert kind == "complete", out
        assert h.sessions.find("real-user") is owner and owner.dataset is not None
        assert len(h.sessions.keys()) <= 3
        assert all(f.name.startswith(f"tls-session-{owner.id}-") for f in _session_folders(h))  # none of theirs
        assert _call(url, "predict", [None, 0.5, True], "a-new-visitor")[0] == "complete"
    finally:
        demo.close()
        h.close()


def test_a_place_whose_event_never_started_is_given_back():
    """Gradio drops a queued event whose tab closed or that was cancelled without running it, so
    its place is never freed by its end: after a while the session gets it back."""
    session = Session(queued_place_s=0.5)
    session.admit_event(2)
    session.admit_event(2)
    with pytest.raises(TooManyEventsError, match="already has 2 requests waiting or running"):
        session.admit_event(2)
    time.sleep(0.6)
    session.admit_event(2)  # the two dropped places were given back
    session.close()


@pytest.mark.slow
def test_app_py_keeps_uploads_in_a_folder_of_its_own_and_counts_only_those(tmp_path, example_zip):
    """Gradio's shared upload folder holds what other and earlier servers left (a killed one leaves
    everything); `python app.py` must not count that against its users, nor touch it."""
    import os
    import signal
    import socket
    import subprocess

    left = tmp_path / "gradio" / "left-by-a-killed-server" / "big.bin"
    left.parent.mkdir(parents=True)
    with open(left, "wb") as f:
        f.truncate(200 * 1024**2)  # 200 MB, sparse: counted at its size, costs no disk
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp_path), TLS_SERVER_DISK_MB="50", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
                time.sleep(0.5)
        summary = Client(url, verbose=False).predict(handle_file(str(example_zip)), api_name="/load_zip")[0]
        assert "96 images in 6 classes" in summary  # not "the server's disk budget ... is nearly used up"
        own = [p.parent for p in tmp_path.glob("tls-app-*/**/example.zip")]
        assert own, "the upload did not land in the server's own folder"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not list(tmp_path.glob("tls-app-*")) and left.exists()
