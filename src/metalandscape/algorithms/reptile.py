"""Reptile (Nichol, Achiam & Schulman 2018): move θ toward the task-adapted parameters.

Each task of a meta-batch adapts from θ with k steps on its support set, θ̃ᵢ; the meta-update is
θ ← θ + εₜ · meanᵢ(θ̃ᵢ − θ) — no gradient flows through the inner loop.

Choices (documented here once):

* Inner loop: k full-batch steps of plain gradient descent on the support loss (``inner_optimizer
  ="sgd"``, the default; the paper's sinusoid runs use SGD), i.e. MAML's inner loop with the
  run's ``inner_step_size``. ``"adam"`` is the paper's Omniglot/Mini-ImageNet inner optimizer
  (its code uses Adam with β1 = 0): here β1 = 0, β2 = 0.999, ε = 1e-8 with PyTorch's bias
  correction, fresh moments for every task. The paper draws inner mini-batches from the task's
  data; we take full-batch steps on the support set, as MAML's inner loop does.
* Outer step size: ``outer_step_size`` ε₀, fixed, or with ``anneal_iterations`` = N annealed
  linearly, εₜ = ε₀ · (1 − t/N) (0 from t = N on), as in the paper (ε₀ = 1 annealed to 0 over
  training for its few-shot classification runs).
* Evaluation adapts by gradient descent, the paper's protocol: k steps of the inner loop with the
  run's step size — SGD even for an Adam-trained run, so the landscape metrics see the same
  full-batch gradient-descent adaptation as for MAML (:func:`adapt_for_evaluation`).

As a registered algorithm (:data:`ALGORITHM`) the run config's ``reptile_*`` keys set ε₀, the
annealing (over the run's ``epochs × iterations_per_epoch`` meta-iterations, so a resumed run
follows the same schedule) and the inner optimizer. The outer update is an SGD step
(:class:`metalandscape.optimizers.SGD`) of learning rate εₜ on the "gradient"
−meanᵢ(θ̃ᵢ − θ), which is θ + εₜ · meanᵢ(θ̃ᵢ − θ); the optimizer holds no state between steps.

Tasks go in chunks of ``task_chunk_size`` as in :mod:`metalandscape.algorithms._shared`: per-task
views of θ, forward passes mapped with ``vmap`` (exact with BatchNorm), chunk 1 the plain loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import Tensor, nn

from metalandscape.algorithms._shared import (
    AlgorithmBase,
    MetaBatchLearner,
    MetaBatchPass,
    TaskChunk,
    adapt_for_evaluation,
    check_inner_loop,
    inner_loop_settings,
    support_adaptation,
)
from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.functional import Params, adapt, gradient
from metalandscape.optimizers import SGD

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

__all__ = [
    "ALGORITHM",
    "INNER_OPTIMIZERS",
    "ReptileAlgorithm",
    "ReptileLearner",
    "ReptileSettings",
    "ReptileUpdate",
    "adapt_for_evaluation",
    "adapt_task",
    "reptile_update",
]

InnerOptimizer = Literal["sgd", "adam"]
INNER_OPTIMIZERS: tuple[InnerOptimizer, ...] = ("sgd", "adam")
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8


@dataclass(frozen=True)
class ReptileSettings:
    """One Reptile meta-update (see the module docstring for each choice)."""

    inner_steps: int
    inner_step_size: float
    outer_step_size: float = 1.0
    anneal_iterations: int | None = None
    inner_optimizer: InnerOptimizer = "sgd"
    task_chunk_size: int | None = 1

    def __post_init__(self) -> None:
        check_inner_loop(self.inner_steps, self.task_chunk_size)
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"unknown inner_optimizer {self.inner_optimizer!r}; use {INNER_OPTIMIZERS}"
            )
        if self.outer_step_size <= 0:
            raise ValueError(f"outer_step_size must be positive, got {self.outer_step_size}")
        if self.anneal_iterations is not None and self.anneal_iterations < 1:
            raise ValueError(
                f"anneal_iterations must be positive or None, got {self.anneal_iterations}"
            )

    def outer_step_size_at(self, iteration: int) -> float:
        """εₜ: ε₀, or ε₀ · max(0, 1 − t/N) when annealed over N iterations."""
        if self.anneal_iterations is None:
            return self.outer_step_size
        return self.outer_step_size * max(0.0, 1.0 - iteration / self.anneal_iterations)

    def start_and_step_sizes(self, params: Params) -> tuple[Params, float]:
        """Evaluation, the paper's protocol: plain gradient descent with α from θ, whatever the
        training inner optimizer."""
        return params, self.inner_step_size


@dataclass(frozen=True)
class ReptileUpdate:
    """The new θ, the mean displacement meanᵢ(θ̃ᵢ − θ), and mean target loss and score at θ̃ᵢ."""

    params: Params
    mean_displacement: Params
    target_loss: float
    target_score: float


def adapt_task(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    settings: ReptileSettings,
    batched: bool = False,
) -> Params:
    """Reptile's inner loop from ``params`` (no graph): SGD via MAML's loop, or Adam (β1 = 0)."""
    start = {name: p.detach() for name, p in params.items()}
    if settings.inner_optimizer == "sgd":
        return adapt(
            model,
            start,
            inputs,
            labels,
            kind=kind,
            steps=settings.inner_steps,
            step_size=settings.inner_step_size,
            batched=batched,
        )
    current = start
    second_moment = {name: torch.zeros_like(p) for name, p in start.items()}
    for step in range(1, settings.inner_steps + 1):
        grads = gradient(model, current, inputs, labels, kind, batched=batched)
        correction = 1.0 - ADAM_BETA2**step
        updated: Params = {}
        for name, p in current.items():
            g = grads[name]
            second_moment[name] = ADAM_BETA2 * second_moment[name] + (1 - ADAM_BETA2) * g * g
            denominator = (second_moment[name] / correction).sqrt() + ADAM_EPSILON
            updated[name] = p - settings.inner_step_size * g / denominator
        current = updated
    return current


def reptile_update(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    kind: TaskKind,
    settings: ReptileSettings,
    iteration: int,
) -> ReptileUpdate:
    """θ + εₜ · meanᵢ(θ̃ᵢ − θ) over one meta-batch (εₜ from ``iteration``)."""
    theta = {name: p.detach() for name, p in params.items()}
    displacement_sum = {name: torch.zeros_like(p) for name, p in theta.items()}

    def add_displacement(chunk: TaskChunk, adapted: Params, losses: Tensor) -> None:
        with torch.no_grad():
            for name, value in adapted.items():
                step = value - theta[name]
                displacement_sum[name] += step.sum(dim=0) if chunk.batched else step

    adapt_chunk = support_adaptation(adapt_task, model, kind=kind, settings=settings)
    meta_batch = MetaBatchPass(model, kind, settings.task_chunk_size, adapt_chunk)
    loss, score = meta_batch.run(theta, batch, add_displacement)
    epsilon = settings.outer_step_size_at(iteration)
    mean_displacement = {name: total / len(batch) for name, total in displacement_sum.items()}
    return ReptileUpdate(
        params={name: theta[name] + epsilon * mean_displacement[name] for name in theta},
        mean_displacement=mean_displacement,
        target_loss=loss,
        target_score=score,
    )


class ReptileLearner(MetaBatchLearner):
    """θ, an SGD optimizer taking Reptile's outer step, and the meta-iteration count (for εₜ).

    Keywords as :class:`~metalandscape.algorithms.maml.MetaLearner`'s.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: ReptileSettings,
        iteration: int = 0,
        **keywords: Any,
    ) -> None:
        super().__init__(
            model,
            params,
            kind,
            settings,
            settings.outer_step_size,
            optimizer=SGD,
            **keywords,
        )
        self.iteration = iteration

    def step(self, batch: TaskBatch) -> ReptileUpdate:
        """One Reptile meta-update on ``batch``; returns it (new θ, mean displacement, losses)."""
        update = reptile_update(
            self.model, self.params, batch, self.kind, self.settings, self.iteration
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.outer_step_size_at(self.iteration)
        self.descend({name: -step for name, step in update.mean_displacement.items()})
        self.iteration += 1
        return update

    def train_step(self, iteration: int) -> tuple[float, float]:
        """One meta-update on meta-train batch ``iteration`` (εₜ of that iteration)."""
        self.iteration = iteration
        return super().train_step(iteration)


@dataclass(frozen=True)
class ReptileAlgorithm(AlgorithmBase):
    """Reptile: meta-train θ toward the tasks' adapted parameters, evaluate by gradient descent."""

    learner_type = ReptileLearner

    def settings(self, config: RunConfig) -> ReptileSettings:
        """The run's Reptile settings (ε annealed over all its meta-iterations unless disabled)."""
        total = config.epochs * config.iterations_per_epoch
        return ReptileSettings(
            **inner_loop_settings(config),
            outer_step_size=config.reptile_outer_step_size,
            anneal_iterations=max(total, 1) if config.reptile_anneal else None,
            inner_optimizer=cast(InnerOptimizer, config.reptile_inner_optimizer),
        )

    def learner_arguments(self, config: RunConfig) -> tuple[()]:
        """None: the outer step size is the settings' ε (``meta_learning_rate`` is unused)."""
        return ()


ALGORITHM = ReptileAlgorithm()
