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

Process-wide settings (threads, allocator) describe the machine, not a user, and are applied once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from dataclasses import dataclass

import torch

from ..settings import Settings

__all__ = ["FastPaths", "fast_paths", "cpu_has_fast_bf16", "available_cores", "tune_process"]

_logger = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: blocks below it come from the reusable heap
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB of freed heap mapped for the next batch


@dataclass(frozen=True)
class FastPaths:
    """The fast paths in use on one device.

    Attributes:
        channels_last: convert models and batches to channels_last.
        autocast_dtype: the reduced precision for autocast, or None for fp32.
        threads: torch intra-op threads.
        batch: images per forward pass when only inferring (feature extraction, evaluation).
    """

    channels_last: bool
    autocast_dtype: torch.dtype | None
    threads: int
    batch: int = 32

    def describe(self) -> str:
        """One line for logs and benchmarks."""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[
            self.autocast_dtype]
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{precision}, {layout}, {self.threads} threads, inference batches of {self.batch}"


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


def fast_paths(device: torch.device, precision: str = "auto") -> FastPaths:
    """The fast paths for ``device``.

    Args:
        device: where the model runs.
        precision: "auto" (every fast path; reduced precision only where the hardware is fast at
            it), "fp32" (none: plain fp32, contiguous, batches of 32: the reference), or "bf16"
            (always bf16 autocast, e.g. to check its parity on any machine).
    """
    if precision == "fp32":  # the reference path the fast ones are checked against
        return FastPaths(channels_last=False, autocast_dtype=None, threads=torch.get_num_threads(), batch=32)
    if precision == "bf16":
        dtype = torch.bfloat16
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if cpu_has_fast_bf16() else None
    # On a CPU, batches of 8 keep each activation of a 224 px CNN under the allocator's 32 MB reuse
    # limit (measured with the built-in model: 48 images/s at 8, 43 at 16, 32 at 32); a GPU wants
    # large batches.
    batch = 64 if device.type == "cuda" else 8
    return FastPaths(channels_last=True, autocast_dtype=dtype, threads=torch.get_num_threads(), batch=batch)


def autocast(device: torch.device, paths: FastPaths):
    """The autocast context for ``paths`` (a disabled one for fp32)."""
    if paths.autocast_dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=paths.autocast_dtype)


@functools.cache
def tune_process() -> str:
    """Apply the process-wide settings once: threads = available cores, allocator reuse.
    Returns what was done (for logs)."""
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
    if mallopt is not None and not Settings.from_env().keep_malloc:
        ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        done.append("glibc allocator reuses large blocks" if ok else "mallopt refused")
    _logger.info("Process tuned: %s", ", ".join(done))
    return ", ".join(done)
