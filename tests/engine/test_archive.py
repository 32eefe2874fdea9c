"""Safe extraction: bad zips are refused with a reason, nothing lands outside the folder."""

from __future__ import annotations

import stat
import zipfile

import pytest

from transfer_gui.engine.archive import ArchiveLimits, extract_zip
from transfer_gui.engine.errors import ArchiveError


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_not_a_zip(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_bytes(b"Rar!\x1a\x07\x00 this is a rar")
    with pytest.raises(ArchiveError, match="photos.zip is not a zip archive"):
        extract_zip(fake, tmp_path / "out")


def test_path_traversal_and_absolute_paths_are_skipped(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.png", _png_bytes())
        zf.writestr("/abs.png", _png_bytes())
        zf.writestr("cats/ok.png", _png_bytes())
        zf.writestr("cats/../../escape2.png", _png_bytes())
    out = tmp_path / "sub" / "out"
    skipped = extract_zip(z, out)
    assert (out / "cats" / "ok.png").is_file()
    assert {s.path for s in skipped} == {"../escape.png", "/abs.png", "cats/../../escape2.png"}
    assert all("unsafe path" in s.reason for s in skipped)
    assert not (tmp_path / "sub" / "escape.png").exists() and not (tmp_path / "escape2.png").exists()


def test_symlink_entries_are_not_extracted(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("cats/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("cats/a.png", _png_bytes())
    skipped = extract_zip(z, tmp_path / "out")
    assert [s.path for s in skipped] == ["cats/link.png"]
    assert not (tmp_path / "out" / "cats" / "link.png").exists()


def test_encrypted_zip_is_refused(tmp_path):
    z = tmp_path / "secret.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("cats/a.png", _png_bytes())
    data = bytearray(z.read_bytes())
    # set the "encrypted" flag bit in the local header and the central directory entry
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        pos = data.find(sig)
        off = pos + (6 if sig == b"PK\x03\x04" else 8)
        data[off] |= 0x1
    z.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="encrypted"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_bomb_ratio_and_size_and_count_limits(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/zeros.png", b"\0" * 5_000_000)
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_zip(z, tmp_path / "a")
    with pytest.raises(ArchiveError, match="unpacks to 5 MB; the limit here is 1 kB"):
        extract_zip(z, tmp_path / "b", ArchiveLimits(max_total_bytes=1000, max_ratio=1e9))
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(5):
            zf.writestr(f"c/{i}.png", _png_bytes())
    with pytest.raises(ArchiveError, match="holds 5 entries; the limit is 3"):
        extract_zip(many, tmp_path / "c", ArchiveLimits(max_files=3))


def test_truncated_zip_is_a_clear_error(tmp_path):
    z = tmp_path / "cut.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"c/{i}.png", _png_bytes() * 50)
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArchiveError, match="not a zip archive|damaged"):
        extract_zip(z, tmp_path / "out")
