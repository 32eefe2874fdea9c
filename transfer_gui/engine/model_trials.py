""""Try every built-in model": Quick with each backbone on the user's images, best first.

The built-in models are always tried; the catalog's other models join when their weights can be
had (the Hub is reachable, or they were downloaded before), smallest first, within the server's
parameter cap (``models_to_try``).

Each model is trained the way Quick trains it (its head cross-validated on every image, see
policies.quick), so the accuracy each one gets is the same estimate the Results step shows for
it, with its interval; the table adds its expected calibration error on those out-of-fold answers,
the seconds its Quick took here, its size, and how long it takes to answer one picture here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from .catalog import CATALOG, get_info
from .config import TrainConfig
from .data import ImageDataset
from .errors import NothingTrainedError
from .features import FeatureCache

__all__ = ["ModelTrial", "models_to_try", "try_models", "ranked"]

_TIMED_PICTURES = 8  # pictures answered one at a time to time a prediction


@dataclass(frozen=True)
class ModelTrial:
    """How one model did on the user's images (Quick, cross-validated).

    Attributes:
        model: the timm name; title: its short human name.
        accuracy, low, high: the estimated share right on new pictures like these, and its interval.
        ece: expected calibration error of its checked (out-of-fold) answers.
        seconds: its Quick here, model load and reading the images included.
        params_m: parameters in millions; input_px: the side of the pictures it sees.
        ms_per_picture: milliseconds to answer one picture here (decoding included).
    """

    model: str
    title: str
    accuracy: float
    low: float
    high: float
    ece: float
    seconds: float
    params_m: float
    input_px: int
    ms_per_picture: float

    def to_dict(self) -> dict:
        """JSON-ready form (the command line's ``compare-models``)."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}


def ranked(trials: Sequence[ModelTrial]) -> list[ModelTrial]:
    """Best first: the highest estimated accuracy (the figure the Results step shows); then the
    better calibrated; then the faster."""
    return sorted(trials, key=lambda t: (-round(t.accuracy, 3), round(t.ece, 3), t.seconds))


def models_to_try(online: bool, max_params_m: float | None = None) -> list[str]:
    """The built-in models, then the catalog's others whose weights can be had here (``online``:
    the Hub is reachable; otherwise only those downloaded before), smallest first, none over
    ``max_params_m`` million parameters."""
    from .weights import hub_cached_file

    names = [m.name for m in CATALOG if m.builtin]
    others = sorted((m for m in CATALOG if not m.builtin), key=lambda m: m.params_m)
    for m in others:
        if (max_params_m is None or m.params_m <= max_params_m) and (online or hub_cached_file(m.name) is not None):
            names.append(m.name)
    return names


def try_models(dataset: ImageDataset, models: Sequence[str] | None = None, *, seed: int = 0,
               weights_cache: str | None = None, cache: FeatureCache | None = None,
               stop: threading.Event | None = None) -> Iterator[tuple[str, ModelTrial | None]]:
    """Quick with each of ``models`` (default: every built-in model, see ``models_to_try``) on ``dataset``.

    Yields:
        (model name, None) as each model starts, then (model name, its ModelTrial) when it ends.
        A set ``stop`` ends the trials between two models.
    """
    from .workflow import train_model

    names = list(models) if models else [m.name for m in CATALOG if m.builtin]
    for name in names:
        if stop is not None and stop.is_set():
            return
        yield name, None
        start = time.perf_counter()
        try:
            trained = train_model(dataset, TrainConfig(model=name, mode="quick", seed=seed,
                                                       weights_cache=weights_cache), stop=stop, cache=cache)
        except NothingTrainedError:  # stopped while this model read the images: the others stand
            return
        seconds = time.perf_counter() - start
        pictures = [item.path for item in dataset.items[:_TIMED_PICTURES]]
        for _ in range(3):  # warming up: the third single answer builds the frozen graph (inference.py)
            trained.predictor.predict(pictures[0])
        start = time.perf_counter()
        for picture in pictures:
            trained.predictor.predict(picture)
        ms = (time.perf_counter() - start) * 1000 / max(1, len(pictures))
        info = get_info(name)
        est = trained.estimate
        size = int(trained.result.data_config["input_size"][-1])
        yield name, ModelTrial(name, info.title if info else name, est.accuracy, est.low, est.high, est.ece, seconds,
                               info.params_m if info else float("nan"), size, ms)
