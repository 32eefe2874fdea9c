"""What a step's events may use of the server they run in.

The steps (data_step.py ... sort_step.py) get a ``StepContext``, never the ``Server``: the limits,
the training line, the memory budget, the device models answer on, and the function that runs a
training. What one step needs of another it takes as a value (a function given to its
constructor, or a pure view function it imports), so each step's module says what it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from ..settings import Limits
from .memory import MemoryGate
from .slots import TrainingSlots

if TYPE_CHECKING:
    from ..engine.progress import ProgressEvent

__all__ = ["StepContext"]


@dataclass(frozen=True)
class StepContext:
    """The server's shared parts that the steps use.

    Attributes:
        limits: the server's limits.
        slots: the training line (one slot per training at once).
        memory: the server's memory budget; decoding reserves from it first.
        device: where trained models answer ("auto", or "cpu" on a ZeroGPU Space).
        fit: runs a training for a session (here, or on a lent GPU): ``fit(session, config,
            dataset=None)`` yields ``training.fit``'s progress events.
        weights_cache: the folder where the built-in models' weights are converted once.
    """

    limits: Limits
    slots: TrainingSlots
    memory: MemoryGate
    device: str
    fit: Callable[..., Iterator[ProgressEvent]]
    weights_cache: str | None = None
