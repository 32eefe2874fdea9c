"""Engine errors a user can fix, shown on the page: one decorator instead of a try block per event.

The engine raises ``UserInputError`` with a message that says what to do. Event functions wear
``@user_errors``, which turns it into ``gr.Error`` (the page shows the message; no traceback in
the log, it is not a bug). Nothing else is caught, so a bug keeps its traceback in the server log
while the page shows only a generic error.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import gradio as gr

from ..engine.errors import UserInputError, without_paths

__all__ = ["user_errors", "shown", "refuse_while_training"]


def shown(exc: UserInputError) -> gr.Error:
    """``exc`` as the page shows it."""
    return gr.Error(without_paths(str(exc)), print_exception=False)


def user_errors(fn: Callable | None = None, *, remember: bool = False) -> Callable:
    """Decorate an event function ``fn(self, session, ...)``: a ``UserInputError`` it raises
    reaches the page as ``gr.Error``. Generators stay generators (Gradio streams those).

    Args:
        remember: also keep the message as ``session.last_error`` (a training's status line shows
            it after the run failed).
    """
    if fn is None:
        return functools.partial(user_errors, remember=remember)

    def show(session, exc: UserInputError) -> gr.Error:
        if remember and session is not None:
            session.last_error = without_paths(str(exc))
        return shown(exc)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(self, session, *args, **kwargs):
            try:
                yield from fn(self, session, *args, **kwargs)
            except UserInputError as exc:
                raise show(session, exc) from exc
    else:
        @functools.wraps(fn)
        def wrapper(self, session, *args, **kwargs):
            try:
                return fn(self, session, *args, **kwargs)
            except UserInputError as exc:
                raise show(session, exc) from exc
    return wrapper


def refuse_while_training(session, what: str) -> None:
    """Data and models may not change under a running job: it would train or measure on files
    that are gone, or on a different image set than its split."""
    if session.training.locked():
        raise gr.Error(f"{what} has to wait: a training, export or learning curve is running on the current "
                       "images. Press Stop and wait for it to end, then try again.", print_exception=False)
