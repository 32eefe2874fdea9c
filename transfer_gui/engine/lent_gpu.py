"""Training on a GPU lent for one call, in another process (Hugging Face ZeroGPU).

ZeroGPU's ``spaces.GPU`` runs the function it wraps in a process that holds the GPU for that call
only, passing the arguments and every value the function yields by pickling them. So the function
is one of plain data: the image set (file paths and labels), the training configuration, a file
whose existence means Stop, and the call's seconds. It yields ``fit``'s progress events, the last
with the trained model on the CPU; nothing of a user's session crosses the process boundary, and
the session's feature cache stays behind (a lent GPU extracts features again each call).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Iterator

from .config import TrainConfig
from .data import ImageDataset
from .progress import ProgressEvent

__all__ = ["fit_on_lent_gpu", "STOP_POLL_S"]

STOP_POLL_S = 0.5  # how often the stop file and the clock are looked at


def fit_on_lent_gpu(dataset: ImageDataset, config: TrainConfig, stop_file: str, seconds: float
                    ) -> Iterator[ProgressEvent]:
    """``training.fit`` for a lent GPU: ends between batches, keeping the best model so far, once
    ``stop_file`` exists (the server writes it when the user presses Stop) or ``seconds`` have
    passed (the lent GPU's time for one call, less what saving the result needs).

    Yields:
        ``fit``'s ProgressEvents; the last carries the TrainResult (its model on the CPU).
    """
    from .speed import tune_process
    from .training import fit

    tune_process()  # the GPU's process is an entry point of its own (threads, cuDNN autotuning)
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def watch() -> None:
        while not stop.wait(STOP_POLL_S):
            if os.path.exists(stop_file) or time.monotonic() > deadline:
                stop.set()

    watcher = threading.Thread(target=watch, name="tls-lent-gpu-stop", daemon=True)
    watcher.start()
    try:
        yield from fit(dataset, config, stop=stop)
    finally:
        stop.set()
        watcher.join()
