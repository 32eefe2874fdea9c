"""Fast paths, chosen by what the machine supports, each one kept only behind a parity check.

* channels_last memory format for convolutions (same arithmetic, faster kernels on CPU and GPU);
* bf16 autocast on CPUs that do bf16 in hardware (AVX512-BF16 or AMX), fp16/bf16 AMP on CUDA;
  elsewhere fp32, because emulated bf16 is slower than fp32;
* torch's intra-op threads set to the cores this process may use (a container's CPU set can be
  smaller than the machine);
* glibc's allocator told to reuse large blocks: a batch's activations are tens of MB, above
  glibc's largest automatic mmap threshold (32 MB), so every batch mapped fresh pages and the
  kernel zeroed them again (measured: a third of all CPU time in page faults on 10,000 images).
  PyTorch's CPU tuning guide recommends a caching allocator (jemalloc/tcmalloc) for this reason;
  ``mallopt`` gives glibc the same behaviour without a new dependency.

On a GPU the card must be fed: images are decoded once, up front, by a thread pool, and
DataLoader worker processes (their number from the cores this process may use) augment them into
pinned memory, copied to the card without blocking; inference batches are sized from the card's
free memory; cuDNN picks its fastest kernels for the fixed batch shape. On a CPU none of that pays:
the model already uses every core, and workers measured slower (benchmarks/speed.py), so loading
stays in the training thread there.

Process-wide settings (threads, allocator, cuDNN) describe the machine, not a user, and are applied
once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
from dataclasses import dataclass

import torch


__all__ = ["FastPaths", "fast_paths", "cpu_has_fast_bf16", "available_cores", "loader_workers", "gpu_batch",
           "tune_process"]

_logger = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: blocks below it come from the reusable heap
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB of freed heap mapped for the next batch
# glibc gives threads that allocate at once arenas of their own, up to 8 per core, and each keeps
# up to _TRIM_THRESHOLD of freed memory: a server's many request threads held 7.1 GB in 157 arena
# heaps under benchmarks/load.py --abuse. Two arenas keep the training thread's reuse and bound
# what the rest can hold.
_ARENA_MAX = 2
_MAX_WORKERS = 12  # timm's augmentation of a decoded image took 2.6 ms on one core: 12 feed ~4,500/s
# Inference memory per image, as a multiple of its input tensor: a small CNN's few largest live
# activations at once, with room to spare (EfficientNet-Lite0's widest is ~8x its input).
_ACTIVATION_FACTOR = 64
_MAX_GPU_BATCH = 512


@dataclass(frozen=True)
class FastPaths:
    """The fast paths in use on one device.

    Attributes:
        channels_last: convert models and batches to channels_last.
        autocast_dtype: the reduced precision for autocast, or None for fp32.
        threads: torch intra-op threads.
        batch: images per forward pass when only inferring (feature extraction, evaluation).
        workers: DataLoader worker processes (0: load in the calling thread).
        pin_memory: batches in page-locked memory, so copies to the GPU do not block.
    """

    channels_last: bool
    autocast_dtype: torch.dtype | None
    threads: int
    batch: int = 32
    workers: int = 0
    pin_memory: bool = False

    def loader_kwargs(self) -> dict:
        """DataLoader arguments for these paths: workers kept alive across epochs, a few batches
        prefetched each, pinned memory on a GPU."""
        if not self.workers:
            return {"num_workers": 0, "pin_memory": self.pin_memory}
        return {"num_workers": self.workers, "pin_memory": self.pin_memory, "persistent_workers": True,
                "prefetch_factor": 4}

    def describe(self) -> str:
        """One line for logs and benchmarks."""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[
            self.autocast_dtype]
        layout = "channels_last" if self.channels_last else "contiguous"
        loading = f"{self.workers} loader workers" + (", pinned memory" if self.pin_memory else "") \
            if self.workers else "loading in-line"
        return f"{precision}, {layout}, {self.threads} threads, inference batches of {self.batch}, {loading}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity set, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def fast_paths(device: torch.device, precision: str = "auto", workers: int | None = None) -> FastPaths:
    """The fast paths for ``device``.

    Args:
        device: where the model runs.
        precision: "auto" (every fast path; reduced precision only where the hardware is fast at
            it), "fp32" (none: plain fp32, contiguous, batches of 32, loading in-line: the
            reference), or "bf16" (always bf16 autocast, e.g. to check its parity on any machine).
        workers: DataLoader workers instead of the machine's choice (``loader_workers`` on a
            GPU, none on a CPU), e.g. to measure them or to test them on a CPU.
    """
    if precision == "fp32":  # the reference path the fast ones are checked against
        return FastPaths(channels_last=False, autocast_dtype=None, threads=torch.get_num_threads(), batch=32,
                         workers=workers or 0)
    if precision == "bf16":
        dtype = torch.bfloat16
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if cpu_has_fast_bf16() else None
    if device.type == "cuda":
        return FastPaths(channels_last=True, autocast_dtype=dtype, threads=torch.get_num_threads(),
                         batch=gpu_batch(device), workers=loader_workers() if workers is None else workers,
                         pin_memory=True)
    # On a CPU, batches of 8 keep each activation of a 224 px CNN under the allocator's 32 MB reuse
    # limit (measured with the built-in model: 48 images/s at 8, 43 at 16, 32 at 32).
    return FastPaths(channels_last=True, autocast_dtype=dtype, threads=torch.get_num_threads(), batch=8,
                     workers=workers or 0)


def loader_workers(cores: int | None = None, processes: int | None = None) -> int:
    """DataLoader workers for a GPU run: this process's share of the cores (torchrun's processes
    on this machine split them), less one for the process itself, at most ``_MAX_WORKERS``."""
    cores = available_cores() if cores is None else cores
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if processes is None else processes
    return max(0, min(_MAX_WORKERS, cores // max(1, processes) - 1))


def gpu_batch(device: torch.device, free_bytes: int | None = None, input_shape=(3, 224, 224)) -> int:
    """Images per inference batch on a GPU: a power of two from 32 to 512 that uses at most a
    quarter of the card's free memory (``free_bytes``, measured when None)."""
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    per_image = 4 * _ACTIVATION_FACTOR * math.prod(input_shape)
    fits = max(1, free_bytes // 4 // per_image)
    return max(32, min(_MAX_GPU_BATCH, 1 << (fits.bit_length() - 1)))


def autocast(device: torch.device, paths: FastPaths):
    """The autocast context for ``paths`` (a disabled one for fp32)."""
    if paths.autocast_dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=paths.autocast_dtype)


@functools.cache
def tune_process(keep_malloc: bool = False) -> str:
    """Apply the process-wide settings once: threads = available cores, allocator reuse (unless
    ``keep_malloc``). The entry points call it at start (the command line, the app's engine
    preload, the lent GPU's process), from their settings. Returns what was done (for logs)."""
    done = []
    cores = available_cores()
    if os.environ.get("OMP_NUM_THREADS"):  # set by the user, or by torchrun for several processes
        done.append(f"{torch.get_num_threads()} threads (OMP_NUM_THREADS)")
    else:
        if torch.get_num_threads() != cores:
            torch.set_num_threads(cores)
        done.append(f"{cores} threads")
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name) if libc_name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if torch.cuda.is_available():
        # training and inference batches have fixed shapes (but the last): let cuDNN time its
        # kernels once per shape and keep the fastest
        torch.backends.cudnn.benchmark = True
        done.append("cuDNN autotuning")
    if mallopt is not None and not keep_malloc:
        ok = (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
              and mallopt(_M_ARENA_MAX, _ARENA_MAX))
        done.append(f"glibc allocator reuses large blocks in {_ARENA_MAX} arenas" if ok else "mallopt refused")
    _logger.info("Process tuned: %s", ", ".join(done))
    return ", ".join(done)
