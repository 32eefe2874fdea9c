"""The doors: every value from outside (class names, model names, preprocessing, pictures, zips,
CSV files) is parsed where it enters, and a bad one is refused with a message that says what to
do. Real files, real weights, the app's own step functions."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import EXAMPLE, TEST_IMAGES, run_measured, write_shapes
from transfer_gui.app.server import Server
from transfer_gui.engine.archive import extract_zip
from transfer_gui.engine.data import open_dataset
from transfer_gui.engine.errors import ArchiveError, DataError, ModelError, without_paths, UserInputError
from transfer_gui.engine.names import ClassName, ModelName, class_folder, folder_names
from transfer_gui.engine.workflow import open_model
from transfer_gui.settings import Limits

PATH_LIKE = ["../../escaped", "/abs/x", "a\\b", "..", ".hidden", "nul\x00byte", "line\nbreak", "x" * 101]


@pytest.fixture(scope="module")
def h():
    server = Server(training_slots=1)
    yield server
    server.close()


def _edit_bundle(bundle: Path, dest: Path, config=None, metadata=None) -> Path:
    """A copy of ``bundle`` as a .zip, with its config.json / transfer_gui.json changed."""
    folder = dest / "edited"
    shutil.copytree(bundle, folder)
    for name, change in (("config.json", config), ("transfer_gui.json", metadata)):
        if change is not None:
            data = json.loads((folder / name).read_text())
            change(data)
            (folder / name).write_text(json.dumps(data))
    zip_path = dest / "edited.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, p.name)
    return zip_path


def _outside(workdir: Path) -> list[Path]:
    """Whatever our escapes would have written outside the session's folder."""
    places = [workdir.parent / "escaped", workdir / "escaped", Path("/tmp/escaped"), Path("/abs/x")]
    return [p for p in places if p.exists()]


@pytest.mark.parametrize("name", PATH_LIKE)
def test_a_class_name_that_is_a_path_or_holds_control_characters_is_refused(name):
    with pytest.raises(DataError, match="Rename that class"):
        ClassName(name)
    assert ClassName("Äpfel & pears (2)") == "Äpfel & pears (2)"  # any language, punctuation


def test_class_names_from_a_csv_and_from_folders_are_refused_with_the_name(tmp_path):
    data = write_shapes(tmp_path / "csv", per_class=3)
    rows = ["filename,label"] + [f"{p.relative_to(data).as_posix()},{'../../escaped' if 'circle' in p.name else 'ok'}"
                                 for p in sorted(data.rglob("*.png"))]
    (data / "labels.csv").write_text("\n".join(rows))
    with pytest.raises(DataError, match=r"'\.\./\.\./escaped' in labels\.csv holds a slash.*Rename that class"):
        open_dataset(data / "labels.csv")
    folders = write_shapes(tmp_path / "folders", per_class=3)
    (folders / "circle").rename(folders / "circle\nshape")
    with pytest.raises(DataError, match=r"'circle\\nshape' in the folder names holds a control character"):
        open_dataset(folders)


