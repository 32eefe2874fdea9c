"""Training the whole network: the one loop of the project (``train_steps``), used by fine-tuning
(the evidence run on a holdout and the refit on every image; ``policies.py`` decides which runs and
what is kept) and by the comparison's run from random weights (comparison.py).

timm's augmentation, AdamW with the backbone at a lower learning rate, warmup + cosine, label
smoothing, BatchNorm statistics frozen; under torchrun, DDP with every process seeing exactly the
images a single process would.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import timm.scheduler
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .distributed import all_sum, distributed_rank, gather_shards, synced_batchnorm
from .data import ImageDataset
from .features import make_loader
from .progress import Run
from .speed import FastPaths, autocast
from .transforms import EpochKeys, TorchImages, eval_transform, train_transform

__all__ = ["Outcome", "scores", "finetune", "optimiser", "train_loader", "train_steps", "logits_of"]

# Validation tensors kept in memory during fine-tuning: 1000 x 3 x 224 x 224 floats is ~600 MB.
_MAX_KEPT_VAL_TENSORS = 1000


def _set_norm_eval(model: nn.Module) -> None:
    """Keep BatchNorm statistics frozen while fine-tuning.

    With batches of 16 images from a tiny dataset, updating the running statistics replaces
    ImageNet's well-estimated ones with noisy ones; freezing them is the usual small-data practice
    (Keras' transfer-learning guide does the same).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@dataclass(frozen=True)
class Outcome:
    """The best epoch of a fine-tuning run on held-out images."""

    epoch: int
    loss: float
    acc: float
    logits: np.ndarray
    state: dict | None = None  # the weights of that epoch


def scores(logits: np.ndarray, targets: torch.Tensor) -> tuple[float, float]:
    """(log-loss, accuracy) of ``logits`` against ``targets``."""
    t = torch.as_tensor(logits, dtype=torch.float32)
    return F.cross_entropy(t, targets.long()).item(), (t.argmax(1) == targets).float().mean().item()


def optimiser(model: nn.Module, head: nn.Linear, cfg: TrainConfig, device: torch.device,
              backbone_lr_scale: float | None = None) -> torch.optim.AdamW:
    """AdamW over every parameter (all made trainable): head vs backbone (``lr_scale``, applied by
    timm's scheduler; ``backbone_lr_scale`` overrides the config's), no decay on biases and norm
    weights (the usual practice: decaying them only hurts). One fused kernel for the whole update
    on a GPU, instead of a few per parameter tensor."""
    scale = cfg.backbone_lr_scale if backbone_lr_scale is None else backbone_lr_scale
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        p.requires_grad_(True)
        groups.setdefault((id(p) in head_ids, p.ndim <= 1), []).append(p)
    params = [{"params": ps, "lr_scale": 1.0 if is_head else scale,
               "weight_decay": 0.0 if no_decay else cfg.weight_decay}
              for (is_head, no_decay), ps in groups.items()]
    return torch.optim.AdamW(params, lr=cfg.resolved_lr, fused=device.type == "cuda")


def train_loader(dataset: ImageDataset, indices: Sequence[int], data_config: dict, batch_size: int, seed: int,
                 loading: dict, rank: int = 0, world: int = 1
                 ) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DistributedSampler]:
    """The training images of ``indices`` with timm's augmentation, and the sampler whose
    ``set_epoch`` starts each epoch.

    Each image is decoded once, not once per epoch: the loader keeps a copy about 1.5x the input
    size (augmentation crops and resizes it anyway), for as long as the loader lives. One sampler
    for one process or many: the shuffled order depends only on (seed, epoch), and under torchrun
    process r takes every world-th image of it. So the images of one step, summed over the
    processes, are exactly those of the single-process step, and with each image's augmentation
    fixed by (seed, epoch, image) too, N processes compute what one does.
    """
    targets = dataset.targets
    images = TorchImages([dataset.items[i] for i in indices], [targets[i] for i in indices],
                         train_transform(data_config), keep="decoded",
                         shorter_side=int(data_config["input_size"][-1] * 1.5), seed=seed)
    sampler = torch.utils.data.DistributedSampler(images, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    if loading.get("num_workers"):
        images.preload(loading["num_workers"])  # decoded once, shared by the workers the loader starts
    # (epoch, index) keys: the workers augment each image for the epoch the sampler is in
    return torch.utils.data.DataLoader(images, batch_size=batch_size, sampler=EpochKeys(sampler), **loading), sampler


def train_steps(net: nn.Module, loader: torch.utils.data.DataLoader, opt: torch.optim.Optimizer,
                device: torch.device, paths: FastPaths, label_smoothing: float,
                scaler: torch.amp.GradScaler | None = None, after_step: Callable[[], None] | None = None,
                stop: threading.Event | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """One optimisation step per batch of ``loader``: yields the step's loss (detached, still on
    the device: reading it every step would make the CPU wait for the GPU) and its batch size.
    ``after_step`` runs right after each update (before the scaler's); a set ``stop`` ends the
    steps before the next batch is computed."""
    for x, y in loader:
        if stop is not None and stop.is_set():
            return
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if paths.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, paths):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
        if after_step is not None:
            after_step()
        if scaler is not None:
            scaler.update()
        yield loss.detach(), len(y)


def logits_of(model: nn.Module, loader, device: torch.device, paths: FastPaths) -> torch.Tensor:
    """Logits (float32, on the CPU, in the loader's order) of the images a loader holds; the
    model is left in eval mode."""
    model.eval()
    out = []
    for x, _ in loader:
        # opened and closed per batch: a caller may yield between batches of a generator
        with torch.inference_mode(), autocast(device, paths):
            x = x.to(device, non_blocking=True)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.get_classifier().out_features)


