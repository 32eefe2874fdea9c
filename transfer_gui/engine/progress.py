"""What a training run reports and remembers: phases, history rows, progress events, run state.

Progress leaves ``fit`` through one narrow channel, ``ProgressEvent`` values; finished epochs
(and probe settings) are ``EpochRecord`` rows of the run's history. ``Run`` is the state of one
``fit`` call, shared by the policies that train within it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, Split
from .speed import FastPaths

if TYPE_CHECKING:
    from .features import FeatureCache
    from .training import TrainResult

__all__ = ["Phase", "EpochRecord", "ProgressEvent", "Run"]

# load: creating the model; features: the frozen backbone reads every image; head: the linear
# probe's settings; finetune: the whole network, judged on held-out images; refit: fine-tuning
# again on every image; done: the last event, carrying the result.
Phase = Literal["load", "features", "head", "finetune", "refit", "done"]


@dataclass(frozen=True)
class EpochRecord:
    """One row of a run's history: a probe setting tried, or a finished epoch.

    Attributes:
        phase: "head", "finetune" or "refit".
        epoch: 1-based position within the phase.
        train_loss: mean training loss of the epoch (the probe's on all its images).
        val_loss, val_acc: on the images held out from it, or None (a refit holds none out).
        elapsed_s: seconds since the run started.
        penalty: the probe's L2 penalty (phase "head" only).
    """

    phase: Phase
    epoch: int
    train_loss: float
    val_loss: float | None
    val_acc: float | None
    elapsed_s: float
    penalty: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready form (bundles and the CLI); ``penalty`` only for probe settings."""
        row = dataclasses.asdict(self)
        if self.penalty is None:
            del row["penalty"]
        return row


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        phase: what the run is doing (see ``Phase``).
        epoch: 1-based epoch within the phase (0 before the first epoch ends).
        epochs: epochs planned for the phase.
        step: batches done within the epoch (or images done, in "features").
        steps: batches per epoch (or images in all, in "features").
        train_loss: mean training loss so far in this epoch, or None.
        val_loss: validation loss at the end of the epoch, or None mid-epoch.
        val_acc: validation accuracy at the end of the epoch, or None mid-epoch.
        elapsed_s: seconds since ``fit`` started.
        eta_s: estimated seconds left in the whole run, or None when unknown.
        is_best: this epoch has the lowest validation loss so far (its weights are kept).
        message: a one-line status for people.
        result: the TrainResult, only on the final "done" event.
    """

    phase: Phase
    epoch: int
    epochs: int
    step: int
    steps: int
    train_loss: float | None
    val_loss: float | None
    val_acc: float | None
    elapsed_s: float
    eta_s: float | None
    is_best: bool
    message: str
    result: "TrainResult | None" = None


class Run:
    """State of one ``fit`` call; exists only inside it (no shared state between users)."""

    def __init__(self, dataset: ImageDataset, config: TrainConfig, split: Split | None,
                 stop: threading.Event | None, cache: FeatureCache | None, paths: FastPaths):
        self.dataset, self.config, self.split = dataset, config, split
        self.stop = stop or threading.Event()
        self.cache = cache
        self.t0 = time.perf_counter()
        self.history: list[EpochRecord] = []
        self.best: EpochRecord | None = None
        self.best_state: dict | None = None
        self.stopped = False
        self.paths = paths
        self.targets = torch.tensor(dataset.targets)
        self.kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rows, weights, biases

    def keep_rows(self, head: nn.Linear, rows: tuple[int, ...]) -> None:
        """Remember head rows that training must leave as they are (a continued model's classes)."""
        if rows:
            index = torch.tensor(rows, device=head.weight.device)
            self.kept = (index, head.weight.detach()[index].clone(), head.bias.detach()[index].clone())

    def restore_rows(self, head: nn.Linear) -> None:
        """Put the kept rows back after an optimizer step (AdamW's decay would move them too)."""
        if self.kept is not None:
            index, weight, bias = self.kept
            with torch.no_grad():
                head.weight[index] = weight.to(head.weight.dtype)
                head.bias[index] = bias.to(head.bias.dtype)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    def event(self, phase: Phase, epoch: int, epochs: int, step: int, steps: int, *,
              train_loss=None, val_loss=None, val_acc=None, eta_s=None, is_best=False,
              message: str = "") -> ProgressEvent:
        """A progress report of this run, its elapsed time filled in."""
        return ProgressEvent(phase, epoch, epochs, step, steps, train_loss, val_loss, val_acc,
                             self.elapsed(), eta_s, is_best, message)

    def add_row(self, phase: Phase, epoch: int, train_loss: float, val_loss: float | None, val_acc: float | None,
                penalty: float | None = None) -> EpochRecord:
        """Add a finished epoch (or a probe setting) to the history."""
        row = EpochRecord(phase, epoch, train_loss, val_loss, val_acc, round(self.elapsed(), 3), penalty)
        self.history.append(row)
        return row

    def snapshot(self, model: nn.Module) -> None:
        """Keep a copy of the model's current weights as the ones to return."""
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
