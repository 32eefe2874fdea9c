"""Nothing a user uploads may run code: pickled weights are refused before anything reads them,
in a bundle, as a weights file, through the web app's events and through the CLI."""

from __future__ import annotations

import pathlib
import pickle
import shutil
import zipfile

import pytest

from transfer_gui.engine.bundle import load_bundle
from transfer_gui.engine.errors import ModelError, UserInputError
from transfer_gui.app.server import Server
from transfer_gui.engine.weights import create_model


class _Touch:
    """Unpickling this creates a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _evil_bin(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    path.write_bytes(pickle.dumps({"state_dict": _Touch(marker)}))
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a pickle in an upload was unpickled: it ran code"


@pytest.fixture
def evil_bundle(quick_bundle, tmp_path, marker) -> pathlib.Path:
    """The real example bundle with its model.safetensors swapped for a pickle that timm's
    local-dir loader would have fallen back to."""
    folder = tmp_path / "evil"
    shutil.copytree(quick_bundle, folder)
    (folder / "model.safetensors").unlink()
    _evil_bin(folder / "pytorch_model.bin", marker)
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, p.name)
    return zip_path


def test_a_bundle_with_pickled_weights_is_refused(evil_bundle, quick_bundle, tmp_path, marker):
    with pytest.raises(ModelError, match="contains pytorch_model.bin: weights in that format can run code"):
        load_bundle(evil_bundle, tmp_path / "w")
    # a safetensors bundle that also carries a pickle is refused as well
    both = tmp_path / "both"
    shutil.copytree(quick_bundle, both)
    _evil_bin(both / "extra.pth", marker)
    with pytest.raises(ModelError, match="contains extra.pth"):
        load_bundle(both)
    # without any weights: what to upload instead
    (empty := tmp_path / "empty").mkdir()
    shutil.copy(quick_bundle / "config.json", empty / "config.json")
    with pytest.raises(ModelError, match="has no model.safetensors"):
        load_bundle(empty)


def test_a_bundle_with_two_configs_is_refused(quick_bundle, tmp_path):
    zip_path = tmp_path / "two.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for sub in ("a", "b"):
            for p in quick_bundle.iterdir():
                zf.write(p, f"{sub}/{p.name}")
    with pytest.raises(ModelError, match="holds 2 config.json files"):
        load_bundle(zip_path, tmp_path / "w")


def test_the_web_app_refuses_pickles_as_bundle_and_as_weights_file(evil_bundle, tmp_path, marker):
    h = Server(training_slots=1)
    session = h.new_session()
    try:
        with pytest.raises(UserInputError, match="contains pytorch_model.bin"):
            h.model.load_model(session, str(evil_bundle))
        h.data.load_example(session)
        weights = _evil_bin(tmp_path / "weights.bin", marker)
        with pytest.raises(UserInputError, match="weights.bin is not a .safetensors file"):
            next(h.train.train(session, "tf_efficientnet_lite0", "", str(weights), "quick", 0, 0, 0.25, 0))
        assert session.predictor is None
    finally:
        session.close()
        h.close()


def test_the_cli_refuses_pickles_in_one_line(evil_bundle, tmp_path, marker, cli, example_zip):
    weights = _evil_bin(tmp_path / "weights.bin", marker)
    proc = cli("train", example_zip, "--model", "tf_efficientnet_lite0", "--weights", weights, "--out", tmp_path / "m")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "weights.bin is not a .safetensors file" in proc.stderr
    proc = cli("predict", evil_bundle, str(tmp_path / "weights.bin"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "contains pytorch_model.bin" in proc.stderr
    with pytest.raises(ModelError, match="is not a .safetensors file"):
        create_model("tf_efficientnet_lite0", 2, weights_file=weights)
