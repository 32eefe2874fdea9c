"""The server's training slots and the line of users waiting for one.

Trainings (and the other long jobs that need the whole machine: exports, learning curves) wait
here rather than in the web framework's queue: there a waiting training counts against the one
queue that every prediction also needs, so a few queued trainings would refuse everyone's
predictions. Here the line has its own length, each user holds at most one place in it, and a
waiting user is told their place.
"""

from __future__ import annotations

import threading

from ..engine.errors import UserInputError

__all__ = ["TrainingSlots", "LineFullError", "AlreadyInLineError"]


class LineFullError(UserInputError):
    """Every slot is busy and the line is at its length."""


class AlreadyInLineError(UserInputError):
    """This user already has a long job running or waiting."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} cannot start while your training, export or learning curve is still running "
                         "or waiting. Wait for it to end, or press Stop.")


class TrainingSlots:
    """``slots`` jobs at once; up to ``max_waiting`` more wait their turn in arrival order.

    Args:
        slots: jobs that may run at once.
        max_waiting: jobs that may wait; one more is refused with ``LineFullError``.
    """

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = max(1, slots)
        self.max_waiting = max(0, max_waiting)
        self._running: set[str] = set()
        self._waiting: list[str] = []
        self._changed = threading.Condition()

    def join(self, key: str, what: str = "A training") -> None:
        """Take a place in the line for ``key`` (a session id).

        Raises:
            AlreadyInLineError: ``key`` already runs or waits.
            LineFullError: the line is full.
        """
        with self._changed:
            if key in self._running or key in self._waiting:
                raise AlreadyInLineError(what)
            if len(self._waiting) >= self.max_waiting and len(self._running) >= self.slots:
                raise LineFullError(f"The server is busy: {len(self._running)} training(s) running and "
                                    f"{len(self._waiting)} waiting, the most it takes. Try again in a few minutes.")
            self._waiting.append(key)
            self._changed.notify_all()

    def take(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``key``'s turn; True once it holds a slot."""
        with self._changed:
            if key in self._running:
                return True
            ready = self._changed.wait_for(
                lambda: key not in self._waiting or (len(self._running) < self.slots
                                                     and self._waiting.index(key) < self.slots - len(self._running)),
                timeout)
            if not ready or key not in self._waiting:
                return False
            self._waiting.remove(key)
            self._running.add(key)
            self._changed.notify_all()
            return True

    def ahead(self, key: str) -> int:
        """How many jobs wait before ``key`` (0 when it is next or running)."""
        with self._changed:
            return self._waiting.index(key) if key in self._waiting else 0

    def leave(self, key: str) -> None:
        """``key`` is done (or gave up waiting): free its slot or its place."""
        with self._changed:
            self._running.discard(key)
            if key in self._waiting:
                self._waiting.remove(key)
            self._changed.notify_all()

    def busy(self) -> tuple[int, int]:
        """(running, waiting) now."""
        with self._changed:
            return len(self._running), len(self._waiting)
