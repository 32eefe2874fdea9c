"""Safe extraction of uploaded zip archives.

An upload may be anything: not a zip at all, encrypted, a zip bomb, or full of ``../`` paths. This
module extracts only regular files, only inside the destination folder, and only within limits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import struct
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePath, PurePosixPath

from .errors import ArchiveError

__all__ = ["ArchiveLimits", "Skipped", "extract_zip", "is_hidden", "size_text"]

_logger = logging.getLogger(__name__)

_NESTED_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
# System litter that archivers and file managers add; skipped silently, never reported.
_SYSTEM_NAMES = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini", "__pycache__"})


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that keep an upload from filling the disk or memory.

    Attributes:
        max_total_bytes: total uncompressed size (2 GB: generous for photos, far below a bomb).
        max_files: number of entries (20,000 images is beyond what CPU training handles anyway).
        max_ratio: uncompressed/compressed size of any one entry; images barely compress (JPEG ~1:1,
            PNG rarely over 10:1), while zip bombs reach 1000:1.
        max_classes: classes in one image set (results drawn per pair of classes grow with its square).

    A server reads them from the environment with ``settings.Limits.from_env().archive``.
    """

    max_total_bytes: int = 2 * 1024**3
    max_files: int = 20_000
    max_ratio: float = 200.0
    max_classes: int = 300

    def within(self, room_bytes: int) -> "ArchiveLimits":
        """The same limits, with the total size capped at ``room_bytes`` (e.g. a session's free space)."""
        return replace(self, max_total_bytes=max(0, min(self.max_total_bytes, int(room_bytes))))


def size_text(n_bytes: float) -> str:
    """A byte count as people read it: "850 MB", "2.1 GB"."""
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.1f} GB"
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


@dataclass(frozen=True)
class Skipped:
    """A file or archive entry that was not used, and why, in words a user understands."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        """``{"path": ..., "reason": ...}``, as the CLI and bundles write it."""
        return {"path": self.path, "reason": self.reason}


def is_hidden(rel: PurePath) -> bool:
    """True for dotfiles and OS litter (``__MACOSX``, ``.DS_Store``, ``Thumbs.db``) anywhere in a path.

    The one rule for both extraction and scanning, so what a zip hides and what a folder hides agree.
    """
    return any(p.startswith(".") or p.lower() in _SYSTEM_NAMES for p in rel.parts)


_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_MAX_NAME_BYTES = 1024  # per directory entry, on average: generous for real paths, far below a flood


def _directory_size(path: Path) -> tuple[int, int] | None:
    """(entries, central directory bytes) as the zip's end record declares them, or None.

    Read from the file's last 64 kB before ``zipfile`` parses the directory: parsing a directory of
    millions of entries costs memory and time before any count could be checked.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        back = min(size, 22 + 0xFFFF + 20)  # end record + longest comment + zip64 locator
        f.seek(size - back)
        tail = f.read(back)
        i = tail.rfind(_EOCD)
        if i < 0 or len(tail) - i < 22:
            return None
        entries, directory = struct.unpack("<HI", tail[i + 10:i + 16])
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and i >= 20 and tail[i - 20:i - 16] == _EOCD64_LOCATOR:
            (offset,) = struct.unpack("<Q", tail[i - 12:i - 4])
            f.seek(offset)
            record = f.read(56)
            if record[:4] == _EOCD64:
                entries, directory = struct.unpack("<QQ", record[32:48])
    return entries, directory


