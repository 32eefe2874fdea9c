"""``Wire``: how a tab connects its components' events to its step's functions.

Every event a tab wires goes through here, so each gets the same treatment: the session comes
from the server's registry (``Server.event``), a queued event passes admission before it joins the
queue all users share (Gradio's ``validator``: counted events hold one of their session's few
places, the others are only checked), and heavy events share the server's one group of heavy work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gradio as gr

from .server import Server
from .views import heavy_group

__all__ = ["Wire"]


@dataclass(frozen=True)
class Wire:
    """The page's server and its per-tab state, for wiring events.

    Attributes:
        server: the server whose steps' functions the events run.
        state: the page's copy of its Session (the first input of every session event).
    """

    server: Server
    state: gr.State

    def event(self, trigger: Callable, fn: Callable, inputs: Sequence[Any] = (), outputs: Any = None, *,
              counted: bool = True, heavy: bool = False, **options: Any) -> Any:
        """``trigger(fn)`` with the session as ``fn``'s first argument (``Server.event``): the
        page's state comes before ``inputs``. ``counted``/``heavy`` as in ``Server.event``; heavy
        events also join the heavy group. Returns Gradio's dependency (for ``.then``/``.success``)."""
        if heavy:
            options = {**heavy_group(self.server.limits.heavy_jobs), **options}
        return self._on(trigger, self.server.event(fn, counted=counted, heavy=heavy), [self.state, *inputs],
                        outputs, counted, options)

    def plain(self, trigger: Callable, fn: Callable, inputs: Sequence[Any] | None, outputs: Any = None,
              **options: Any) -> Any:
        """``trigger(fn)`` for a function that needs no session of the registry (a description, a
        click on a picture): checked at admission, not counted."""
        return self._on(trigger, fn, inputs, outputs, False, options)

    def _on(self, trigger: Callable, fn: Callable, inputs: Any, outputs: Any, counted: bool,
            options: dict[str, Any]) -> Any:
        if options.get("queue", True):
            options["validator"] = self.server.admit if counted else self.server.admit_uncounted
        return trigger(fn, inputs, outputs, **options)
