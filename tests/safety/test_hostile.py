"""Hostile and odd input, as a public server receives it: every case is refused or skipped with a
matched reason, or works; nothing is ever written outside the folder it was given."""

from __future__ import annotations

import io
import json
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_measured, write_fashion_mnist, write_shapes
from transfer_gui.engine.archive import ArchiveLimits, extract_zip
from transfer_gui.settings import Limits
from transfer_gui.engine.config import TrainConfig
from transfer_gui.engine.images import load_image
from transfer_gui.engine.data import open_dataset, scan_folder
from transfer_gui.engine.errors import ArchiveError, DataError
from transfer_gui.engine.workflow import finish
from transfer_gui.engine.training import train


def _snapshot(base: Path, inside: Path | None = None) -> set[str]:
    """Every path under ``base``, except those under ``inside``."""
    out = set()
    for p in base.rglob("*"):
        if inside is not None and (p == inside or inside in p.parents):
            continue
        out.add(str(p.relative_to(base)))
    return out


def _png(size=(8, 8), colour=(1, 2, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


# --- archives ------------------------------------------------------------------------------------

def test_hostile_zip_entries_are_skipped_with_reasons_and_nothing_lands_outside(tmp_path):
    z = tmp_path / "hostile.zip"
    long_name = "cats/" + "a" * 300 + ".png"  # over the file system's 255-byte name limit
    deep = "cats/" + "/".join(f"level{i}" for i in range(40)) + "/deep.png"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.png", _png())
        zf.writestr("/etc/abs.png", _png())
        zf.writestr("C:/windows/drive.png", _png())
        zf.writestr("cats/..\\..\\backslash.png", _png())
        link = zipfile.ZipInfo("cats/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("cats/inner.zip", b"PK\x05\x06" + b"\0" * 18)
        zf.writestr("cats/inner.tar.gz", b"\x1f\x8b")
        zf.writestr(long_name, _png())
        zf.writestr("dogs/clash", b"a file where a folder must go")
        zf.writestr("dogs/clash/b.png", _png())
        zf.writestr(deep, _png())
        zf.writestr("café au lait/naïve photo 01 ☕.png", _png())
        zf.writestr("cats/ok.png", _png())
    before = _snapshot(tmp_path)
    out = tmp_path / "session" / "upload"
    skipped = {s.path: s.reason for s in extract_zip(z, out)}
    assert _snapshot(tmp_path, inside=out) == before | {"session"}  # nothing new outside `out`
    for name in ("../escape.png", "/etc/abs.png", "C:/windows/drive.png", "cats/..\\..\\backslash.png"):
        assert "unsafe path" in skipped[name], name
    assert skipped["cats/link.png"] == "symbolic link, not extracted"
    assert "archive inside the archive" in skipped["cats/inner.zip"]
    assert "archive inside the archive" in skipped["cats/inner.tar.gz"]
    assert "cannot be stored here (File name too long)" == skipped[long_name]
    assert "cannot be stored here" in skipped["dogs/clash/b.png"]
    assert (out / deep).is_file() and (out / "café au lait" / "naïve photo 01 ☕.png").is_file()
    assert (out / "cats" / "ok.png").is_file()


def test_archive_caps_are_configurable_and_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TLS_MAX_UPLOAD_MB", "0.001")
    monkeypatch.setenv("TLS_MAX_FILES", "3")
    monkeypatch.setenv("TLS_MAX_RATIO", "5")
    limits = Limits.from_env().archive
    assert (limits.max_total_bytes, limits.max_files, limits.max_ratio) == (1048, 3, 5.0)
    monkeypatch.setenv("TLS_MAX_FILES", "not a number")
    assert Limits.from_env().archive.max_files == ArchiveLimits().max_files
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("c/a.png", np.random.default_rng(0).bytes(5000))  # incompressible, like a photo
    with pytest.raises(ArchiveError, match="unpacks to .*; the limit here is 1 kB. Upload fewer or smaller"):
        extract_zip(big, tmp_path / "a", limits)
    squeezed = tmp_path / "squeezed.zip"
    with zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c/flat.bmp", b"\x00" * 20_000)  # 20 kB of zeros: ratio far above 5
    with pytest.raises(ArchiveError, match="looks like a zip bomb .*it was not extracted"):
        extract_zip(squeezed, tmp_path / "b", ArchiveLimits(max_ratio=5))
    # a lying header: declared small, really large; the running count stops it
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("c/a.png", b"\x01" * 50_000)
    with pytest.raises(ArchiveError, match="unpacks to"):
        extract_zip(liar, tmp_path / "c", ArchiveLimits(max_total_bytes=10_000))
    assert not any((tmp_path / d).exists() for d in "abc")  # refused uploads leave nothing behind


def test_non_zip_files_named_zip_are_refused(tmp_path):
    for name, data in [("photo.zip", _png()), ("archive.zip", b"\x1f\x8b\x08 gzip data"), ("empty.zip", b""),
                       ("text.zip", "just some words".encode())]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ArchiveError, match=f"{name} is not a zip archive.*Compress the class folders"):
            open_dataset(tmp_path / name, workdir=tmp_path / "out")
        assert not (tmp_path / "out").exists()


# --- images --------------------------------------------------------------------------------------

def _odd_images(root: Path) -> None:
    """A two-class folder full of images a real upload contains, good and bad."""
    a, b = root / "flat things", root / "round things"
    write_shapes(root, per_class=4)
    (root / "square").rename(a)
    (root / "circle").rename(b)
    # a decompression bomb: 12000 x 12000 = 144 MP (PIL's limit is ~89 MP), a tiny file
    Image.new("1", (12_000, 12_000)).save(a / "bomb.png")
    good = Image.new("RGB", (300, 200), (200, 40, 40))
    buf = io.BytesIO()
    good.save(buf, "JPEG")
    (a / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (a / "really_text.jpg").write_text("a text file someone renamed")
    (b / "really_pdf.png").write_bytes(b"%PDF-1.4 not a picture")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(a / "one_pixel.png")
    Image.new("RGB", (6000, 4000), (30, 30, 220)).save(b / "huge.jpg", quality=50)
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(a / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(b / "animated.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(a / "sixteen_bit.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(b / "cmyk.jpg")
    (b / "ünïcödé names 雪").mkdir()
    Image.new("RGB", (32, 32), (9, 9, 200)).save(b / "ünïcödé names 雪" / "photo with spaces ☃.png")
    deep = b.joinpath(*[f"d{i}" for i in range(30)])
    deep.mkdir(parents=True)
    Image.new("RGB", (32, 32), (9, 9, 180)).save(deep / "deep.png")


def test_odd_images_are_read_or_skipped_with_the_reason_and_train(tmp_path):
    root = tmp_path / "odd"
    _odd_images(root)
    ds = scan_folder(root)
    reasons = {s.path: s.reason for s in ds.report.skipped}
    assert reasons == {
        "flat things/bomb.png": "image is too large (12000x12000 pixels would take 432 MB once decoded, over "
                                "the 268 MB allowed for one picture; shrink it first)",
        "flat things/truncated.jpg": reasons["flat things/truncated.jpg"],
        "flat things/really_text.jpg": "damaged or not really an image (cannot be decoded)",
        "round things/really_pdf.png": "damaged or not really an image (cannot be decoded)",
    }
    assert reasons["flat things/truncated.jpg"].startswith("damaged or incomplete image (image file is truncated")
    # 4 shapes + 1x1 + GIF + 16-bit; 4 shapes + huge + WebP + CMYK + unicode + deep
    assert ds.report.counts == {"flat things": 7, "round things": 9}
    assert load_image(root / "flat things" / "animated.gif").getpixel((5, 5)) == (255, 0, 0)  # first frame
    assert load_image(root / "round things" / "animated.webp").getpixel((5, 5)) == (255, 0, 0)
    assert load_image(root / "flat things" / "one_pixel.png").size == (1, 1)
    # every readable one goes through training and prediction
    result = train(ds, TrainConfig(epochs=3, val_fraction=0.3))
    trained = finish(result, ds)
    predictor, evaluation = trained.predictor, trained.evaluation
    assert evaluation.n_images == len(ds.items)  # cross-validated: every image judged
    probs = predictor.probabilities([root / "flat things" / "one_pixel.png", root / "round things" / "huge.jpg"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


# --- data extremes -------------------------------------------------------------------------------

def test_one_class_and_only_empty_classes_say_what_to_do(tmp_path):
    write_shapes(tmp_path / "one", per_class=3)
    (tmp_path / "one" / "circle" / "circle_0.png").rename(tmp_path / "moved.png")
    for p in (tmp_path / "one" / "circle").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"Need at least 2 classes with images \(found only 'square'\)"):
        scan_folder(tmp_path / "one")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match="Need at least 2 classes with images. Put the images"):
        scan_folder(tmp_path / "empty")


@pytest.mark.slow
def test_two_hundred_classes_train(tmp_path):
    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    for c in range(200):
        (root / f"class {c:03d}").mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(3):
            arr = np.clip(colour + rng.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f"class {c:03d}" / f"{i}.png")
    ds = open_dataset(root)
    assert len(ds.labels) == 200 and ds.report.n_images == 600
    result = train(ds, TrainConfig())
    assert result.model.get_classifier().out_features == 200
    # 3 images a class: 3-fold cross-validation, every image judged once
    assert result.validation.k == 3 and len(result.validation.indices) == 600


def test_labels_csv_naming_missing_files(tmp_path):
    write_shapes(tmp_path, per_class=3)
    rows = ["filename,label"] + [f"{k}/{k}_{i}.png,{k}" for k in ("square", "circle") for i in range(3)]
    rows += ["square/gone.png,square", "../../etc/passwd,square", "circle/also_gone.jpg,circle"]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    ds = open_dataset(tmp_path / "labels.csv")
    reasons = {s.path: s.reason for s in ds.report.skipped}
    assert reasons == {"square/gone.png": "listed in the CSV but not found",
                       "circle/also_gone.jpg": "listed in the CSV but not found",
                       "../../etc/passwd": "path points outside the CSV's folder"}
    assert ds.report.counts == {"circle": 3, "square": 3}
    only_missing = tmp_path / "missing.csv"
    only_missing.write_text("filename,label\nnope.png,a\nnada.png,b\n")
    with pytest.raises(DataError, match="Need at least 2 classes"):
        open_dataset(only_missing)


@pytest.mark.slow
def test_ten_thousand_images_train_in_bounded_memory(tmp_path):
    """10,000 Fashion-MNIST pictures through the command line: works, and the peak memory of the
    process is reported and bounded. A small random-initialised network keeps CI's time down; the
    memory that grows with the number of images (file list, features, split) is the same."""
    root = write_fashion_mnist(tmp_path / "fashion", 10_000)
    rc, out, err, peak_mb = run_measured(
        [sys.executable, "-m", "transfer_gui", "train", str(root), "--mode", "quick", "--model",
         "mobilenetv3_small_050", "--scratch", "--epochs", "3", "--out", str(tmp_path / "model")], tmp_path)
    assert rc == 0, err[-2000:]
    summary = json.loads(out.splitlines()[-1])
    # over 2,000 images: one holdout instead of cross-validation
    assert summary["estimate"]["method"] == "holdout" and not summary["estimate"]["trained_on_all_images"]
    assert summary["n_train"] + summary["n_checked"] == 10_000 and len(summary["labels"]) == 10
    print(f"\n10,000 images, quick, mobilenetv3_small_050: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 2500
