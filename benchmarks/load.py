"""Load test: N simulated users on one app server, each uploading, training (Quick) and predicting.

    python benchmarks/load.py            # 8 users
    python benchmarks/load.py --users 3
    python benchmarks/load.py --abuse    # 5 ordinary users while one user floods the server
    python benchmarks/load.py --abuse --no-flood   # the same 5 users on a quiet server

The abuse scenario runs the server as a public one (TLS_PUBLIC=1, uploads capped at 64 MB so the
largest allowed inputs fit this machine). One user (one session) keeps submitting, as fast as the
server answers: predictions of a 12-megapixel picture, trainings, the largest zip allowed (64 MB
of incompressible files), a zip over the cap, and batches of 89-megapixel pictures. Meanwhile 5
ordinary users each upload, train Quick and predict 10 times. It prints whether every ordinary
user finished, p50/p95 seconds of their predictions, and what the flooding user got back.

Starts ``python app.py`` on 127.0.0.1 (a separate process, so its memory is its own), then runs
N users at once with gradio_client (one Client = one browser session). Every user gets classes
with names of their own, so a user who ever saw another's labels would be caught. Prints
completed/failed users, p50/p95 seconds per user, the longest queue seen, and the server's peak
RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "example_dataset"
TEST_IMAGE = ROOT / "assets" / "test_images" / "animal_dolphin.png"
MODEL = "tf_efficientnet_lite0.in1k"

_logger = logging.getLogger("load")


@dataclass
class UserRun:
    """One simulated user's outcome."""

    user: int
    seconds: float = 0.0
    error: str | None = None
    labels: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    """What the load run measured."""

    users: list[UserRun]
    max_queue: int
    queue_limit: int
    peak_rss_mb: float
    wall_s: float
    leftover_folders: int = 0

    @property
    def completed(self) -> list[UserRun]:
        """Users who finished every step and only ever saw their own labels."""
        return [u for u in self.users if u.error is None]

    def table(self) -> str:
        """The printed summary."""
        times = sorted(u.seconds for u in self.completed)
        p50 = statistics.median(times) if times else float("nan")
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))] if times else float("nan")
        lines = [
            f"users                 {len(self.users)}",
            f"completed             {len(self.completed)}",
            f"failed                {len(self.users) - len(self.completed)}",
            f"seconds per user p50  {p50:.1f}",
            f"seconds per user p95  {p95:.1f}",
            f"longest queue seen    {self.max_queue} (limit {self.queue_limit})",
            f"server peak RSS       {self.peak_rss_mb:.0f} MB",
            f"wall time             {self.wall_s:.1f} s",
            f"folders left behind   {self.leftover_folders}",
        ]
        lines += [f"user {u.user} failed: {u.error}" for u in self.users if u.error]
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_zip(user: int, folder: Path) -> tuple[Path, list[str]]:
    """Three example classes renamed for this user (``u3 animal``...), zipped."""
    classes = sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())
    picked = [classes[(user + k) % len(classes)] for k in range(3)]
    labels = [f"u{user} {c}" for c in picked]
    zip_path = folder / f"user{user}.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for cls, label in zip(picked, labels):
            for img in sorted((EXAMPLE / cls).iterdir()):
                zf.write(img, f"{label}/{img.name}")
    return zip_path, labels


def _simulate(user: int, url: str, folder: Path) -> UserRun:
    """One user of the load test: upload, train Quick, predict once."""
    return _ordinary(user, url, folder, 1, [])


@dataclass
class AbuseReport:
    """What the abuse scenario measured."""

    users: list[UserRun]
    predict_s: list[float]
    flood: dict[str, int]
    peak_rss_mb: float
    wall_s: float
    flooded: bool

    def table(self) -> str:
        """The printed summary."""
        times = sorted(self.predict_s)
        p50 = statistics.median(times) if times else float("nan")
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))] if times else float("nan")
        done = [u for u in self.users if u.error is None]
        lines = [
            f"scenario                      {'one user floods the server' if self.flooded else 'quiet server'}",
            f"ordinary users finished       {len(done)} of {len(self.users)}",
            f"their predictions             {len(times)}",
            f"prediction seconds p50        {p50:.2f}",
            f"prediction seconds p95        {p95:.2f}",
            f"server peak RSS               {self.peak_rss_mb:.0f} MB",
            f"wall time                     {self.wall_s:.1f} s",
        ]
        lines += [f"flood: {kind:<24}{n}" for kind, n in sorted(self.flood.items(), key=lambda t: -t[1])]
        lines += [f"user {u.user} failed: {u.error}" for u in self.users if u.error]
        return "\n".join(lines)


