"""The server's memory budget: heavy work reserves what it may hold before it decodes anything.

A picture is small on disk and large once decoded (an 89-megapixel PNG of 0.3 MB is 268 MB of
pixels), so what a request will cost is only known from limits, not from its upload. Each heavy
event reserves the most it can hold at once; ``MemoryGate.reserve`` lets it start when the process's
resident memory plus what is already reserved plus its own reservation fits the budget, waits a
little for room, and otherwise refuses with a message that says to try again. The process's own
resident memory is read each time, so trainings, models held by sessions and Gradio's own copies
count too, without each of them having to reserve.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from typing import Callable, Iterator

from ..engine.errors import UserInputError

__all__ = ["MemoryGate", "ServerBusyError", "resident_bytes", "release_free_memory", "picture_bytes"]

_logger = logging.getLogger(__name__)

# Reservations this large give what they freed back to the system when they end: every heavy
# event (a batch, a zip, heat maps) and a picture of 22 megapixels or more; a 12-megapixel photo's
# 0.2 GB is left to the allocator's reuse.
_GIVE_BACK_AFTER = 256 * 2**20

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ServerBusyError(UserInputError):
    """The server has no memory to spare for this request now."""


def release_free_memory() -> None:
    """Ask the C allocator to give the system back the memory it keeps freed (glibc's
    ``malloc_trim``; elsewhere nothing). The allocator keeps freed blocks for reuse (engine/speed.py
    tunes it so), which counts as resident memory though nothing uses it."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where the system does not say: only the
    reservations count there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGate:
    """Reservations against one process-wide memory budget.

    Args:
        budget_bytes: resident memory the process may reach with every reservation counted
            (0 = no budget: reservations are granted at once).
        wait_s: how long a reservation waits for room before it is refused.
        resident: reads the process's resident bytes (``resident_bytes``).
        release: gives the allocator's freed memory back to the system (``release_free_memory``).
    """

    def __init__(self, budget_bytes: int, wait_s: float = 30.0, resident: Callable[[], int] = resident_bytes,
                 release: Callable[[], None] = release_free_memory):
        self.budget = budget_bytes
        self.wait_s = wait_s
        self._resident = resident
        self._release = release
        self._released_at = -1e9
        self._reserved = 0
        self._changed = threading.Condition()

    @property
    def reserved(self) -> int:
        """Bytes reserved by work that is running now."""
        return self._reserved

    def _fits(self, nbytes: int) -> bool:
        if self._resident() + self._reserved + nbytes <= self.budget:
            return True
        # Before waiting, what the allocator keeps freed goes back (at most once a second: a trim
        # walks every arena).
        if time.monotonic() - self._released_at > 1.0:
            self._release()
            self._released_at = time.monotonic()
            return self._resident() + self._reserved + nbytes <= self.budget
        return False

    @contextlib.contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget while the block runs.

        Waits up to ``wait_s`` for room (a reservation ending, or memory given back), polling the
        resident size twice a second because memory freed elsewhere sends no signal.

        Raises:
            ServerBusyError: no room came in time, or ``nbytes`` alone is more than the budget.
        """
        if self.budget <= 0 or nbytes <= 0:
            yield
            return
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while nbytes > self.budget or not self._fits(nbytes):
                left = deadline - time.monotonic()
                if nbytes > self.budget or left <= 0:
                    used = self._resident() + self._reserved
                    _logger.warning("Memory budget: refused %s (%.0f MB asked, %.0f of %.0f MB in use)", what,
                                    nbytes / 2**20, used / 2**20, self.budget / 2**20)
                    raise ServerBusyError(
                        f"The server is short of memory right now ({used / 2**30:.1f} of {self.budget / 2**30:.1f} "
                        f"GB in use by everyone's work, and {what} may take {nbytes / 2**30:.1f} GB); try again "
                        "in a minute.")
                self._changed.wait(min(0.5, left))
            self._reserved += nbytes
        try:
            yield
        finally:
            if nbytes >= _GIVE_BACK_AFTER:
                # What a large request freed goes back to the system now, not kept by the allocator
                # for reuse that a server's next request may never make.
                self._release()
            with self._changed:
                self._reserved -= nbytes
                self._changed.notify_all()


# What answering one picture holds beside its pixels: the model's activations for one input and
# the heat map's (measured: 0.9 GB peak for the whole CLI process with a built-in model, most of it
# the libraries).
_ONE_PICTURE_WORK = 128 * 2**20


def picture_bytes(path: str | os.PathLike | None) -> int:
    """What answering the picture at ``path`` may hold at once: its decoded pixels twice (the
    decode and the RGB picture made from it) and the model's work. Read from the file's header; 0
    for what is not a readable picture (the decoder then says why)."""
    from PIL import Image

    from ..engine.images import IMAGE_FORMATS, decoded_bytes

    if path is None:
        return 0
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            return 2 * decoded_bytes(im) + _ONE_PICTURE_WORK
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return 0
