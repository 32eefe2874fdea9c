"""Training: ``fit()`` is a generator of small progress events; the quick and fine-tune policies.

Progress leaves through one narrow channel: ``ProgressEvent`` values yielded by ``fit``. The last
event has ``phase == "done"`` and carries the ``TrainResult``. A ``threading.Event`` passed as
``stop`` is checked between batches; when set, training ends at once and the best weights so far
are kept.

Policies:
  quick     the backbone stays frozen; features of every image are computed once (and cached per
            dataset and model), then only the linear head is trained on them. Seconds on a CPU.
  finetune  LP-FT (Kumar et al., ICLR 2022; fastai's ``fine_tune``): the quick head first, then the
            whole network with timm's augmentation, AdamW, warmup + cosine, label smoothing, the
            backbone at a lower learning rate, early stopping on validation loss, best epoch kept.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import timm.data
import timm.scheduler
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, Split, TorchImages, eval_transform, split_dataset, train_transform
from .errors import ModelError, TrainingFailedError
from .speed import FastPaths, autocast, fast_paths, tune_process
from .weights import LoadedModel, create_model

__all__ = ["ProgressEvent", "TrainResult", "FeatureCache", "fit", "train", "pick_device",
           "extract_features"]

_logger = logging.getLogger(__name__)

# What a training step can raise that is not a bug in the caller: unreadable files (OSError),
# out of memory (torch.OutOfMemoryError is a RuntimeError), numerical/shape errors inside a model.
_STEP_FAILURES = (RuntimeError, OSError, ValueError, MemoryError)

# Validation tensors kept in memory during fine-tuning: 1000 x 3 x 224 x 224 floats is ~600 MB.
_MAX_KEPT_VAL_TENSORS = 1000


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        phase: "load", "features", "head", "finetune" or "done".
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

    phase: str
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


@dataclass
class TrainResult:
    """A trained model and everything needed to describe and reuse it.

    Attributes:
        model: the best model (eval mode, CPU).
        labels: class names; index = output position.
        data_config: the timm preprocessing config used for evaluation and prediction.
        config: the training configuration.
        model_name: the timm model name it was built from.
        create_kwargs: extra ``timm.create_model`` arguments.
        weights_source: where the pretrained weights came from.
        split: the train/validation split used.
        history: one dict per finished epoch (phase, epoch, train_loss, val_loss, val_acc).
        best: the history row whose weights were kept.
        stopped: True when the user stopped training early.
        train_seconds: wall seconds of the whole run.
        error: why training broke off early (the best epoch before it is kept), or None.
    """

    model: nn.Module
    labels: list[str]
    data_config: dict
    config: TrainConfig
    model_name: str
    create_kwargs: dict
    weights_source: str
    split: Split
    history: list[dict]
    best: dict
    stopped: bool
    train_seconds: float
    error: str | None = None

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy of the kept weights."""
        return float(self.best["val_acc"])


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


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under "auto", else the CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for, but no CUDA GPU is available here; use device auto or cpu.")
    return torch.device(preference)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
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
                out.append(_features(model, x).float().cpu())
        done += len(x)
        yield done, None
    yield done, torch.cat(out) if out else torch.empty(0)