def extract_zip(zip_path: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> list[Skipped]:
    """Extract the regular files of a zip into ``dest``, never writing outside it.

    ``dest`` must be new or empty: on failure it is removed with everything extracted so far.

    Entries with absolute paths or ``..``, symbolic links and nested archives are skipped with a
    reason; hidden/system entries are skipped silently.

    Returns:
        The skipped entries with reasons.

    Raises:
        ArchiveError: not a zip, encrypted, or over a size/count/ratio limit.
    """
    limits = limits or ArchiveLimits()
    zip_path, dest = Path(zip_path), Path(dest)
    _check_directory(zip_path, limits)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extract_zip needs a new or empty folder, and {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = dest.resolve()
    skipped: list[Skipped] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            _check_entries(zip_path.name, infos, limits)
            written = 0
            for info in infos:
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                if info.is_dir() or not parts:
                    continue
                reason = _skip_reason(zip_path.name, info, parts, limits)
                if reason is None:
                    target = (dest / Path(*parts)).resolve()
                    if dest_real in target.parents:
                        written, reason = _copy_entry(zf, info, target, written, zip_path.name, limits)
                    else:
                        reason = "unsafe path, not extracted"
                if reason:  # "" is a hidden entry, skipped silently (or one stored)
                    skipped.append(Skipped(info.filename, reason))
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, ValueError) as exc:
        # zlib.error: a broken deflate stream; ValueError: a header that zipfile cannot parse
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"{zip_path.name} is damaged and cannot be read ({exc}). Create the zip again.") from exc
    _logger.info("Extracted %s (%d entries skipped)", zip_path.name, len(skipped))
    return skipped


def _check_directory(zip_path: Path, limits: ArchiveLimits) -> None:
    """Refuse, before the zip's directory is parsed, a file that is no zip or whose directory
    declares more entries (or bytes) than the limits allow."""
    if not zipfile.is_zipfile(zip_path):
        raise ArchiveError(
            f"{zip_path.name} is not a zip archive. Compress the class folders as a .zip "
            "(right-click > Compress / Send to > Compressed folder) and upload that."
        )
    declared = _directory_size(zip_path)
    if declared is not None and declared[0] > limits.max_files:
        raise ArchiveError(f"{zip_path.name} holds {declared[0]} entries; the limit is {limits.max_files}. "
                           "Upload fewer images.")
    if declared is not None and declared[1] > limits.max_files * _MAX_NAME_BYTES:
        raise ArchiveError(f"{zip_path.name} has a directory of {size_text(declared[1])}, far more than "
                           f"{limits.max_files} file names need; it was not read. Create the zip again.")


def _check_entries(name: str, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Refuse a zip with too many entries, any encrypted one, or too many bytes declared."""
    if len(infos) > limits.max_files:
        raise ArchiveError(f"{name} holds {len(infos)} entries; the limit is {limits.max_files}. Upload fewer images.")
    if any(info.flag_bits & 0x1 for info in infos):
        raise ArchiveError(f"{name} is encrypted (password-protected); upload an unencrypted zip.")
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"{name} unpacks to {size_text(total)}; the limit here is "
                           f"{size_text(limits.max_total_bytes)}. Upload fewer or smaller images.")


def _skip_reason(zip_name: str, info: zipfile.ZipInfo, parts: tuple[str, ...], limits: ArchiveLimits) -> str | None:
    """Why an entry is not extracted ("" for a hidden one, skipped silently), or None to extract it.

    Raises:
        ArchiveError: the entry expands like a zip bomb.
    """
    name = info.filename
    # Unsafe before hidden: ".." also starts with a dot, and must be reported.
    if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        return "unsafe path (absolute or with ..), not extracted"
    if is_hidden(PurePosixPath(*parts)):
        return ""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link, not extracted"
    if name.lower().endswith(_NESTED_ARCHIVES):
        return "archive inside the archive; unzip it and add its images directly"
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
        raise ArchiveError(f"{zip_name} looks like a zip bomb ({name} expands "
                           f"{info.file_size / info.compress_size:.0f}x); it was not extracted.")
    return None


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int, zip_name: str,
                limits: ArchiveLimits) -> tuple[int, str]:
    """Copy one entry to ``target`` with a running count of the bytes (the header's file_size can
    lie, the bytes cannot). Returns the bytes written so far and why the entry could not be stored
    ("" when it was).

    Raises:
        ArchiveError: the zip unpacks to more than the limit, or the disk is full.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limits.max_total_bytes:
                    raise ArchiveError(f"{zip_name} unpacks to more than {size_text(limits.max_total_bytes)}; "
                                       "it was not extracted.")
                out.write(chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ArchiveError("The server's disk is full; try again later with fewer images.") from exc
        # A name too long for the file system, or a file where a folder must go: that one entry
        # cannot exist here; the rest can.
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        return written, f"cannot be stored here ({exc.strerror or exc})"
    return written, ""
