"""Per-class work on a thread pool (image decoding releases the GIL), with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Result = TypeVar("Result")


def run_per_class(work: Callable[[int], Result], classes: int, description: str) -> list[Result]:
    """``work(0..classes-1)`` on a thread pool with a progress bar; results in class order.

    The first failing class (in class order) raises; classes not yet started are cancelled.
    """
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        return list(
            tqdm(
                pool.map(work, range(classes)),
                total=classes,
                desc=description,
                unit="class",
                disable=None,
                leave=False,
            )
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
