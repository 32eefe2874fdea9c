"""Shared fixtures: real example data, real built-in weights, small generated image sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = ROOT / "assets" / "example_dataset"
TEST_IMAGES = ROOT / "assets" / "test_images"
PHOTOS = ROOT / "tests" / "data"
ARTIFACTS = ROOT / "tests" / "artifacts"

# Gradio's uploads and downloads for the servers these tests start go to a folder of this run's own
# (set before any test module imports gradio): a server's disk budget counts Gradio's folder, and
# the machine's shared one holds whatever other runs and killed servers left there.
UPLOADS = Path(tempfile.mkdtemp(prefix="tls-tests-gradio-"))
os.environ["GRADIO_TEMP_DIR"] = str(UPLOADS)


@pytest.fixture(scope="session", autouse=True)
def tuned_process():
    """The test process is an entry point, as the app and the command line are: tuned once at
    start (threads, allocator; ``speed.tune_process``) with the default settings."""
    from transfer_gui.engine.speed import tune_process

    tune_process()


@pytest.fixture(scope="session", autouse=True)
def own_upload_folder():
    """``UPLOADS`` goes when the run ends."""
    yield
    shutil.rmtree(UPLOADS, ignore_errors=True)


def shape_image(kind: str, seed: int, size: int = 64) -> Image.Image:
    """A red square or a blue circle at a random place on random noise."""
    return shape_with_box(kind, seed, size)[0]


def shape_with_box(kind: str, seed: int, size: int = 64) -> tuple[Image.Image, list[int]]:
    """``shape_image`` and the shape's bounding box [left, top, right, bottom] (inclusive)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    r = size // 4
    cx, cy = rng.integers(r, size - r, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "square":
        draw.rectangle(box, fill=(230, 20, 20))
    else:
        draw.ellipse(box, fill=(20, 20, 230))
    return img, [int(v) for v in box]


def write_shapes(folder: Path, per_class: int = 8, size: int = 64) -> Path:
    """A two-class folder dataset (square/, circle/) of generated PNGs."""
    for k, kind in enumerate(("square", "circle")):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, 1000 * k + i, size).save(folder / kind / f"{kind}_{i}.png")
    return folder


def zip_folder(folder: Path, zip_path: Path, wrap: str | None = None) -> Path:
    """Zip a folder's files, optionally inside a single wrapping folder."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                zf.write(p, f"{wrap}/{rel}" if wrap else rel)
    return zip_path


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    """Two classes x 8 generated images."""
    return write_shapes(tmp_path / "shapes")


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory) -> Path:
    """The committed example dataset as a zip with a wrapping folder, as a user would make it."""
    return zip_folder(EXAMPLE, tmp_path_factory.mktemp("zip") / "example.zip", wrap="example_dataset")


@pytest.fixture(scope="session")
def example_dataset():
    """The example dataset, scanned once."""
    from transfer_gui.engine.data import open_dataset

    return open_dataset(EXAMPLE)


@pytest.fixture(scope="session")
def quick_result(example_dataset):
    """Quick training with the real built-in weights on the example data (seed 0)."""
    from transfer_gui.engine.config import TrainConfig
    from transfer_gui.engine.training import train

    return train(example_dataset, TrainConfig(mode="quick", seed=0))


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory, quick_result, example_dataset) -> Path:
    """``quick_result`` saved as a bundle folder."""
    from transfer_gui.engine.bundle import save_bundle

    folder = tmp_path_factory.mktemp("bundle") / "example_model"
    return save_bundle(quick_result, folder, dataset_report=example_dataset.report.to_dict())


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*args, offline=False)``: ``python -m transfer_gui ARGS`` as the CLI's own ``main(ARGS)``
    in this process, returning a CompletedProcess (returncode, stdout, stderr). The same code a
    user's command runs, without a new interpreter's 8-10 s of imports (torch, timm) per call;
    tests/test_cli.py still runs real processes for training and for a bad input.
    ``offline=True`` is what ``HF_HUB_OFFLINE=1`` sets when huggingface_hub is imported."""
    from huggingface_hub import constants

    from transfer_gui.cli import main

    def run(*args, offline: bool = False) -> subprocess.CompletedProcess:
        if offline:
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        capsys.readouterr()  # drop anything printed before
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exit
            code = exc.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for screenshots and other outputs a person should look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def copy_example(dest: Path, labels: list[str] | None = None) -> Path:
    """Copy (some classes of) the example dataset to ``dest``."""
    for d in sorted(EXAMPLE.iterdir()):
        if labels is None or d.name in labels:
            shutil.copytree(d, dest / d.name)
    return dest


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]


def write_fashion_mnist(dest: Path, n: int) -> Path:
    """The first ``n`` Fashion-MNIST training images as PNG files in one folder per class."""
    import gzip

    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (.ci/run does)")
    with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    for name in FASHION_CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        Image.fromarray(pixels, "L").save(dest / FASHION_CLASSES[label] / f"{i:05d}.png")
    return dest


def run_measured(cmd: list[str], tmp: Path, env: dict | None = None, timeout: float = 1200
                 ) -> tuple[int, str, str, float]:
    """Run a command from the repo root; (exit code, stdout, stderr, peak RSS in MB of that process).

    The peak is the process's own VmHWM, read while it runs. Not ru_maxrss from wait4: the child
    is forked from this (large) test process, and Linux keeps the pre-exec high-water mark in
    ru_maxrss, so it reported this process's size instead (seen: 4.3 GB for a 1.0 GB run).
    """
    import subprocess
    import time

    out_path, err_path = tmp / "cmd.out", tmp / "cmd.err"
    peak_kb = 0
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                for line in open(f"/proc/{proc.pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except OSError:  # exiting
                pass
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.1)
    return proc.returncode, out_path.read_text(), err_path.read_text(), peak_kb / 1024


def run_training(h, session, mode="quick", epochs=0, stop_when=None, model="tf_efficientnet_lite0.in1k"):
    """Drive ``TrainStep.train`` to the end through the server's event wrapper, as the page does
    (an error reaches the test as the page's ``gr.Error``); press Stop at the first status matching
    the regex ``stop_when``. Returns every update."""
    import re

    updates = []
    for out in h.event(h.train.train)(None, session, model, "", None, mode, epochs, 0, 0.25, 0):
        updates.append(out)
        if stop_when is not None and re.search(stop_when, out[0]) and not session.stop.is_set():
            h.train.stop(session)
    return updates