def _start_server(env_extra: dict, folder: Path, startup_timeout_s: float) -> tuple[subprocess.Popen, str, object]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", **env_extra)
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url, log
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start; see {folder / 'server.log'}")
            time.sleep(0.3)


def _stop_server(server: subprocess.Popen, log) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _ordinary(user: int, url: str, folder: Path, predictions: int, times: list[float]) -> UserRun:
    """Upload, train Quick, then predict ``predictions`` times, timing each prediction."""
    from gradio_client import Client, handle_file

    run = UserRun(user)
    t0 = time.perf_counter()
    try:
        zip_path, run.labels = _user_zip(user, folder)
        client = Client(url, verbose=False)
        client.predict(handle_file(str(zip_path)), api_name="/load_zip")
        status = client.predict(MODEL, "", None, "quick", 0, 0, 0.25, user, api_name="/train")[0]
        if "**Done.**" not in status:
            raise RuntimeError(f"training did not finish: {status[:200]}")
        for _ in range(predictions):
            start = time.perf_counter()
            label = client.predict(handle_file(str(TEST_IMAGE)), 0.0, api_name="/predict")[1]
            times.append(time.perf_counter() - start)
            run.seen = [c["label"] for c in label["confidences"]]
            if not set(run.seen) <= set(run.labels):
                raise RuntimeError(f"saw labels that are not this user's: {sorted(set(run.seen) - set(run.labels))}")
    except Exception as exc:  # noqa: BLE001 - a load test reports every failure, whatever it is
        run.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    run.seconds = time.perf_counter() - t0
    return run


def _flood_inputs(folder: Path, max_upload_mb: int) -> dict[str, Path]:
    """The flooding user's inputs: a big photo, the largest zip allowed, one over it, huge pictures."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = folder / "photo.png"
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(photo)  # 12 MP
    def junk_zip(path: Path, mb: float) -> Path:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for i in range(int(mb)):
                zf.writestr(f"class {i % 2}/{i}.png", rng.bytes(1024 * 1024 - 200))
        return path
    largest = junk_zip(folder / "largest.zip", max_upload_mb - 1)
    over = junk_zip(folder / "over.zip", max_upload_mb + 8)
    huge = folder / "huge.zip"
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):  # 89 megapixels each: 0.3 MB on disk, 268 MB decoded
            path = folder / f"huge{i}.png"
            Image.new("RGB", (9433, 9433), (30 * i, 120, 200)).save(path)
            zf.write(path, path.name)
    return {"photo": photo, "largest": largest, "over": over, "huge": huge}


def _flooder(url: str):
    """The flooding user's session, with the example images and a trained model."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    client.predict(api_name="/use_example")
    client.predict(MODEL, "", None, "quick", 0, 0, 0.25, 0, api_name="/train")
    return client


