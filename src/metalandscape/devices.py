"""Device choice, thread count and memory allocator settings for one job."""

from __future__ import annotations

import ctypes
import sys

import torch

#: glibc's ``mallopt`` parameters (``malloc.h``) and the values :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2**30


class DeviceError(ValueError):
    """The requested device is not available."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} asked for a GPU but PyTorch sees none; use --device cpu or auto"
            )
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")


def set_threads(threads: int | None) -> None:
    """Pin PyTorch's intra-op threads (one job per core beats oversubscribed cores by far)."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)


def task_chunk_size(configured: int | None, device: torch.device | str) -> int | None:
    """Tasks per ``vmap`` call on ``device``: whole meta-batches (``None``) on CUDA, where one
    large kernel beats many small ones and memory allows it; the configured chunk elsewhere (CPU:
    1 for Conv-4, whole batches for the sinusoid MLP)."""
    return None if torch.device(device).type == "cuda" else configured


def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` keep freed memory for reuse (Linux; elsewhere a no-op, False).

    A meta-iteration allocates and frees the same few-MiB activations hundreds of times. By
    default glibc serves blocks from 128 KiB up with fresh ``mmap`` pages (the threshold adapts
    only partly) and trims the heap's free top, so the kernel faults in and zeroes those pages
    again on every reuse. Serving blocks below :data:`MMAP_THRESHOLD_BYTES` from the heap and
    trimming only past :data:`TRIM_THRESHOLD_BYTES` removes most of that (benchmarks/
    bench_throughput.py: page faults of a lockstep training step about halved or better); the
    process keeps its peak heap instead of returning it. Numbers are unchanged: only where
    memory comes from changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, …)
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
