"""What the command line writes: results as JSON on stdout, messages on stderr, and its exit code
for bad input (shared by cli.py and cli_publish.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["EXIT_USAGE", "err", "out"]

EXIT_USAGE = 2  # bad input: a one-line reason on stderr


def err(message: str) -> None:
    """One message on stderr."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()


def out(obj) -> None:
    """One result as a JSON line on stdout (paths as strings)."""
    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
