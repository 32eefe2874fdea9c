"""Where training runs: the device, and torchrun's processes when there are several.

Under ``torchrun`` each process reads every world-th image and gradients are averaged by DDP; the
helpers here join the process group and move per-image results between the processes. In a
single process they are no-ops, so the training code reads the same either way.
"""

from __future__ import annotations

import copy
import os

import timm.layers
import torch
from torch import nn

from .errors import ModelError

__all__ = ["pick_device", "start_distributed", "stop_distributed", "distributed_rank", "gather_shards", "all_sum",
           "too_many_processes", "synced_batchnorm"]


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under "auto", else the CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for, but no CUDA GPU is available here; use device auto or cpu.")
    return torch.device(preference)


def too_many_processes(processes: int, gpus: int) -> str | None:
    """Why ``processes`` torchrun processes on one machine cannot share its ``gpus`` GPUs, or None.

    NCCL puts one process on each GPU; two on one GPU crash inside NCCL with a message that names
    neither the cause nor the fix.
    """
    if processes <= gpus:
        return None
    if gpus == 0:
        return (f"torchrun started {processes} processes to train on a GPU, but this machine has none. "
                f"Add --device cpu to train with {processes} processes on the CPU.")
    have = f"{gpus} GPU" + ("" if gpus == 1 else "s")
    return (f"torchrun started {processes} processes on this machine, which has {have}: training on GPUs "
            f"takes one GPU per process. Start at most {gpus} (--nproc_per_node={gpus}), or add --device cpu "
            f"to train with {processes} processes on the CPU.")


def start_distributed(device: str) -> tuple[int, int, str]:
    """Join torchrun's process group when launched by it: (rank, world size, device).

    gloo on CPU, nccl on CUDA (one GPU per process, by LOCAL_RANK). Outside torchrun: (0, 1, device).

    Raises:
        ModelError: more processes on this machine than it has GPUs, with a GPU asked for (or
            "auto" and a GPU present): refused before joining, in every process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    dist = torch.distributed
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    use_cuda = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if use_cuda:
        refused = too_many_processes(int(os.environ.get("LOCAL_WORLD_SIZE", world)), gpus)
        if refused:
            raise ModelError(refused)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def stop_distributed(world: int) -> None:
    """Leave torchrun's process group (what ``start_distributed`` joined, when ``world`` > 1)."""
    if world > 1:
        torch.distributed.destroy_process_group()


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``'s initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_shards(local: torch.Tensor, n_all: int, device: torch.device) -> torch.Tensor:
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


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over all processes (the values themselves in a single process)."""
    if distributed_rank()[1] == 1:
        return values
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def synced_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers share their statistics across torchrun's processes.

    Training from scratch updates BatchNorm statistics on each batch; under DDP each process sees
    only its share of the batch, so without syncing N processes learn from noisier statistics than
    one. timm's converter keeps its fused norm + activation layers whole (PyTorch's alone would
    drop their activation). The parameter and buffer names stay the same, so the copy's weights
    load into ``model``. PyTorch runs SyncBatchNorm on GPUs, not on the CPU.
    """
    return timm.layers.convert_sync_batchnorm(copy.deepcopy(model))