def test_a_nul_byte_in_a_csv_file_name_skips_that_row_with_the_reason(tmp_path):
    data = write_shapes(tmp_path / "csv", per_class=3)
    rows = ["filename,label"] + [f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    rows.append("square/evil\x00.png,square")
    (data / "labels.csv").write_text("\n".join(rows))
    dataset = open_dataset(data / "labels.csv")
    assert len(dataset.items) == 6
    assert [s.reason for s in dataset.report.skipped] == ["the file name holds a control character (such as NUL)"]


def test_a_bundle_with_a_path_as_class_name_is_refused_and_nothing_is_filed_outside(h, quick_bundle, tmp_path):
    """The bundle with ``../../escaped`` as a class is refused when uploaded; a picture can be
    filed (step 5) and sorted (step 7) only under a class of the model, in the session's folder."""
    evil = _edit_bundle(quick_bundle, tmp_path, config=lambda c: c["label_names"].__setitem__(0, "../../escaped"))
    with pytest.raises(ModelError, match=r"'\.\./\.\./escaped' in config\.json of .* holds a slash"):
        open_model(evil)
    session = h.new_session()
    with pytest.raises(UserInputError, match="holds a slash"):
        h.model.load_model(session, str(evil))
    assert session.loaded is None and session.predictor is None

    (tmp_path / "good").mkdir()
    h.model.load_model(session, str(_edit_bundle(quick_bundle, tmp_path / "good")))
    picture = tmp_path / "dolphin.png"
    shutil.copy(TEST_IMAGES / "animal_dolphin.png", picture)
    for label in ("../../escaped", "/tmp/escaped", "no such class"):
        with pytest.raises(UserInputError, match="Choose one of the model's classes"):
            h.sort.file_test_picture(session, str(picture), label)
    assert not _outside(session.workdir) and not session.filed
    note, _ = h.sort.file_test_picture(session, str(picture), "bug")
    assert "Filed under **bug**" in note and session.filed["bug"][0].parent == session.workdir / "filed" / "bug"
    session.close()


def test_the_class_box_refuses_a_path(h, tmp_path):
    session = h.new_session()
    picture = tmp_path / "a.png"
    shutil.copy(TEST_IMAGES / "animal_dolphin.png", picture)
    for name in ("../../escaped", "/abs/x", ".x"):
        with pytest.raises(UserInputError, match="Rename that class"):
            h.data.add_images(session, name, [str(picture)], None)
    assert not session.classes and not _outside(session.workdir)
    session.close()


def test_folders_from_class_names_are_slugs_inside_their_parent(tmp_path):
    names = folder_names([ClassName("a?b"), ClassName("a*b"), ClassName("CON"), ClassName("chat noir")])
    assert names == {"a?b": "a_b", "a*b": "a_b-2", "CON": "_CON", "chat noir": "chat noir"}
    assert class_folder(tmp_path, ClassName("x:y")).parent == tmp_path


def test_model_names_are_parsed_once(tmp_path):
    assert ModelName(" tf_efficientnet_lite0.in1k ") == "tf_efficientnet_lite0.in1k"
    assert ModelName("hf-hub:timm/resnet18.a1_in1k").architecture is None
    for bad in ("../../x", "resnet18; rm -rf", "hf-hub:../x", "a" * 201, "x\ny", ""):
        with pytest.raises(ModelError, match="not one this app can build"):
            ModelName(bad)
    from transfer_gui.engine.config import TrainConfig

    with pytest.raises(ModelError, match="in the training settings"):
        TrainConfig(model="../../escaped")


def test_a_bundle_that_sets_its_own_input_size_or_names_another_model_is_refused(quick_bundle, tmp_path):
    cases = {
        "input": (lambda c: c["pretrained_cfg"].__setitem__("input_size", [3, 4096, 4096]), None,
                  r"asks for pictures of 4096x4096 px \(at most 518x518\)"),
        "crop": (lambda c: c["pretrained_cfg"].__setitem__("crop_pct", 0.01), None, r"crop_pct 0\.01"),
        "std": (lambda c: c["pretrained_cfg"].__setitem__("std", [0.5, 0.0, 0.5]), None, "above 0"),
        "interp": (lambda c: c["pretrained_cfg"].__setitem__("interpolation", "magic"), None, "interpolation"),
        "model": (None, lambda m: m.__setitem__("model_name", "vit_huge_patch14_clip_224.laion2b"),
                  r"names the model vit_huge_patch14_clip_224\.laion2b, but config\.json holds a "
                  r"tf_efficientnet_lite0"),
        "bad name": (None, lambda m: m.__setitem__("model_name", "../../x"), "not one this app can build"),
    }
    for n, (config, metadata, message) in enumerate(cases.values()):
        (tmp_path / str(n)).mkdir()
        with pytest.raises(ModelError, match=message):
            open_model(_edit_bundle(quick_bundle, tmp_path / str(n), config, metadata))


def _no_hub_bundle(dest: Path) -> Path:
    """A real bundle of lcnet_035 (a timm architecture with no pretrained weights on the Hub),
    as a .zip: what a stranger could upload to a public server."""
    import safetensors.torch
    import timm

    labels = sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())
    model = timm.create_model("lcnet_035", pretrained=False, num_classes=len(labels))
    folder = dest / "lcnet"
    timm.models.save_for_hf(model, str(folder), model_config={"label_names": labels}, safe_serialization=True)
    (folder / "transfer_gui.json").write_text(json.dumps({"model_name": "lcnet_035"}))
    safetensors.torch.load_file(str(folder / "model.safetensors"))  # a real weights file
    zip_path = dest / "lcnet.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, p.name)
    return zip_path


