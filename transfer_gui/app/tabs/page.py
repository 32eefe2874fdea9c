"""``Page``: the built tabs together, so that a tab can wire events that update another's."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..wiring import Wire
from .data import DataTab
from .download import DownloadTab
from .model import ModelTab
from .results import ResultsTab
from .sort import SortTab
from .test import TestTab
from .train import TrainTab

__all__ = ["Page"]


@dataclass(frozen=True)
class Page:
    """The page's tabs, its wiring and its long jobs' line.

    Attributes:
        demo: the Blocks being built.
        wire: the server and the page's state, for wiring events.
        slots: long jobs Gradio lets in at once (the server's running and waiting trainings).
        data, model, train, results, test, download, sort: the tabs of steps 1-7.
    """

    demo: gr.Blocks
    wire: Wire
    slots: int
    data: DataTab
    model: ModelTab
    train: TrainTab
    results: ResultsTab
    test: TestTab
    download: DownloadTab
    sort: SortTab

    def wire_all(self) -> None:
        """Wire every tab's events (once all tabs exist: some update another tab)."""
        for tab in (self.data, self.model, self.train, self.results, self.test, self.download, self.sort):
            tab.wire(self)
