"""Frozen-backbone features: computed once per image, cached per user, shared by every probe.

Quick training, the learning curve and the comparisons all fit linear heads on the pooled
pre-logit features of the frozen pretrained backbone; ``cached_features`` computes them (split
over torchrun's processes when there are several) and keeps them in the user's ``FeatureCache``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Iterator

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageDataset
from .distributed import distributed_rank, gather_shards
from .progress import Run
from .speed import FastPaths, autocast, fast_paths
from .transforms import TorchImages, eval_transform
from .weights import LoadedModel

__all__ = ["FeatureCache", "pooled_features", "extract_features", "make_loader", "feature_key", "cached_features"]


class FeatureCache:
    """Frozen-backbone features per (model, weights, preprocessing, dataset), for one user.

    Belongs to a session (or a CLI run), never to the module: features of one user's images must
    not be shared with another's. Holds at most ``max_entries`` feature sets, oldest dropped first.
    """

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, key: tuple) -> torch.Tensor | None:
        """The cached features for ``key``, or None."""
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        return None

    def put(self, key: tuple, features: torch.Tensor) -> None:
        """Store features, dropping the oldest entry beyond ``max_entries``."""
        self._store[key] = features
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._store)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features: exactly what the classifier sees."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def extract_features(model: nn.Module, loader, device: torch.device, paths: FastPaths | None = None
                     ) -> Iterator[tuple[int, torch.Tensor | None]]:
    """Run the frozen backbone over a loader; yields (images done, None) then (total, features).
    ``paths``: the fast paths to use (the plain fp32 reference when None)."""
    paths = paths or fast_paths(device, "fp32")
    model.eval()
    out: list[torch.Tensor] = []
    done = 0
    for x, _ in loader:
        # The grad mode is per thread, and a web server may resume this generator on another
        # thread after each yield: a mode entered here and left open across a yield would stay
        # switched on in this thread (seen: another user's training then had no gradients). So
        # every context opens and closes between two yields.
        with torch.inference_mode():
            x = x.to(device, non_blocking=True)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, paths):
                # kept on the device until the end: a copy back per batch would make the CPU wait
                # for the GPU every batch
                out.append(pooled_features(model, x).float())
        done += len(x)
        yield done, None
    yield done, torch.cat(out).cpu() if out else torch.empty(0)


def make_loader(dataset: ImageDataset, indices: list[int], transform, batch_size: int, shuffle: bool,
            seed: int, keep: str | None = None, shorter_side: int | None = None, paths: FastPaths | None = None
            ) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset.items[indices]`` with their class ids (see ``TorchImages``),
    loading as ``paths`` says (workers and pinned memory on a GPU; in-line when None)."""
    items = [dataset.items[i] for i in indices]
    all_targets = dataset.targets  # computed per call: take it once, not once per index
    targets = [all_targets[i] for i in indices]
    gen = torch.Generator().manual_seed(seed)
    images = TorchImages(items, targets, transform, keep, shorter_side)
    kwargs = paths.loader_kwargs() if paths is not None else {"num_workers": 0}
    if kwargs["num_workers"]:
        images.preload(kwargs["num_workers"])  # before the workers start, so they share the images
    # In-line on a CPU (see speed.py): the model already uses every core, and it lets the dataset
    # keep decoded images between epochs in one copy.
    return torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=shuffle, generator=gen, **kwargs)


def feature_key(model_name: str, source: str, config: TrainConfig, data_config: dict, dataset: ImageDataset
                ) -> tuple:
    """The FeatureCache key of every image's features through one frozen backbone."""
    return (model_name, source, str(config.weights_file), str(config.init_bundle), config.pretrained,
            tuple(sorted((k, str(v)) for k, v in data_config.items())), dataset.fingerprint())


def cached_features(run: Run, model: nn.Module, loaded: LoadedModel, data_config: dict,
                     device: torch.device):
    """Features of every image through the frozen backbone, from the cache when possible."""
    cfg = run.config
    key = feature_key(loaded.name, loaded.source, cfg, data_config, run.dataset)
    cached = run.cache.get(key) if run.cache is not None else None
    if cached is not None:
        yield run.event("features", 0, 0, len(cached), len(cached), eta_s=None,
                        message="Image features reused from the last run")
        return cached
    n_all = len(run.dataset.items)
    rank, world = distributed_rank()
    mine = list(range(rank, n_all, world))  # under torchrun each process reads its share
    n = len(mine)
    loader = make_loader(run.dataset, mine, eval_transform(data_config), run.paths.batch, False, cfg.seed,
                         paths=run.paths)
    start, last = time.perf_counter(), 0.0
    features = None
    for done, feats in extract_features(model, loader, device, run.paths):
        if feats is not None:
            features = feats
            break
        if run.stop.is_set():
            run.stopped = True
            return None
        now = time.perf_counter()
        if now - last >= cfg.progress_interval_s or done == n:
            last = now
            rate = (now - start) / done
            yield run.event("features", 0, 0, done, n, eta_s=rate * (n - done),
                            message=f"Reading images with the pretrained model: {done}/{n}")
    if world > 1:
        features = gather_shards(features, n_all, device)
    if run.cache is not None:
        run.cache.put(key, features)
    return features
