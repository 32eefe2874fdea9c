"""Step 2's "Try every built-in model": Quick with each built-in backbone on the images of step 1
(and, where the Hub is reachable, the catalog's other models within the server's parameter cap),
in the training line, shown as a table best first; one click then picks the winner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import gradio as gr
import pandas as pd

from ..engine.errors import UserInputError
from .jobs import Budget, done, waited
from .session import Session

if TYPE_CHECKING:
    from ..engine.model_trials import ModelTrial
    from .context import StepContext

__all__ = ["TrialsStep", "TrialsView", "TRIAL_COLUMNS"]

TRIAL_COLUMNS = ["model", "about right", "range", "calibration error", "seconds here", "million parameters",
                 "ms per picture"]


class TrialsView(NamedTuple):
    """The trials while they run, and their table at the end."""

    status: str
    table: Any
    use_button: Any
    session: Session


def _table(trials: list[ModelTrial]) -> pd.DataFrame:
    return pd.DataFrame([{"model": t.title, "about right": f"{t.accuracy:.0%}", "range": f"{t.low:.0%}-{t.high:.0%}",
                          "calibration error": round(t.ece, 3), "seconds here": round(t.seconds, 1),
                          "million parameters": t.params_m, "ms per picture": round(t.ms_per_picture)}
                         for t in trials], columns=TRIAL_COLUMNS)


class TrialsStep:
    """Step 2's "try every built-in model" and "use the best one"."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    def try_models(self, session: Session) -> Iterator[TrialsView]:
        """Quick with each built-in model on the images of step 1, each cross-validated, the table
        ranked by the estimate the Results step would show (see ``engine.model_trials``)."""
        from ..engine.model_trials import models_to_try, ranked, try_models
        from ..engine.weights import hub_reachable

        if session.dataset is None:
            raise UserInputError("Load some images first (step 1).")
        hidden = gr.Button(visible=False)
        if not (yield from waited(self.ctx, session, "Trying the models",
                                  lambda line: TrialsView(line, gr.skip(), hidden, session))):
            yield TrialsView("Stopped before it started.", gr.skip(), hidden, session)
            return
        trials: list[ModelTrial] = []
        cap = self.ctx.limits.model_params_m or None
        names = models_to_try(hub_reachable(), cap)
        n = len(names)
        try:
            clock = Budget(self.ctx.limits.train_seconds, session)
            for name, trial in try_models(session.dataset, names, weights_cache=self.ctx.weights_cache,
                                          cache=session.cache, stop=session.stop):
                clock.check()
                if trial is None:
                    yield TrialsView(f"**Trying {name}** ({len(trials) + 1} of {n}: a Quick training, "
                                     "cross-validated)...", _table(ranked(trials)), hidden, session)
                else:
                    trials.append(trial)
        finally:
            done(self.ctx, session)
        if not trials:
            yield TrialsView("Stopped before the first model was tried.", gr.skip(), hidden, session)
            return
        session.model_trials = ranked(trials)
        best = session.model_trials[0]
        yield TrialsView(f"**{best.title} did best on your pictures**: about {best.accuracy:.0%} right "
                         f"({best.low:.0%}-{best.high:.0%}), each model judged the way the Results step judges "
                         "one. Overlapping ranges mean the difference may be luck.", _table(session.model_trials),
                         gr.Button(f"Use {best.title}", visible=True), session)

    @staticmethod
    def use_best(session: Session) -> dict:
        """Pick the model that did best for the next training (an update of step 2's list)."""
        if not session.model_trials:
            raise UserInputError("Try the models first.")
        return gr.update(value=session.model_trials[0].model)