class _HeldOut:
    """The held-out images of a fine-tuning run, checked after every epoch. Their exact
    evaluation tensors are kept (up to ``_MAX_KEPT_VAL_TENSORS``) for as long as the run lives."""

    def __init__(self, run: Run, indices: Sequence[int], data_config: dict, rank: int, world: int):
        self.indices, self.world = list(indices), world
        keep = "tensor" if len(self.indices) <= _MAX_KEPT_VAL_TENSORS else None
        self.loader = make_loader(run.dataset, self.indices[rank::world], eval_transform(data_config),
                                  run.paths.batch, False, run.config.seed, keep=keep, paths=run.paths)
        self.targets = torch.tensor([run.dataset.targets[i] for i in self.indices])

    def logits(self, model: nn.Module, device: torch.device, paths: FastPaths) -> torch.Tensor:
        """Every held-out image's logits. Under torchrun each process scored every world-th image:
        every process gets them all, so all of them keep the same best epoch and stop early together."""
        local = logits_of(model, self.loader, device, paths)
        return gather_shards(local, len(self.indices), device) if self.world > 1 else local


def _weights(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def finetune(run: Run, model: nn.Module, head: nn.Linear, data_config: dict, device: torch.device,
             train_idx: Sequence[int], val_idx: Sequence[int] | None, epochs: int, phase: str):
    """The whole network on ``train_idx``: timm's augmentation, AdamW with the backbone at a lower
    learning rate, warmup + cosine, label smoothing, BatchNorm statistics frozen.

    With ``val_idx`` the held-out images are checked after every epoch, training stops early
    when they stop improving, and the best epoch is returned (weights, held-out logits); without
    them (a refit on every image) all ``epochs`` run and the last one is returned. Returns None
    when stopped or when no epoch finished. The caller decides what to keep.
    """
    cfg = run.config
    rank, world = distributed_rank()
    loader, sampler = train_loader(run.dataset, train_idx, data_config, max(1, cfg.batch_size // world), cfg.seed,
                                   run.paths.loader_kwargs(), rank, world)
    held = None if val_idx is None else _HeldOut(run, val_idx, data_config, rank, world)
    if world > 1 and device.type == "cuda" and not cfg.pretrained:
        # from scratch, BatchNorm learns its statistics: over the whole step's batch, as one process
        # would, not over each process's share. The caller gets the weights through the Outcome.
        model = synced_batchnorm(model)
        head = model.get_classifier()
    # DDP averages gradients over the processes after each backward (gloo on CPU, nccl on GPU)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps = len(loader)
    opt = optimiser(model, head, cfg, device)
    sched = timm.scheduler.CosineLRScheduler(
        opt, t_initial=epochs * steps, lr_min=cfg.resolved_lr * 0.01,
        warmup_t=int(cfg.warmup_epochs * steps), warmup_lr_init=cfg.resolved_lr * 0.01, t_in_epochs=False)
    # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and run.paths.autocast_dtype == torch.float16)
    title = "Fine-tuning on all images" if val_idx is None else "Fine-tuning"
    clock = _Clock(epochs * steps, cfg.progress_interval_s)
    since_best, best = 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        if cfg.pretrained:  # a random backbone has no statistics worth keeping
            _set_norm_eval(model)
        sampler.set_epoch(epoch)
        running, seen = torch.zeros((), device=device), 0  # the loss summed on the device
        for step, (loss, n) in enumerate(train_steps(net, loader, opt, device, run.paths, cfg.label_smoothing,
                                                     scaler, lambda: run.restore_rows(head), run.stop), start=1):
            sched.step_update(clock.step())
            running, seen = running + loss * n, seen + n
            if step < steps and clock.due():
                yield run.event(phase, epoch - 1, epochs, step, steps, train_loss=running.item() / seen,
                                eta_s=clock.eta_s(), message=f"{title}: epoch {epoch}/{epochs}, batch {step}/{steps}")
        if run.stop.is_set():
            run.stopped = True
            return best if val_idx is not None else None
        total, seen = all_sum([running.item(), seen], device)
        clock.epoch_done()
        if held is None:  # a refit: nothing held out, every epoch runs
            run.add_row(phase, epoch, total / seen, None, None)
            yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen,
                            eta_s=clock.eta_s(), message=f"{title}: epoch {epoch}/{epochs}")
            best = Outcome(epoch, float("nan"), float("nan"), np.zeros(0), _weights(model) if epoch == epochs else None)
            continue
        logits = held.logits(model, device, run.paths).numpy()
        val_loss, val_acc = scores(logits, held.targets)
        run.add_row(phase, epoch, total / seen, val_loss, val_acc)
        is_best = best is None or val_loss < best.loss - 1e-6 or not cfg.select_best
        if is_best:
            best = Outcome(epoch, val_loss, val_acc, logits, _weights(model))
        since_best = 0 if is_best else since_best + 1
        early = since_best >= cfg.patience
        yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen, val_loss=val_loss,
                        val_acc=val_acc, eta_s=0.0 if early else clock.eta_s(), is_best=is_best,
                        message=f"{title}: epoch {epoch}/{epochs}, accuracy on held-out images {val_acc:.0%}"
                                + (" (no better for a while: stopping early)" if early else ""))
        if early:
            break
    return best


class _Clock:
    """A run's updates and time: when the next progress report is due, and how long is left."""

    def __init__(self, total_updates: int, interval_s: float):
        self.total, self.interval_s = total_updates, interval_s
        self.start = self.last = time.perf_counter()
        self.updates = 0

    def step(self) -> int:
        """Count one update; returns how many so far (the scheduler's step)."""
        self.updates += 1
        return self.updates

    def due(self) -> bool:
        """True (and the report counted as made) when a progress report is due."""
        now = time.perf_counter()
        if now - self.last < self.interval_s:
            return False
        self.last = now
        return True

    def epoch_done(self) -> None:
        """An epoch ended (its report follows at once)."""
        self.last = time.perf_counter()

    def eta_s(self) -> float:
        """Seconds left at the pace so far."""
        per_update = (time.perf_counter() - self.start) / max(1, self.updates)
        return per_update * (self.total - self.updates)
