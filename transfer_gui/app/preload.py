"""``preload_engine``: the engine loaded in the background once the page is served."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

__all__ = ["preload_engine"]

_logger = logging.getLogger(__name__)


def preload_engine(keep_malloc: bool = False) -> threading.Thread:
    """Import the engine (torch, timm and our modules built on them) in a background thread.

    The app calls this once its page is served, so the first click does not wait ~7 s for the
    imports. A handler that runs before it finishes waits for the same modules at its own import.
    It also tunes the process (``speed.tune_process``; ``keep_malloc`` from the settings).
    Our modules import each other without cycles, so the two threads cannot deadlock on them.
    """
    def load() -> None:
        start = time.perf_counter()
        from ..engine import batch, bundle, comparison, data, explain, export, inference  # noqa: F401
        from ..engine import corrections, label_check, learning_curve, workflow  # noqa: F401
        from ..engine.speed import tune_process

        tune_process(keep_malloc)  # the allocator's arenas are capped before request threads make their own
        import torch

        if Path("/dev/nvidia0").exists() and not torch.cuda.is_available():
            # requirements.txt takes PyTorch's CPU wheels, right for a CPU Space only
            _logger.warning("This machine has an NVIDIA GPU but torch %s cannot use it: delete the "
                            "--extra-index-url line of requirements.txt and rebuild", torch.__version__)
        import sklearn.manifold  # noqa: F401  (the map's t-SNE: 2 s to import, better before the first map)

        _logger.info("Engine loaded in %.1f s", time.perf_counter() - start)

    thread = threading.Thread(target=load, name="tls-preload-engine", daemon=True)
    thread.start()
    return thread