def test_continuing_or_retraining_an_uploaded_model_passes_the_public_model_checks(tmp_path):
    """A public server builds only listed and Hub models: an uploaded bundle of another model may
    be tested, but continuing it (step 3) and retraining on sorted pictures (step 7) are refused."""
    public = Server(training_slots=1, limits=Limits(public=True, model_params_m=100, train_minutes=20))
    private = Server(training_slots=1)
    bundle = _no_hub_bundle(tmp_path)
    session = public.new_session()
    public.data.load_example(session)
    public.model.load_model(session, str(bundle))
    with pytest.raises(UserInputError, match="only builds the listed models and Hub models"):
        next(public.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0, True))
    assert session.predictor is not None and session.trained is None  # the uploaded model stays

    # trained on a private server (allowed there), then a public server's step 7 retrains it
    updates = list(private.train.train(session, "tf_efficientnet_lite0.in1k", "", None, "quick", 0, 0, 0.25, 0,
                                          True))
    assert session.trained is not None and session.trained.result.config.model == "lcnet_035", updates[-1].status
    pile = tmp_path / "pile"
    pile.mkdir()
    for n, f in enumerate(sorted((EXAMPLE / "bug").glob("*.png"))[:3]):
        shutil.copy(f, pile / f"p{n}.png")
    public.sort.load_pile(session, [str(p) for p in sorted(pile.iterdir())])
    public.sort.accept(session)
    with pytest.raises(UserInputError, match="only builds the listed models and Hub models"):
        next(public.sort.retrain(session))
    session.close()
    public.close()
    private.close()


def test_a_zip_with_a_broken_deflate_stream_is_a_plain_message(tmp_path):
    src = tmp_path / "ok.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/a.png", (TEST_IMAGES / "animal_dolphin.png").read_bytes())
    data = bytearray(src.read_bytes())
    start = 30 + len("cats/a.png")  # the local header, then the compressed bytes
    data[start:start + 200] = bytes(range(200))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"broken\.zip is damaged and cannot be read .*Create the zip again"):
        extract_zip(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_messages_never_show_where_the_server_keeps_files():
    text = "No such file: '/tmp/tls-app-1/tls-session-2/upload-3/cats/a.png'; see https://huggingface.co/a/b"
    assert without_paths(text) == "No such file: 'a.png'; see https://huggingface.co/a/b"
    assert without_paths("hf-hub:org/name and cats/a.png") == "hf-hub:org/name and cats/a.png"


_THIN_RUN = """
import json, sys
from pathlib import Path
from transfer_gui.engine.batch import prediction_rows
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.data import open_dataset
from transfer_gui.engine.labelling import Pile
from transfer_gui.engine.workflow import train_model

data, thin = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
dataset = open_dataset(data)
trained = train_model(dataset, TrainConfig(mode="quick"))
skipped = []
rows = list(prediction_rows(trained.predictor, [(p.name, p) for p in thin], 3, on_skip=lambda s, w: skipped.append(w)))
pile = Pile([(p.name, p) for p in thin])
pile.suggest(trained.predictor, on_skip=lambda s, w: skipped.append(w))
print(json.dumps({"trained_on": len(dataset.items), "data_skipped": [s.reason for s in dataset.report.skipped],
                  "rows": len(rows), "skipped": skipped}))
"""


@pytest.mark.slow
def test_thin_pictures_cost_no_memory_in_training_batches_and_piles(tmp_path):
    """A 201-byte 40000x1 PNG became a 10-gigabyte picture once resized (and a 93-byte 3000x1 one
    1.7 GB): training, a batch and a pile with them stay far below that, in a real process."""
    data = write_shapes(tmp_path / "data", per_class=6)
    thin = []
    for size in ((40_000, 1), (1, 3000)):
        path = data / "square" / f"thin_{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (200, 30, 30)).save(path)
        thin.append(path)
    assert thin[0].stat().st_size < 300
    code, out, err, peak_mb = run_measured([sys.executable, "-c", _THIN_RUN, str(data), *map(str, thin)], tmp_path)
    assert code == 0, err[-2000:]
    found = json.loads(out.splitlines()[-1])
    assert found["trained_on"] == 12 and found["rows"] == 0
    assert all("too long and thin" in reason for reason in found["data_skipped"] + found["skipped"])
    assert len(found["data_skipped"]) == 2 and len(found["skipped"]) == 4
    assert peak_mb < 2500, peak_mb  # an ordinary run takes about 1 GB; the thin PNG alone took 10.8 GB


def test_the_cli_and_the_test_step_say_why_a_thin_picture_is_refused(cli, h, quick_bundle, tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (40_000, 1)).save(thin)
    proc = cli("predict", quick_bundle, thin)
    assert proc.returncode == 2 and proc.stdout == ""  # no readable picture: bad input, with the reason
    assert "thin.png: picture is too long and thin: it is 40000x1 pixels" in proc.stderr
    session = h.new_session()
    h.model.load_model(session, str(_edit_bundle(quick_bundle, tmp_path)))
    with pytest.raises(UserInputError, match="more than 20 times as long as it is wide"):
        h.test.predict(session, str(thin))
    big = tmp_path / "big.png"
    Image.new("RGB", (6000, 3000), (10, 200, 10)).save(big)
    verdict = h.test.predict(session, str(big))  # shrunk to 4096 px on its longer side, then answered
    assert verdict.confidences and abs(sum(verdict.confidences.values()) - 1) < 1e-4
    session.close()
