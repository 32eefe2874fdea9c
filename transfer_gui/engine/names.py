"""The doors for names that come from outside: class names, model names and Hub repository names.

A class name arrives from a folder, a zip, a CSV, the page's class box, a bundle's config.json; a
model name from the page, the command line, a bundle's metadata. Each is parsed here once, where
it enters, into ``ClassName`` / ``ModelName``: a ``str`` that cannot hold a bad value, so code
further in (which builds folders from class names, or models from model names) trusts it.

Folders made from class names still go through ``class_folder``: a slug of the name, checked to
resolve inside its parent (a name that is fine as a label may still be a reserved word or hold
characters some file systems refuse).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Iterable

from .errors import DataError, ModelError, UserInputError

__all__ = ["ClassName", "ModelName", "MAX_CLASS_NAME", "class_names", "class_folder", "folder_names",
           "model_name", "check_repo_id"]

MAX_CLASS_NAME = 100  # characters: a label shown in tables and on buttons, and a folder name
_MAX_MODEL_NAME = 200
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# timm names (``arch.tag``), Hub repositories (``hf-hub:org/name`` with an optional ``@revision``)
_TIMM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_HUB_NAME = re.compile(r"hf-hub:[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-]+)?")
# Names Windows refuses as file names whatever their extension: a zip of class folders is
# opened there too.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def _control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def _class_problem(text: str) -> str | None:
    """Why ``text`` cannot be a class name, in words, or None."""
    if not text.strip():
        return "is empty"
    if len(text) > MAX_CLASS_NAME:
        return f"is {len(text)} characters long (at most {MAX_CLASS_NAME})"
    if "/" in text or "\\" in text:
        return "holds a slash, which would make it a path"
    if _control(text):
        return "holds a control character (such as NUL or a line break)"
    if text.startswith("."):
        return "starts with a dot (such names are hidden files, or '..' a parent folder)"
    if ".." in text:
        return "holds '..', which names a parent folder"
    if text != text.strip():
        return "starts or ends with a space"
    return None


class ClassName(str):
    """A class name that is safe to show and to build a folder name from.

    Refused: empty names, names over ``MAX_CLASS_NAME`` characters, path separators, NUL and other
    control characters, a leading dot, ``..`` anywhere, and spaces at either end.

    Raises:
        DataError: with the name (shortened and made printable) and what to rename.
    """

    __slots__ = ()

    def __new__(cls, value: object, where: str = "") -> "ClassName":
        if isinstance(value, ClassName):
            return value
        text = value if isinstance(value, str) else None
        if text is None:
            raise DataError(f"A class name{_where(where)} is not text ({type(value).__name__}); name each class "
                            "with letters, numbers and spaces.")
        problem = _class_problem(text)
        if problem:
            raise DataError(f"The class name {_shown(text)}{_where(where)} {problem}. Rename that class (letters, "
                            "numbers, spaces, - and _ are safe) and try again.")
        return super().__new__(cls, text)


def _where(where: str) -> str:
    return f" in {where}" if where else ""


def _shown(text: str, most: int = 60) -> str:
    """``text`` as a message may quote it: control characters escaped, long ones cut."""
    printable = "".join(c if not _control(c) else c.encode("unicode_escape").decode("ascii") for c in text)
    return "'" + (printable if len(printable) <= most else printable[:most] + "...") + "'"


def class_names(values: Iterable[object], where: str = "") -> list[ClassName]:
    """Every value as a ``ClassName`` (the first bad one raises ``DataError``)."""
    return [ClassName(v, where) for v in values]


def _slug(name: str) -> str:
    kept = "".join(c if c.isalnum() or c in " -_." else "_" for c in unicodedata.normalize("NFC", name))
    kept = kept.strip(" .") or "class"
    return f"_{kept}" if kept.split(".")[0].lower() in _RESERVED else kept


def folder_names(labels: Iterable[ClassName]) -> dict[str, str]:
    """A distinct, portable folder name for each class: letters, digits, space, ``-``, ``_`` and
    ``.`` kept, anything else ``_``; a name that two classes would share gets ``-2``, ``-3``, ..."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for label in labels:
        base = _slug(ClassName(label))
        slug, n = base, 1
        while slug.lower() in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug.lower())
        out[label] = slug
    return out


def class_folder(parent: Path, label: ClassName, slug: str | None = None) -> Path:
    """The folder for ``label`` inside ``parent`` (not created), from its slug (or ``slug``).

    Raises:
        DataError: the folder would not lie directly inside ``parent`` (it cannot, for a
            ``ClassName``; checked all the same, since a file written there is not undone).
    """
    folder = parent / (slug if slug is not None else _slug(ClassName(label)))
    if folder.resolve().parent != parent.resolve():
        raise DataError(f"The class {_shown(str(label))} cannot be stored as a folder here. Rename that class.")
    return folder


class ModelName(str):
    """A model name this app may build: a timm name (``arch`` or ``arch.tag``), a Hub repository
    (``hf-hub:org/name``), or a server folder (``local-dir:PATH``; the command line only, and
    refused by the app's own checks on a public server or from the page).

    Raises:
        ModelError: anything else, with what to write instead.
    """

    __slots__ = ()

    def __new__(cls, value: object, where: str = "") -> "ModelName":
        if isinstance(value, ModelName):
            return value
        text = value.strip() if isinstance(value, str) else ""
        ok = (0 < len(text) <= _MAX_MODEL_NAME and not _control(text)
              and (text.startswith("local-dir:") or _TIMM_NAME.fullmatch(text) or _HUB_NAME.fullmatch(text)))
        if not ok:
            shown = _shown(value) if isinstance(value, str) else type(value).__name__
            raise ModelError(f"The model name {shown}{_where(where)} is not one this app can build. Use a timm name "
                             "such as tf_efficientnet_lite0.in1k, or hf-hub:ORG/NAME for a Hugging Face Hub model.")
        return super().__new__(cls, text)

    @property
    def architecture(self) -> str | None:
        """The timm architecture (``arch`` of ``arch.tag``), or None for Hub and folder names,
        whose architecture their config decides."""
        return None if self.startswith(("hf-hub:", "local-dir:")) else self.split(".", 1)[0]


def model_name(value: object, where: str = "") -> ModelName:
    """``value`` parsed as a ``ModelName`` (``ModelError`` when it is not one)."""
    return ModelName(value, where)


def check_repo_id(repo_id: str) -> str:
    """The repo id stripped, or a UserInputError that shows the expected form."""
    repo_id = (repo_id or "").strip()
    if not _REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".", "-")):
        raise UserInputError(
            f"'{repo_id}' is not a Hugging Face repo name. Use USER/NAME, e.g. alice/my-flowers "
            "(letters, digits, '-', '_' and '.').")
    return repo_id
