"""The server's sessions by browser tab: who owns each Session, and when one ends."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..engine.errors import UserInputError
from .session import Session

__all__ = ["SessionRegistry", "ServerFullError"]

_logger = logging.getLogger(__name__)


class ServerFullError(UserInputError):
    """The server has as many sessions as it takes."""


class SessionRegistry:
    """The server's sessions by browser tab (Gradio's session hash): the one owner of each Session.

    Every event looks its Session up here by the request's session hash, so the Session an event
    works on, the one a closed tab's unload ends, and the one an expiry ends are the same object.
    (A ``gr.State`` with a factory as its value cannot promise that: Gradio then makes one Session
    for the first event that reads the state and another in its own page-load event, keeps
    whichever is written last, and the other, registered or not, is dropped.) References are
    strong: a Session ends only through ``close``, ``discard`` or ``expire_idle``, never because
    something else forgot it.

    Args:
        factory: makes a new Session.
        idle_s: a session with no event for this long ends (unless it is training).
        max_sessions: sessions at once; a new one beyond is refused (``ServerFullError``), so a
            flood of new sessions never ends anyone else's.
    """

    def __init__(self, factory: Callable[[], Session], idle_s: float = 7200.0, max_sessions: int = 1000) -> None:
        self._factory = factory
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._last_used: dict[str, float] = {}
        self._last_sweep = time.monotonic()
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        """The Session of ``key``, made on its first event; counts as activity. Sessions idle for
        longer than ``idle_s`` are ended on the way (at most once a minute).

        Raises:
            ServerFullError: ``key`` is new and the server has ``max_sessions`` sessions."""
        now = time.monotonic()
        if key not in self._sessions and len(self) >= self.max_sessions:
            self.expire_idle(now)
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.closed:
                if session is None and len(self._sessions) >= self.max_sessions:
                    raise ServerFullError(f"This server has as many users as it takes ({self.max_sessions}). "
                                          "Try again in a few minutes.")
                session = self._sessions[key] = self._factory()
                _logger.info("Session %s started", session.id)
            self._last_used[key] = now
        if now - self._last_sweep >= min(60.0, self.idle_s):
            self.expire_idle(now)  # after the touch: this event's own session is not idle
        return session

    def expire_idle(self, now: float | None = None) -> int:
        """End the sessions with no event for ``idle_s`` seconds and no training running (a
        client that never says goodbye, such as an API script, ends this way). Returns how many."""
        now = time.monotonic() if now is None else now
        self._last_sweep = now
        with self._lock:
            idle = [k for k, s in self._sessions.items()
                    if now - self._last_used.get(k, now) > self.idle_s and not s.training.locked()]
            ended = [self._pop(k) for k in idle]
        for session in ended:
            session.close()
        if ended:
            _logger.info("Ended %d idle session(s)", len(ended))
        return len(ended)

    def _pop(self, key: str) -> Session | None:
        self._last_used.pop(key, None)
        return self._sessions.pop(key, None)

    def close(self, key: str) -> bool:
        """End the Session of ``key`` (its tab closed): stop its training, delete its files.
        False when ``key`` has no Session."""
        with self._lock:
            session = self._pop(key)
        if session is None:
            return False
        session.close()
        return True

    def discard(self, session: Session) -> None:
        """Forget ``session`` wherever it is registered and close it (Gradio expired its state)."""
        with self._lock:
            for key in [k for k, v in self._sessions.items() if v is session]:
                self._pop(key)
        session.close()

    def keys(self) -> list[str]:
        """The session hashes that have a live Session."""
        with self._lock:
            return list(self._sessions)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
