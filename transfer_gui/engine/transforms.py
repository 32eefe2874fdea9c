"""Torch preprocessing: the model's own transforms from its timm data config, and a torch Dataset.

Training validation, the Predictor, the command line and the exports all build their evaluation
transform with ``eval_transform``, so they see the same pixels.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import timm.data
import torch
from PIL import Image

from .data import ImageItem
from .images import load_image

__all__ = ["eval_transform", "train_transform", "TorchImages", "EpochKeys"]


def eval_transform(data_config: dict) -> Callable:
    """The model's evaluation preprocessing (resize, centre crop, normalise) from its timm config.

    Training validation, the Predictor, the CLI and exports all use this one function, so they see
    the same pixels.
    """
    return timm.data.create_transform(**data_config, is_training=False)


def train_transform(data_config: dict) -> Callable:
    """timm's training augmentation for the model's input size and normalisation.

    ``scale=(0.35, 1)`` instead of timm's ImageNet default (0.08, 1): with a few dozen images per
    class, tiny crops often cut the object out entirely and teach the model noise.
    """
    return timm.data.create_transform(**data_config, is_training=True, scale=(0.35, 1.0),
                                      hflip=0.5, color_jitter=0.2)


class TorchImages(torch.utils.data.Dataset):
    """A torch Dataset over selected items: decodes with ``load_image`` and applies ``transform``.

    Decoding a phone photo costs far more than a forward pass of a small model, and training reads
    every image once per epoch, so a dataset can keep work in memory for its own lifetime:

    * ``keep="tensor"``: the transformed tensor (for deterministic evaluation transforms: exact);
    * ``keep="decoded"``: the decoded image, shrunk so its shorter side is at most
      ``shorter_side`` (for random training augmentation, which crops and resizes anyway);
    * ``keep=None``: nothing.

    With ``seed``, the random augmentation of image ``i`` in epoch ``e`` depends only on
    (seed, e, i), not on which process or in which order images are read: a run split over
    several processes then sees the same pixels as a single-process run. A key may be the pair
    ``(e, i)`` (see ``EpochKeys``): DataLoader workers hold their own copy of this object, so an
    epoch set on it in the training loop would never reach them.

    ``preload`` fills the kept store up front with a thread pool (decoding releases the GIL); worker
    processes started afterwards share those images instead of each decoding its own copy.
    """

    def __init__(self, items: Sequence[ImageItem], targets: Sequence[int], transform: Callable,
                 keep: str | None = None, shorter_side: int | None = None, seed: int | None = None):
        self.items = list(items)
        self.targets = list(targets)
        self.transform = transform
        self.keep = keep
        self.shorter_side = shorter_side
        self.seed = seed
        self.epoch = 0  # set by the training loop; with ``seed``, picks each image's augmentation
        self._kept: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _decoded(self, i: int) -> Image.Image:
        image = load_image(self.items[i].path)
        if self.shorter_side and min(image.size) > self.shorter_side:
            scale = self.shorter_side / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return image

    def _keepable(self, i: int):
        if self.keep == "tensor":
            return self.transform(load_image(self.items[i].path))
        return self._decoded(i)

    def preload(self, threads: int) -> None:
        """Decode (``keep="tensor"``: and transform) every image not kept yet, ``threads`` at once."""
        todo = [i for i in range(len(self.items)) if i not in self._kept] if self.keep else []
        if not todo:
            return
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for i, kept in zip(todo, pool.map(self._keepable, todo)):
                self._kept[i] = kept

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        if self.keep and i not in self._kept:
            self._kept[i] = self._keepable(i)
        if self.keep == "tensor":
            return self._kept[i], self.targets[i]
        image = self._kept[i] if self.keep else load_image(self.items[i].path)
        return self._transform(image, i, epoch), self.targets[i]

    def _transform(self, image: Image.Image, i: int, epoch: int) -> torch.Tensor:
        if self.seed is None:
            return self.transform(image)
        # timm's augmentations draw from both Python's and torch's generators; seed both for this
        # image and epoch, and give the caller's generators back untouched.
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            key = (self.seed * 1_000_003 + epoch) * 1_000_003 + i
            random.seed(key)
            torch.manual_seed(key)
            try:
                return self.transform(image)
            finally:
                random.setstate(state)


class EpochKeys(torch.utils.data.Sampler):
    """A sampler's indices as ``(epoch, index)`` keys for ``TorchImages``: the epoch travels with
    each index to the worker that augments it. ``sampler`` needs an ``epoch`` attribute (as
    ``DistributedSampler`` has, set by its ``set_epoch``)."""

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
