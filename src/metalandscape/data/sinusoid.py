"""Sinusoid regression tasks: y = a·sin(x − φ), x ~ U[−5, 5] (Finn et al. 2017, paper §5).

Meta-train tasks draw amplitude and phase from ``train_*`` ranges; validation and test tasks from
``test_*`` ranges. The defaults follow the paper's disjoint setting; Finn's same-distribution
setting (amplitude U[0.1, 5], phase U[0, π] for every split) is one config change away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from metalandscape.data.tasks import DataError, Split, Task, TaskBatch, TaskKind

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

INPUT_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SinusoidSource:
    """Sinusoid tasks with ``k_shot`` support points and ``target_points`` target points."""

    k_shot: int = 10
    target_points: int = 10
    train_amplitude: tuple[float, float] = (0.1, 5.0)
    train_phase: tuple[float, float] = (0.0, math.pi / 2)
    test_amplitude: tuple[float, float] = (0.1, 5.0)
    test_phase: tuple[float, float] = (math.pi / 2, math.pi)
    kind: TaskKind = "regression"

    def __post_init__(self) -> None:
        if self.k_shot < 1 or self.target_points < 1:
            raise DataError(
                f"sinusoid k_shot and target_points must be at least 1, "
                f"got {self.k_shot} and {self.target_points}"
            )
        for name in ("train_amplitude", "train_phase", "test_amplitude", "test_phase"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
                raise DataError(
                    f"sinusoid.{name} = [{low}, {high}] is empty or inverted; "
                    "give [low, high] with low < high"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1,)

    @property
    def output_size(self) -> int:
        return 1

    def ranges(self, split: Split) -> tuple[tuple[float, float], tuple[float, float]]:
        """(amplitude range, phase range) of ``split``."""
        if split == "train":
            return self.train_amplitude, self.train_phase
        return self.test_amplitude, self.test_phase

    def supervised_batch(self, rng: np.random.Generator, batch_size: int) -> tuple[Tensor, Tensor]:
        """``batch_size`` points of one random meta-train sinusoid (for the finetune baseline)."""
        amplitude_range, phase_range = self.ranges("train")
        amplitude = rng.uniform(*amplitude_range)
        phase = rng.uniform(*phase_range)
        x = rng.uniform(*INPUT_RANGE, size=(batch_size, 1))
        y = amplitude * np.sin(x - phase)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))

    def make_task(self, split: Split, rng: np.random.Generator) -> Task:
        amplitude_range, phase_range = self.ranges(split)
        amplitude = rng.uniform(*amplitude_range)
        phase = rng.uniform(*phase_range)
        x = rng.uniform(*INPUT_RANGE, size=(self.k_shot + self.target_points, 1))
        y = amplitude * np.sin(x - phase)
        x_t = torch.from_numpy(x.astype(np.float32))
        y_t = torch.from_numpy(y.astype(np.float32))
        k = self.k_shot
        return Task(x_t[:k], y_t[:k], x_t[k:], y_t[k:])

    def make_batch(self, split: Split, rngs: Sequence[np.random.Generator]) -> TaskBatch:
        """The tasks of ``rngs`` stacked, byte-identical to :meth:`make_task` of each: one draw
        of ``2 + points`` uniforms per generator, the same doubles in the same order as
        :meth:`make_task`'s three ``uniform`` calls, mapped as numpy maps them
        (``low + (high - low) * u``); then the arithmetic of all tasks at once."""
        if not rngs:
            raise ValueError("cannot draw an empty batch of tasks")
        (amplitude_low, amplitude_high), (phase_low, phase_high) = self.ranges(split)
        points = self.k_shot + self.target_points
        uniforms = np.stack([rng.random(2 + points) for rng in rngs])
        amplitude = amplitude_low + (amplitude_high - amplitude_low) * uniforms[:, 0:1, None]
        phase = phase_low + (phase_high - phase_low) * uniforms[:, 1:2, None]
        low, high = INPUT_RANGE
        x = low + (high - low) * uniforms[:, 2:, None]
        y = amplitude * np.sin(x - phase)
        x_t = torch.from_numpy(x.astype(np.float32))
        y_t = torch.from_numpy(y.astype(np.float32))
        k = self.k_shot
        return TaskBatch(
            *(part.contiguous() for part in (x_t[:, :k], y_t[:, :k], x_t[:, k:], y_t[:, k:]))
        )


def sinusoid_source(config: RunConfig) -> SinusoidSource:
    """The registry's task source (metalandscape.data.DATASET_REGISTRY): the run's sinusoid tasks."""
    return SinusoidSource(
        k_shot=config.k_shot or 10,
        target_points=config.query or 10,
        train_amplitude=config.train_amplitude,
        train_phase=config.train_phase,
        test_amplitude=config.test_amplitude,
        test_phase=config.test_phase,
    )