def _set_norm_eval(model: nn.Module) -> None:
    """Keep BatchNorm statistics frozen while fine-tuning.

    With batches of 16 images from a tiny dataset, updating the running statistics replaces
    ImageNet's well-estimated ones with noisy ones; freezing them is the usual small-data practice
    (Keras' transfer-learning guide does the same).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _Run:
    """State of one ``fit`` call; exists only inside it (no shared state between users)."""

    def __init__(self, dataset: ImageDataset, config: TrainConfig, split: Split,
                 stop: threading.Event | None, cache: FeatureCache | None, paths: FastPaths):
        self.dataset, self.config, self.split = dataset, config, split
        self.stop = stop or threading.Event()
        self.cache = cache
        self.t0 = time.perf_counter()
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None
        self.stopped = False
        self.error: str | None = None
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
        return time.perf_counter() - self.t0

    def event(self, phase: str, epoch: int, epochs: int, step: int, steps: int, *,
              train_loss=None, val_loss=None, val_acc=None, eta_s=None, is_best=False,
              message: str = "") -> ProgressEvent:
        return ProgressEvent(phase, epoch, epochs, step, steps, train_loss, val_loss, val_acc,
                             self.elapsed(), eta_s, is_best, message)

    def record(self, phase: str, epoch: int, train_loss: float, val_loss: float, val_acc: float,
               model: nn.Module) -> bool:
        """Add a finished epoch to the history; keep the weights when validation loss is best."""
        row = {"phase": phase, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_acc": val_acc, "elapsed_s": round(self.elapsed(), 3)}
        self.history.append(row)
        better = self.best is None or val_loss < self.best["val_loss"] - 1e-6
        if better or not self.config.select_best:
            self.best = row
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return better
        return False


def fit(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
        stop: threading.Event | None = None, cache: FeatureCache | None = None
        ) -> Iterator[ProgressEvent]:
    """Train a classifier on ``dataset``; yields ProgressEvents, the last one carrying the result.

    Args:
        dataset: the labelled images.
        config: the one training configuration.
        split: a train/validation split (computed from ``config`` when None).
        stop: set it (from any thread) to end training between batches, keeping the best weights.
        cache: a per-user FeatureCache, so retraining the same data and model skips the backbone.

    Yields:
        ProgressEvent values; the final one has phase "done" and ``result`` set.

    Raises:
        ModelError, WeightsUnavailableError: the model cannot be created.
    """
    # Seed the global RNGs too: timm's augmentations draw from them. Training runs one at a time
    # per process (the app's training slot), so this does not disturb another user's run.
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    split = split or split_dataset(dataset, config.val_fraction, config.seed)
    device = pick_device(config.device)
    tune_process()
    run = _Run(dataset, config, split, stop, cache, fast_paths(device, config.precision))
    _logger.info("Training on %s: %s", device, run.paths.describe())

    what = f"the saved model from {Path(config.init_bundle).name}" if config.init_bundle else config.model
    yield run.event("load", 0, 0, 0, 0, message=f"Loading {what}...")
    if config.init_bundle:
        from .bundle import continue_from

        loaded = continue_from(config.init_bundle, list(dataset.labels))
    else:
        loaded = create_model(config.model, len(dataset.labels), weights_file=config.weights_file,
                              pretrained=config.pretrained)
    model = loaded.model.to(device)
    if run.paths.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_config = timm.data.resolve_model_data_config(model)
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ModelError(f"{config.model} has no single linear classifier head; pick another model.")

    run.keep_rows(head, loaded.known_classes)
    try:
        features = yield from _cached_features(run, model, loaded, data_config, device)
        if not run.stopped:
            yield from _train_head(run, model, head, features, device)
        if config.mode == "finetune" and not run.stopped:
            model.load_state_dict(run.best_state)
            yield from _finetune(run, model, head, data_config, device)
    except _STEP_FAILURES as exc:
        # A file that vanished or broke since it was read, memory running out, a numerical error:
        # the run ends, and the best epoch so far (if any) is kept like after Stop.
        _logger.exception("Training %s failed after %.1f s", config.model, run.elapsed())
        if run.best_state is None:
            raise TrainingFailedError(f"Training broke off before the first epoch finished: {exc}. "
                                      "Nothing was kept; check the images and press Train again.") from exc
        run.error = f"{type(exc).__name__}: {exc}"

    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    if run.best is None:  # stopped before the first epoch ended: evaluate the untrained head
        run.best = {"phase": "head", "epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"),
                    "val_acc": float("nan"), "elapsed_s": run.elapsed()}
    result = TrainResult(model, list(dataset.labels), dict(data_config), config, loaded.name,
                         loaded.create_kwargs, loaded.source, split, run.history, run.best,
                         run.stopped, run.elapsed(), run.error)
    what = "Broke off with an error" if run.error else "Stopped" if run.stopped else "Finished"
    yield ProgressEvent("done", run.best["epoch"], run.best["epoch"], 0, 0, run.best["train_loss"],
                        run.best["val_loss"], run.best["val_acc"], run.elapsed(), 0.0, True,
                        f"{what}: kept epoch {run.best['epoch']} ({run.best['phase']}), validation "
                        f"accuracy {run.best['val_acc']:.0%}", result)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``'s initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_shards(local: torch.Tensor, n_all: int, device: torch.device) -> torch.Tensor:
    """Every process's rows (rank r holds rows r, r+world, ...) back in dataset order, everywhere."""
    rank, world = distributed_rank()
    size = -(-n_all // world)
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((size, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[:len(local)] = local.to(backend_device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    out = torch.empty((n_all, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, n_all, world))
        out[r::world] = part[:count].cpu()
    return out


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over all processes (the values themselves in a single process)."""
    if distributed_rank()[1] == 1:
        return values
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def _loader(dataset: ImageDataset, indices: list[int], transform, batch_size: int, shuffle: bool,
            seed: int, keep: str | None = None, shorter_side: int | None = None
            ) -> torch.utils.data.DataLoader:
    items = [dataset.items[i] for i in indices]
    all_targets = dataset.targets  # computed per call: take it once, not once per index
    targets = [all_targets[i] for i in indices]
    gen = torch.Generator().manual_seed(seed)
    # num_workers=0: on a 2-core machine the model already uses both cores, and worker processes
    # inside a web server thread cost more than decoding small images in-line. It also lets the
    # dataset keep decoded images between epochs (workers would each keep their own copy).
    return torch.utils.data.DataLoader(TorchImages(items, targets, transform, keep, shorter_side),
                                       batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       num_workers=0)


def _cached_features(run: _Run, model: nn.Module, loaded: LoadedModel, data_config: dict,
                     device: torch.device):
    """Features of every image through the frozen backbone, from the cache when possible."""
    cfg = run.config
    key = (loaded.name, loaded.source, str(cfg.weights_file), str(cfg.init_bundle), cfg.pretrained,
           tuple(sorted((k, str(v)) for k, v in data_config.items())), run.dataset.fingerprint())
    cached = run.cache.get(key) if run.cache is not None else None
    if cached is not None:
        yield run.event("features", 0, 0, len(cached), len(cached), eta_s=None,
                        message="Image features reused from the last run")
        return cached
    n_all = len(run.dataset.items)
    rank, world = distributed_rank()
    mine = list(range(rank, n_all, world))  # under torchrun each process reads its share
    n = len(mine)
    loader = _loader(run.dataset, mine, eval_transform(data_config), run.paths.batch, False, cfg.seed)
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
        features = _gather_shards(features, n_all, device)
    if run.cache is not None:
        run.cache.put(key, features)
    return features


def _train_head(run: _Run, model: nn.Module, head: nn.Linear, features: torch.Tensor,
                device: torch.device):
    """Linear probe: train only the classifier on frozen features (the whole of "quick")."""
    cfg = run.config
    epochs = cfg.resolved_epochs if cfg.mode == "quick" else cfg.head_epochs
    lr = cfg.resolved_lr  # the same default for both modes: the head starts from zero either way
    tr, va = torch.tensor(run.split.train), torch.tensor(run.split.val)
    x_tr, y_tr = features[tr].to(device), run.targets[tr].to(device)
    x_va, y_va = features[va].to(device), run.targets[va].to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    if not cfg.init_bundle:  # a continued model keeps its head (new classes already start at zero)
        with torch.no_grad():
            # Zero init: the untrained model predicts uniform probabilities, not random ones.
            head.weight.zero_()
            head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    steps = math.ceil(len(tr) / cfg.batch_size)
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(len(tr), generator=gen)
        total = 0.0
        for b in range(steps):
            if run.stop.is_set():
                run.stopped = True
                return
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(device)
            loss = F.cross_entropy(head(x_tr[idx]), y_tr[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.restore_rows(head)
            total += loss.item() * len(idx)
        sched.step()
        head.eval()
        with torch.no_grad():
            logits = head(x_va)
            val_loss = F.cross_entropy(logits, y_va).item()
            val_acc = (logits.argmax(1) == y_va).float().mean().item()
        train_loss = total / len(tr)
        is_best = run.record("head", epoch, train_loss, val_loss, val_acc, model)
        per_epoch = run.elapsed() / max(1, len(run.history))
        remaining = epochs - epoch + (cfg.resolved_epochs if cfg.mode == "finetune" else 0)
        yield run.event("head", epoch, epochs, steps, steps, train_loss=train_loss, val_loss=val_loss,
                        val_acc=val_acc, eta_s=None if cfg.mode == "finetune" else per_epoch * remaining,
                        is_best=is_best,
                        message=f"Training the new head: epoch {epoch}/{epochs}, validation accuracy {val_acc:.0%}")


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


def _evaluate(model: nn.Module, loader, device: torch.device, paths: FastPaths) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if paths.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, paths):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    # under torchrun each process scored its share: every process gets the totals, so all of them
    # keep the same best epoch and stop early together
    loss_sum, correct, n = _all_sum([loss_sum, correct, n], device)
    return loss_sum / n, correct / n


def _finetune(run: _Run, model: nn.Module, head: nn.Linear, data_config: dict, device: torch.device):
    """Phase 2 of LP-FT: the whole network, lower backbone learning rate, best epoch kept."""
    cfg = run.config
    epochs = cfg.resolved_epochs
    # Decode each image once, not once per epoch: training keeps a copy about 1.5x the input size
    # (augmentation crops and resizes it anyway), validation keeps its exact evaluation tensors.
    # Both live only as long as this run.
    side = int(data_config["input_size"][-1] * 1.5)
    rank, world = distributed_rank()
    all_targets = run.dataset.targets
    train_images = TorchImages([run.dataset.items[i] for i in run.split.train],
                               [all_targets[i] for i in run.split.train], train_transform(data_config),
                               keep="decoded", shorter_side=side, seed=cfg.seed)
    # One sampler for one process or many: the shuffled order depends only on (seed, epoch), and
    # under torchrun process r takes every world-th image of it. So the images of one step,
    # summed over the processes, are exactly those of the single-process step, and with each
    # image's augmentation fixed by (seed, epoch, image) too, N processes compute what one does.
    sampler = torch.utils.data.DistributedSampler(train_images, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed)
    train_loader = torch.utils.data.DataLoader(train_images, batch_size=max(1, cfg.batch_size // world),
                                               sampler=sampler, num_workers=0)
    val_keep = "tensor" if len(run.split.val) <= _MAX_KEPT_VAL_TENSORS else None
    val_loader = _loader(run.dataset, run.split.val[rank::world], eval_transform(data_config), run.paths.batch,
                         False, cfg.seed, keep=val_keep)
    # DDP averages gradients over the processes after each backward (gloo on CPU, nccl on GPU)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps = len(train_loader)
    opt = torch.optim.AdamW(_param_groups(model, head, cfg), lr=cfg.resolved_lr)
    sched = timm.scheduler.CosineLRScheduler(
        opt, t_initial=epochs * steps, lr_min=cfg.resolved_lr * 0.01,
        warmup_t=int(cfg.warmup_epochs * steps), warmup_lr_init=cfg.resolved_lr * 0.01,
        t_in_epochs=False)
    # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and run.paths.autocast_dtype == torch.float16)
    phase_start = time.perf_counter()
    since_best, updates, last_emit = 0, 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        if cfg.pretrained:  # a random backbone has no statistics worth keeping
            _set_norm_eval(model)
        sampler.set_epoch(epoch)
        train_images.epoch = epoch
        total, seen = 0.0, 0
        for step, (x, y) in enumerate(train_loader, start=1):
            if run.stop.is_set():
                run.stopped = True
                return
            x, y = x.to(device), y.to(device)
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
            total += loss.item() * len(y)
            seen += len(y)
            now = time.perf_counter()
            if now - last_emit >= cfg.progress_interval_s and step < steps:
                last_emit = now
                per_step = (now - phase_start) / updates
                yield run.event("finetune", epoch - 1, epochs, step, steps, train_loss=total / seen,
                                eta_s=per_step * (epochs * steps - updates),
                                message=f"Fine-tuning: epoch {epoch}/{epochs}, batch {step}/{steps}")
        if run.stop.is_set():
            run.stopped = True
            return
        val_loss, val_acc = _evaluate(model, val_loader, device, run.paths)
        total, seen = _all_sum([total, seen], device)
        is_best = run.record("finetune", epoch, total / seen, val_loss, val_acc, model)
        since_best = 0 if is_best else since_best + 1
        last_emit = time.perf_counter()
        per_epoch = (last_emit - phase_start) / epoch
        early = since_best >= cfg.patience
        yield run.event("finetune", epoch, epochs, steps, steps, train_loss=total / seen,
                        val_loss=val_loss, val_acc=val_acc,
                        eta_s=0.0 if early else per_epoch * (epochs - epoch), is_best=is_best,
                        message=f"Fine-tuning: epoch {epoch}/{epochs}, validation accuracy {val_acc:.0%}"
                                + (" (no better for a while: stopping early)" if early else ""))
        if early:
            return


def train(dataset: ImageDataset, config: TrainConfig, *, split: Split | None = None,
          stop: threading.Event | None = None, cache: FeatureCache | None = None,
          on_event=None) -> TrainResult:
    """Run ``fit`` to the end and return its result; ``on_event`` sees every event on the way."""
    result = None
    for event in fit(dataset, config, split=split, stop=stop, cache=cache):
        if on_event is not None:
            on_event(event)
        result = event.result or result
    assert result is not None  # fit always ends with a "done" event
    return result
