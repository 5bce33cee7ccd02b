"""Shared test settings."""

from __future__ import annotations

import torch

# One intra-op thread per test process: oversubscribed cores slow small kernels by far.
torch.set_num_threads(1)
