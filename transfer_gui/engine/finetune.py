"""Fine-tuning the whole network: one loop, for the evidence run on a holdout and the refit on
every image (``policies.py`` decides which runs and what is kept).

timm's augmentation, AdamW with the backbone at a lower learning rate, warmup + cosine, label
smoothing, BatchNorm statistics frozen; under torchrun, DDP with every process seeing exactly the
images a single process would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import timm.scheduler
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .distributed import all_sum, distributed_rank, gather_shards, synced_batchnorm
from .features import make_loader
from .progress import Run
from .speed import FastPaths, autocast
from .transforms import EpochKeys, TorchImages, eval_transform, train_transform

__all__ = ["Outcome", "scores", "finetune"]

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


def _param_groups(model: nn.Module, head: nn.Linear, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: head vs backbone (``lr_scale``, applied by timm's scheduler), no decay on
    biases and norm weights (the usual practice: decaying them only hurts)."""
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        p.requires_grad_(True)
        groups.setdefault((id(p) in head_ids, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr_scale": 1.0 if is_head else cfg.backbone_lr_scale,
             "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (is_head, no_decay), ps in groups.items()]


def _evaluate(model: nn.Module, loader, n: int, device: torch.device, paths: FastPaths) -> torch.Tensor:
    """Logits (on the CPU, in the loader's order) of the ``n`` images a loader holds, summed over
    the processes under torchrun."""
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, paths):
                out.append(model(x).float().cpu())
    local = torch.cat(out) if out else torch.empty(0, model.get_classifier().out_features)
    # under torchrun each process scored every world-th image: every process gets them all, so
    # all of them keep the same best epoch and stop early together
    return gather_shards(local, n, device) if distributed_rank()[1] > 1 else local


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
    # Decode each image once, not once per epoch: training keeps a copy about 1.5x the input size
    # (augmentation crops and resizes it anyway), validation keeps its exact evaluation tensors.
    # Both live only as long as this run.
    side = int(data_config["input_size"][-1] * 1.5)
    rank, world = distributed_rank()
    all_targets = run.dataset.targets
    train_images = TorchImages([run.dataset.items[i] for i in train_idx], [all_targets[i] for i in train_idx],
                               train_transform(data_config), keep="decoded", shorter_side=side, seed=cfg.seed)
    # One sampler for one process or many: the shuffled order depends only on (seed, epoch), and
    # under torchrun process r takes every world-th image of it. So the images of one step,
    # summed over the processes, are exactly those of the single-process step, and with each
    # image's augmentation fixed by (seed, epoch, image) too, N processes compute what one does.
    sampler = torch.utils.data.DistributedSampler(train_images, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed)
    loading = run.paths.loader_kwargs()
    if loading["num_workers"]:
        train_images.preload(loading["num_workers"])  # decoded once, shared by the workers started below
    # (epoch, index) keys: the workers augment each image for the epoch the sampler is in
    train_loader = torch.utils.data.DataLoader(train_images, batch_size=max(1, cfg.batch_size // world),
                                               sampler=EpochKeys(sampler), **loading)
    val_loader = None
    if val_idx is not None:
        val_idx = list(val_idx)
        val_keep = "tensor" if len(val_idx) <= _MAX_KEPT_VAL_TENSORS else None
        val_loader = make_loader(run.dataset, val_idx[rank::world], eval_transform(data_config), run.paths.batch,
                                 False, cfg.seed, keep=val_keep, paths=run.paths)
        val_targets = torch.tensor([all_targets[i] for i in val_idx])
    if world > 1 and device.type == "cuda" and not cfg.pretrained:
        # from scratch, BatchNorm learns its statistics: over the whole step's batch, as one process
        # would, not over each process's share. The caller gets the weights through the Outcome.
        model = synced_batchnorm(model)
        head = model.get_classifier()
    # DDP averages gradients over the processes after each backward (gloo on CPU, nccl on GPU)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps = len(train_loader)
    # one fused kernel for the whole update on a GPU, instead of a few per parameter tensor
    opt = torch.optim.AdamW(_param_groups(model, head, cfg), lr=cfg.resolved_lr, fused=device.type == "cuda")
    sched = timm.scheduler.CosineLRScheduler(
        opt, t_initial=epochs * steps, lr_min=cfg.resolved_lr * 0.01,
        warmup_t=int(cfg.warmup_epochs * steps), warmup_lr_init=cfg.resolved_lr * 0.01,
        t_in_epochs=False)
    # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and run.paths.autocast_dtype == torch.float16)
    title = "Fine-tuning on all images" if val_idx is None else "Fine-tuning"
    phase_start = time.perf_counter()
    since_best, updates, last_emit = 0, 0, time.perf_counter()
    best: Outcome | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        if cfg.pretrained:  # a random backbone has no statistics worth keeping
            _set_norm_eval(model)
        sampler.set_epoch(epoch)
        # the loss summed on the device: reading it every step would make the CPU wait for the
        # GPU each step instead of queueing the next one
        running, seen = torch.zeros((), device=device), 0
        for step, (x, y) in enumerate(train_loader, start=1):
            if run.stop.is_set():
                run.stopped = True
                return best if val_idx is not None else None
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if run.paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, run.paths):
                loss = F.cross_entropy(net(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            run.restore_rows(head)
            scaler.update()
            updates += 1
            sched.step_update(updates)
            running += loss.detach() * len(y)
            seen += len(y)
            now = time.perf_counter()
            if now - last_emit >= cfg.progress_interval_s and step < steps:
                last_emit = now
                per_step = (now - phase_start) / updates
                yield run.event(phase, epoch - 1, epochs, step, steps, train_loss=running.item() / seen,
                                eta_s=per_step * (epochs * steps - updates),
                                message=f"{title}: epoch {epoch}/{epochs}, batch {step}/{steps}")
        if run.stop.is_set():
            run.stopped = True
            return best if val_idx is not None else None
        total, seen = all_sum([running.item(), seen], device)
        last_emit = time.perf_counter()
        per_epoch = (last_emit - phase_start) / epoch
        if val_loader is None:  # a refit: nothing held out, every epoch runs
            run.add_row(phase, epoch, total / seen, None, None)
            yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen,
                            eta_s=per_epoch * (epochs - epoch), message=f"{title}: epoch {epoch}/{epochs}")
            best = Outcome(epoch, float("nan"), float("nan"), np.zeros(0),
                            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                            if epoch == epochs else None)
            continue
        logits = _evaluate(model, val_loader, len(val_idx), device, run.paths)
        val_loss, val_acc = scores(logits.numpy(), val_targets)
        run.add_row(phase, epoch, total / seen, val_loss, val_acc)
        is_best = best is None or val_loss < best.loss - 1e-6 or not cfg.select_best
        if is_best:
            best = Outcome(epoch, val_loss, val_acc, logits.numpy(),
                            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        since_best = 0 if is_best else since_best + 1
        early = since_best >= cfg.patience
        yield run.event(phase, epoch, epochs, steps, steps, train_loss=total / seen,
                        val_loss=val_loss, val_acc=val_acc,
                        eta_s=0.0 if early else per_epoch * (epochs - epoch), is_best=is_best,
                        message=f"{title}: epoch {epoch}/{epochs}, accuracy on held-out images {val_acc:.0%}"
                                + (" (no better for a while: stopping early)" if early else ""))
        if early:
            break
    return best
