"""Device choice and thread count for one job."""

from __future__ import annotations

import torch


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