def _flood(client, inputs: dict[str, Path], stop: threading.Event, counts: dict[str, int]) -> None:
    """One session keeping 13 requests in flight, each sent again 0.05 s after it is answered or
    refused (the pause keeps this process from taking the server's CPU cores away: on one
    machine, a client spinning in a loop would measure itself), until ``stop``: predictions of a
    big photo, fine-tunings, the largest zip allowed and one over it, and batches of
    89-megapixel pictures."""
    from gradio_client import handle_file

    lock = threading.Lock()
    requests = (
        [((handle_file(str(inputs["photo"])), 0.0), "/predict")] * 8
        + [((MODEL, "", None, "finetune", 0, 0, 0.25, 0), "/train")]
        + [((handle_file(str(inputs["largest"])),), "/load_zip"), ((handle_file(str(inputs["over"])),), "/load_zip")]
        + [(([handle_file(str(inputs["huge"]))], 0.0), "/batch_predict")] * 2
    )

    def kind_of(exc: Exception) -> str:
        text = str(exc)
        if "400" in text:  # refused before joining the queue: too many requests of this session
            return "refused: too many requests"
        for words, kind in (("Queue is full", "queue full"), ("cannot start while", "already training"),
                            ("has to wait", "data busy (training)"), ("exceeds the maximum file size", "upload too large"),
                            ("Train a model first", "no model (training)")):
            if words in text:
                return f"refused: {kind}"
        return f"refused: {text[:50]}"

    def worker(args, api_name):
        while not stop.is_set():
            try:
                client.predict(*args, api_name=api_name)
                kind = f"answered {api_name}"
            except Exception as exc:  # noqa: BLE001 - every refusal is counted by its kind
                kind = kind_of(exc)
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
            stop.wait(0.05)

    threads = [threading.Thread(target=worker, args=r, daemon=True) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_abuse(n_users: int = 5, predictions: int = 10, flood: bool = True, max_upload_mb: int = 64,
              startup_timeout_s: float = 120) -> AbuseReport:
    """Start a public server, run ``n_users`` ordinary users while one user floods it; measure."""
    folder = Path(tempfile.mkdtemp(prefix="tls-abuse-"))
    inputs = _flood_inputs(folder, max_upload_mb) if flood else {}
    server, url, log = _start_server({"TLS_PUBLIC": "1", "TLS_MAX_UPLOAD_MB": str(max_upload_mb)}, folder,
                                     startup_timeout_s)
    counts: dict[str, int] = {}
    times: list[float] = []
    try:
        stop = threading.Event()
        flooder = (threading.Thread(target=_flood, args=(_flooder(url), inputs, stop, counts), daemon=True)
                   if flood else None)
        t0 = time.perf_counter()
        if flooder:
            flooder.start()
            time.sleep(5)  # the flood is going before the first ordinary user arrives
        runs: list[UserRun] = [UserRun(i) for i in range(n_users)]

        def user(i):
            runs[i] = _ordinary(i, url, folder, predictions, times)

        threads = [threading.Thread(target=user, args=(i,)) for i in range(n_users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        if flooder:
            flooder.join(timeout=300)
        report = AbuseReport(runs, times, counts, _peak_rss_mb(server.pid), time.perf_counter() - t0, flood)
    finally:
        _stop_server(server, log)
        shutil.rmtree(folder, ignore_errors=True)
    return report


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the process's high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


def run_load(n_users: int = 8, queue_size: int = 20, startup_timeout_s: float = 120) -> LoadReport:
    """Start the app, run ``n_users`` users at once, stop the app; return what was measured."""
    folder = Path(tempfile.mkdtemp(prefix="tls-load-"))
    server, url, log = _start_server({"TLS_QUEUE_SIZE": str(queue_size)}, folder, startup_timeout_s)
    try:
        runs: list[UserRun] = [UserRun(i) for i in range(n_users)]
        done = threading.Event()
        max_queue = 0

        def watch_queue():
            nonlocal max_queue
            while not done.is_set():
                try:
                    with urllib.request.urlopen(f"{url}gradio_api/queue/status", timeout=2) as r:
                        max_queue = max(max_queue, int(json.load(r).get("queue_size", 0)))
                except OSError:
                    pass
                done.wait(0.25)

        def user(i):
            runs[i] = _simulate(i, url, folder)

        t0 = time.perf_counter()
        watcher = threading.Thread(target=watch_queue, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=user, args=(i,)) for i in range(n_users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        watcher.join()
        wall = time.perf_counter() - t0
        report = LoadReport(runs, max_queue, queue_size, _peak_rss_mb(server.pid), wall)
    finally:
        _stop_server(server, log)
    report.leftover_folders = len(_owned_folders(server.pid))
    shutil.rmtree(folder, ignore_errors=True)
    return report


def _owned_folders(pid: int) -> list[Path]:
    """The app folders (and so session folders) a server process left in the temp folder."""
    found = []
    for owner in Path(tempfile.gettempdir()).glob("tls-app-*/owner.pid"):
        try:
            if int(owner.read_text()) == pid:
                found.append(owner.parent)
        except (OSError, ValueError):
            pass
    return found


def main() -> None:
    """Command line: run the load test and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="simulated users at once (default 8)")
    parser.add_argument("--queue-size", type=int, default=20, help="the app's queue limit (default 20)")
    parser.add_argument("--abuse", action="store_true", help="5 ordinary users while one user floods the server")
    parser.add_argument("--no-flood", action="store_true", help="with --abuse: the same users, no flood")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.abuse:
        sys.stdout.write(run_abuse(flood=not args.no_flood).table() + "\n")
        return
    report = run_load(args.users, args.queue_size)
    sys.stdout.write(report.table() + "\n")


if __name__ == "__main__":
    main()
