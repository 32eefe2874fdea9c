"""Errors a user can cause and fix.

Every engine error that a person can act on is a ``UserInputError``: its message says what went
wrong and what to do. The UI turns these (and only these) into ``gr.Error``; the CLI turns them into
exit code 2 with a one-line reason. Anything else is a bug and keeps its traceback.
"""

import re

__all__ = ["UserInputError", "DataError", "ArchiveError", "ModelError", "WeightsUnavailableError",
           "TrainingFailedError", "NothingTrainedError", "without_paths"]

# An absolute path (POSIX or Windows) inside a message: two or more parts, the last kept. Not
# inside a URL (after ':' or '/') or a relative path (after a word character).
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\:,;()\[\]]+[/\\])+([^\s'\"/\\:,;()\[\]]*)")


def without_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part: messages that quote an exception
    (a file gone, a failed export) must not show users, or a published model card, where the
    server keeps its files."""
    return _PATH.sub(lambda m: m.group(1) or "...", text)


class UserInputError(Exception):
    """Base class: the input was wrong or unusable, and the message says how to fix it."""


class DataError(UserInputError):
    """The image set cannot be used (too few classes or images, unreadable layout)."""


class ArchiveError(UserInputError):
    """An uploaded archive is not a usable zip (wrong format, encrypted, too large, unsafe)."""


class ModelError(UserInputError):
    """The model name, weights file or saved bundle cannot be used."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights need the internet and it cannot be reached."""


class NothingTrainedError(UserInputError):
    """A training was stopped before any model was trained: there is nothing to keep."""


class TrainingFailedError(UserInputError):
    """Training broke off (an unreadable image, out of memory, ...) before any epoch finished, so
    there is no model to keep. The message names the cause."""
