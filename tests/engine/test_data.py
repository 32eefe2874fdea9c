"""Reading messy image folders: conversions, skips with reasons, warnings, errors, split."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLE, copy_example, write_shapes, zip_folder
from transfer_gui.engine.images import load_image, to_rgb
from transfer_gui.engine.data import open_dataset, scan_csv, scan_folder, split_dataset
from transfer_gui.engine.errors import DataError


# --- image conversions -------------------------------------------------------------------------

def test_transparency_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent *black*
    img.putpixel((5, 5), (255, 0, 0, 255))
    img.save(tmp_path / "a.png")
    rgb = load_image(tmp_path / "a.png")
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((5, 5)) == (255, 0, 0)


def test_palette_with_transparency_and_greyscale_alpha(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    rgb = load_image(tmp_path / "p.png")
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 1)) == (0, 255, 0)
    la = Image.new("LA", (3, 3), (0, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    rgb = load_image(tmp_path / "g16.png")
    assert rgb.mode == "RGB"
    assert abs(rgb.getpixel((0, 0))[0] - 128) <= 1


def test_cmyk_and_greyscale_become_rgb(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    r, g, b = load_image(tmp_path / "c.jpg").getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png").getpixel((0, 0)) == (77, 77, 77)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


# --- scanning ----------------------------------------------------------------------------------

def test_example_dataset_reads_cleanly(example_dataset):
    assert example_dataset.labels == ["animal", "bug", "computer", "flower", "fruit", "vehicle"]
    assert all(n >= 15 for n in example_dataset.report.counts.values())
    assert example_dataset.report.skipped == []
    assert example_dataset.report.warnings == []


def test_messy_folder_skips_with_reasons_and_ignores_system_files(tmp_path):
    root = write_shapes(tmp_path / "d")
    (root / "notes.txt").write_text("hello")  # at the top: not in a class folder
    (root / "square" / "readme.txt").write_text("not an image")
    (root / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "square" / "empty.png").write_bytes(b"")
    (root / "circle" / ".DS_Store").write_bytes(b"\0\0")
    (root / "circle" / "Thumbs.db").write_bytes(b"\0\0")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._x.png").write_bytes(b"\0")
    (root / ".hidden").mkdir()
    (root / "circle" / "._circle_0.png").write_bytes(b"\0")
    ds = scan_folder(root)
    assert ds.report.counts == {"circle": 8, "square": 8}
    reasons = {s.path: s.reason for s in ds.report.skipped}
    assert set(reasons) == {"notes.txt", "square/readme.txt", "square/broken.jpg", "square/empty.png"}
    assert "not inside a class folder" in reasons["notes.txt"]
    assert "not an image file (.txt)" in reasons["square/readme.txt"]
    assert "damaged" in reasons["square/broken.jpg"]
    assert reasons["square/empty.png"] == "empty file"


def test_truncated_image_is_skipped(tmp_path):
    root = write_shapes(tmp_path / "d")
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(buf, "JPEG")
    (root / "square" / "cut.jpg").write_bytes(buf.getvalue()[:300])
    ds = scan_folder(root)
    assert "square/cut.jpg" in {s.path for s in ds.report.skipped}
    assert ds.report.counts["square"] == 8


def test_zip_with_wrapping_folder(tmp_path):
    root = write_shapes(tmp_path / "d")
    z = zip_folder(root, tmp_path / "shapes.zip", wrap="my photos")
    ds = open_dataset(z, workdir=tmp_path / "x")
    assert ds.labels == ["circle", "square"]
    assert ds.report.n_images == 16


def test_csv_source(tmp_path):
    root = write_shapes(tmp_path / "d")
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["filename,label"]
    for p in sorted(root.rglob("*.png")):
        (flat / p.name).write_bytes(p.read_bytes())
        lines.append(f"{p.name},{p.parent.name}")
    lines.append("missing.png,square")
    (flat / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = scan_csv(flat / "labels.csv")
    assert ds.report.counts == {"circle": 8, "square": 8}
    assert [s.reason for s in ds.report.skipped] == ["listed in the CSV but not found"]
    # a folder holding just the CSV and its images is read the same way
    assert open_dataset(flat).report.counts == ds.report.counts


def test_csv_without_header_is_a_clear_error(tmp_path):
    (tmp_path / "l.csv").write_text("a.png,cat\n")
    with pytest.raises(DataError, match="filename,label"):
        scan_csv(tmp_path / "l.csv")


def test_fewer_than_two_classes_is_an_error(tmp_path):
    copy_example(tmp_path / "one", ["animal"])
    with pytest.raises(DataError, match="at least 2 classes"):
        scan_folder(tmp_path / "one")
    with pytest.raises(DataError, match="at least 2 classes"):
        scan_folder(tmp_path / "one" / "animal")  # images but no class folders


def test_class_with_one_image_is_an_error(tmp_path):
    root = write_shapes(tmp_path / "d")
    for p in sorted((root / "circle").glob("*.png"))[1:]:
        p.unlink()
    with pytest.raises(DataError, match=r"at least 2 readable images.*'circle' \(1\)"):
        scan_folder(root)


def test_warnings_imbalance_few_images_and_conflicting_labels(tmp_path):
    root = write_shapes(tmp_path / "d", per_class=16)
    for p in sorted((root / "circle").glob("*.png"))[4:]:
        p.unlink()
    # the same image under two labels
    (root / "circle" / "copy.png").write_bytes((root / "square" / "square_0.png").read_bytes())
    ds = scan_folder(root)
    text = "\n".join(ds.report.warnings)
    assert "unbalanced" in text and "'square' has 16" in text and "'circle' only 5" in text
    assert "labelled 'circle' and 'square'" in text
    assert ds.report.conflicts == [["circle/copy.png", "square/square_0.png"]]
    root2 = write_shapes(tmp_path / "e", per_class=3)
    assert any("only 3 images" in w for w in scan_folder(root2).report.warnings)


def test_empty_class_folder_is_left_out_with_a_warning(tmp_path):
    root = write_shapes(tmp_path / "d")
    (root / "dogs").mkdir()
    ds = scan_folder(root)
    assert ds.labels == ["circle", "square"]
    assert any("'dogs' has no images" in w for w in ds.report.warnings)


# --- split -------------------------------------------------------------------------------------

def test_split_is_stratified_seeded_and_keeps_a_training_image(tmp_path, example_dataset):
    a = split_dataset(example_dataset, 0.25, seed=1)
    b = split_dataset(example_dataset, 0.25, seed=1)
    c = split_dataset(example_dataset, 0.25, seed=2)
    assert a == b and a.val != c.val
    assert not set(a.train) & set(a.val)
    assert sorted(a.train + a.val) == list(range(len(example_dataset.items)))
    per_class_val = {label: 0 for label in example_dataset.labels}
    for i in a.val:
        per_class_val[example_dataset.items[i].label] += 1
    assert set(per_class_val.values()) == {4}  # 16 * 0.25 in every class
    root = write_shapes(tmp_path / "tiny", per_class=2)
    s = split_dataset(scan_folder(root), 0.9, seed=0)
    assert len(s.train) == 2 and len(s.val) == 2  # one per class on each side


def test_split_warns_about_identical_files_on_both_sides(tmp_path):
    root = write_shapes(tmp_path / "d")
    for i in range(8):  # every circle twice: some copies must land on both sides
        (root / "circle" / f"dup_{i}.png").write_bytes((root / "circle" / f"circle_{i}.png").read_bytes())
    s = split_dataset(scan_folder(root), 0.25, seed=0)
    assert s.warnings and "identical to images their model learned from" in s.warnings[0]


def test_zip_and_folder_of_example_give_the_same_dataset(example_zip, tmp_path, example_dataset):
    ds = open_dataset(example_zip, workdir=tmp_path / "x")
    assert ds.report.counts == example_dataset.report.counts
    assert [i.sha1 for i in ds.items] == [i.sha1 for i in example_dataset.items]
    assert ds.fingerprint() == example_dataset.fingerprint()


def test_not_an_image_folder_gives_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(EXAMPLE / "animal" / sorted(p.name for p in (EXAMPLE / "animal").iterdir())[0])


def test_zip_stored_inside_zip_is_skipped_with_reason(tmp_path):
    root = write_shapes(tmp_path / "d")
    z = zip_folder(root, tmp_path / "a.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("square/more.zip", b"PK\x05\x06" + b"\0" * 18)
    ds = open_dataset(z, workdir=tmp_path / "x")
    assert any(s.path == "square/more.zip" and "archive inside" in s.reason for s in ds.report.skipped)


def test_loaded_pixels_have_the_expected_shape(example_dataset):
    img = load_image(example_dataset.items[0].path)
    assert img.mode == "RGB" and min(img.size) > 0
    assert np.asarray(img).shape[2] == 3
    assert isinstance(example_dataset.items[0].path, Path)
