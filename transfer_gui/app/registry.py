"""The server's sessions by browser tab: who owns each Session, and when one ends.

A session ends only when nothing of its user can be lost, or after a long wait:

* its page went away (Gradio's unload: the heartbeat connection closed) and did not come back
  within the grace period (a phone switching apps, a train in a tunnel, a 2-second network drop
  must not cost anyone their model);
* it holds nothing (no images, model or pile) and had no event for a few minutes;
* it had no event for the idle limit (API clients never close a tab).

A running training keeps its session alive. Sessions are made by events that run, never by a
queue join's admission check; each client address holds a limited number at once, and when that
number, or the server's, is reached, the oldest empty session makes room before anyone is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..engine.errors import UserInputError
from .session import Session

__all__ = ["SessionRegistry", "ServerFullError", "TooManySessionsError"]

_logger = logging.getLogger(__name__)


class ServerFullError(UserInputError):
    """The server has as many sessions as it takes."""


class TooManySessionsError(UserInputError):
    """One client address has as many sessions as it may."""


class SessionRegistry:
    """The server's sessions by browser tab (Gradio's session hash): the one owner of each Session.

    Every event looks its Session up here by the request's session hash, so the Session an event
    works on and the one an expiry ends are the same object. References are strong: a Session
    ends only through ``close``, ``discard`` or ``expire_idle``, never because something else
    forgot it.

    Args:
        factory: makes a new Session.
        idle_s: a session with no event for this long ends (unless it is training).
        max_sessions: sessions at once; beyond it the oldest empty one makes room, else a new
            one is refused (``ServerFullError``), so a flood never ends anyone's work.
        grace_s: how long a session whose page went away waits for it to come back.
        empty_idle_s: how long a session holding nothing lives without an event.
        per_client: sessions one client address may hold at once.
    """

    def __init__(self, factory: Callable[[], Session], idle_s: float = 7200.0, max_sessions: int = 1000,
                 grace_s: float = 900.0, empty_idle_s: float = 300.0, per_client: int = 40) -> None:
        self._factory = factory
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.grace_s = grace_s
        self.empty_idle_s = empty_idle_s
        self.per_client = per_client
        self._sessions: dict[str, Session] = {}
        self._last_used: dict[str, float] = {}
        self._gone_since: dict[str, float] = {}  # the page went away at (monotonic seconds)
        self._client: dict[str, str] = {}  # the address that made each session
        self._last_sweep = time.monotonic()
        self._lock = threading.Lock()

    @property
    def sweep_every_s(self) -> float:
        """How often ``expire_idle`` should run for the limits to hold (a quarter of the shortest)."""
        return max(0.5, min(60.0, self.grace_s / 4, self.empty_idle_s / 4, self.idle_s / 4))

    def get(self, key: str, client: str = "") -> Session:
        """The Session of ``key``, made on its first event; counts as activity, and a page that
        went away is back. Expired sessions are ended on the way (at most every ``sweep_every_s``).

        Args:
            key: the tab's session hash.
            client: the client's address (sessions per address are capped; "" is one address).

        Raises:
            TooManySessionsError: ``key`` is new and ``client`` holds ``per_client`` sessions
                that are not empty.
            ServerFullError: ``key`` is new and the server holds ``max_sessions`` that are not empty.
        """
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_every_s:
            self.expire_idle(now, keep=key)
        ended: list[Session] = []
        try:
            with self._lock:
                session = self._sessions.get(key)
                if session is None or session.closed:
                    ended = self._make_room(client)
                    session = self._sessions[key] = self._factory()
                    self._client[key] = client
                    _logger.info("Session %s started", session.id)
                self._last_used[key] = now
                self._gone_since.pop(key, None)
        finally:
            for old in ended:
                old.close()
        return session

    def _make_room(self, client: str) -> list[Session]:
        """Room for one more session of ``client``: the oldest empty sessions give way (of that
        client when it is at its cap, of anyone when the server is). Call with the lock held."""
        ended = []
        mine = [k for k, c in self._client.items() if c == client]
        if len(mine) >= self.per_client:
            ended += self._evict_empty(mine, len(mine) - self.per_client + 1)
            if len(mine) - len(ended) >= self.per_client:
                raise TooManySessionsError(
                    f"Your address already has {self.per_client} sessions open on this server, the most it "
                    "allows. Close some tabs or use the one you have, then try again.")
        if len(self._sessions) >= self.max_sessions:
            ended += self._evict_empty(list(self._sessions), len(self._sessions) - self.max_sessions + 1)
            if len(self._sessions) >= self.max_sessions:
                raise ServerFullError(f"This server has as many users as it takes ({self.max_sessions}). "
                                      "Try again in a few minutes.")
        return ended

    def _evict_empty(self, keys: list[str], n: int) -> list[Session]:
        empty = sorted((k for k in keys if k in self._sessions and self._sessions[k].is_empty),
                       key=lambda k: self._last_used.get(k, 0.0))
        return [s for s in (self._pop(k) for k in empty[:n]) if s is not None]

    def find(self, key: str) -> Session | None:
        """The live Session of ``key``, or None; makes nothing and counts as no activity (a queue
        join's admission check must not create sessions for any hash sent to it)."""
        with self._lock:
            session = self._sessions.get(key)
        return session if session is not None and not session.closed else None

    def went_away(self, key: str) -> bool:
        """The page of ``key`` went away (Gradio's unload): its session waits ``grace_s`` for it
        to come back. False when ``key`` has no Session."""
        with self._lock:
            if key not in self._sessions:
                return False
            self._gone_since.setdefault(key, time.monotonic())
        return True

    def forgotten(self, session: Session) -> None:
        """Gradio expired the page's copy of ``session``: treated as the page going away."""
        with self._lock:
            keys = [k for k, v in self._sessions.items() if v is session]
        for key in keys:
            self.went_away(key)

    def expire_idle(self, now: float | None = None, keep: str | None = None) -> int:
        """End every session past its time (see the module's docstring) and not training; returns
        how many. ``keep``: a key whose event is arriving now (never ended on its way in)."""
        now = time.monotonic() if now is None else now
        self._last_sweep = now
        with self._lock:
            ended = [self._pop(k) for k in [k for k, s in self._sessions.items()
                                            if k != keep and not s.training.locked() and self._expired(k, s, now)]]
        for session in ended:
            session.close()
        if ended:
            _logger.info("Ended %d session(s)", len(ended))
        return len(ended)

    def _expired(self, key: str, session: Session, now: float) -> bool:
        idle = now - self._last_used.get(key, now)
        gone = key in self._gone_since and now - self._gone_since[key] > self.grace_s
        return gone or idle > self.idle_s or (idle > self.empty_idle_s and session.is_empty)

    def _pop(self, key: str) -> Session | None:
        self._last_used.pop(key, None)
        self._gone_since.pop(key, None)
        self._client.pop(key, None)
        return self._sessions.pop(key, None)

    def close(self, key: str) -> bool:
        """End the Session of ``key`` now: stop its training, delete its files. False when ``key``
        has no Session."""
        with self._lock:
            session = self._pop(key)
        if session is None:
            return False
        session.close()
        return True

    def discard(self, session: Session) -> None:
        """Forget ``session`` wherever it is registered and close it now."""
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
