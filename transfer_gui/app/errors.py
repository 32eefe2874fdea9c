"""How an error a user can fix reaches the page: one place, ``Server.event``.

The engine and the steps raise ``UserInputError`` (engine/errors.py) with a message that says what
to do. ``Server.event``, which wraps every event, turns it into ``gr.Error`` with ``shown`` (the
page shows the message; no traceback in the log, it is not a bug), and keeps it on the session for
the events marked ``remembered``. Nothing else is caught, so a bug keeps its traceback in the
server log while the page shows only a generic error. The command line turns the same errors into
a message and its exit code (cli.main).
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from ..engine.errors import UserInputError, without_paths

__all__ = ["shown", "remembered", "refuse_while_training"]


def shown(exc: UserInputError) -> gr.Error:
    """``exc`` as the page shows it."""
    return gr.Error(without_paths(str(exc)), print_exception=False)


def remembered(fn: Callable) -> Callable:
    """Mark an event whose error the session keeps as ``session.last_error`` (a training's status
    line shows it after the run failed)."""
    fn.remembers_errors = True
    return fn


def refuse_while_training(session, what: str) -> None:
    """Data and models may not change under a running job: it would train or measure on files
    that are gone, or on a different image set than its split.

    Raises:
        UserInputError: a job of this session is running.
    """
    if session.training.locked():
        raise UserInputError(f"{what} has to wait: a training, export or learning curve is running on the current "
                             "images. Press Stop and wait for it to end, then try again.")
