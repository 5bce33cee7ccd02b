"""MAML, First-Order MAML and the paper's regularized MAML as pure functions of a params dict.

The meta-gradient of one task is ``torch.func.grad`` of "adapt on the support set, then the target
loss"; a meta-batch maps that over tasks, either one task at a time (``task_chunk_size=1``) or
batched with ``torch.func.vmap`` over chunks of tasks. ``vmap(grad(·))`` is exact also with
BatchNorm; ``grad(mean(vmap(·)))`` is not (torch 2.13, second order), so it is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.functional import (
    Params,
    adapt,
    coherence_corrected,
    forward,
    loss_from_outputs,
    score_from_outputs,
    unit_direction,
)

MetaAlgorithm = Literal["maml", "fomaml", "regmaml"]
META_ALGORITHMS: tuple[MetaAlgorithm, ...] = ("maml", "fomaml", "regmaml")


@dataclass(frozen=True)
class MetaSettings:
    """One MAML-family meta-update.

    ``task_chunk_size``: tasks per ``vmap`` call; 1 loops over tasks (least memory), ``None`` maps
    the whole meta-batch at once.
    """

    algorithm: MetaAlgorithm
    inner_steps: int
    inner_step_size: float
    regularizer_gamma: float = 0.5
    task_chunk_size: int | None = 1

    def __post_init__(self) -> None:
        if self.algorithm not in META_ALGORITHMS:
            raise ValueError(f"unknown meta-algorithm {self.algorithm!r}; use {META_ALGORITHMS}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.task_chunk_size is not None and self.task_chunk_size < 1:
            raise ValueError(
                f"task_chunk_size must be positive or None, got {self.task_chunk_size}"
            )

    @property
    def second_order(self) -> bool:
        """Whether gradients flow through the inner loop."""
        return self.algorithm != "fomaml"


@dataclass(frozen=True)
class MetaGradient:
    """Mean meta-gradient of a meta-batch and the mean target loss and score behind it."""

    gradients: Params
    target_loss: float
    target_score: float


def _task_split(batch: TaskBatch, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        batch.support_inputs[start:stop],
        batch.support_labels[start:stop],
        batch.target_inputs[start:stop],
        batch.target_labels[start:stop],
    )


def _chunks(tasks: int, chunk_size: int | None) -> list[tuple[int, int]]:
    size = tasks if chunk_size is None else chunk_size
    return [(start, min(start + size, tasks)) for start in range(0, tasks, size)]


def mean_adaptation_direction(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> Tensor:
    """θ̂μ: the mean over the meta-batch of the unit adaptation directions θ̂ᵢ (no gradient)."""
    detached = {name: p.detach() for name, p in params.items()}

    def direction(support_inputs: Tensor, support_labels: Tensor) -> Tensor:
        adapted = adapt(
            model,
            detached,
            support_inputs,
            support_labels,
            kind=kind,
            steps=settings.inner_steps,
            step_size=settings.inner_step_size,
            create_graph=False,
        )
        return unit_direction(adapted, detached)

    total = None
    for start, stop in _chunks(len(batch), settings.task_chunk_size):
        support_inputs, support_labels, _, _ = _task_split(batch, start, stop)
        if stop - start == 1:
            directions = direction(support_inputs[0], support_labels[0])[None]
        else:
            directions = torch.func.vmap(direction)(support_inputs, support_labels)
        chunk_sum = directions.sum(dim=0)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None
    return total / len(batch)


def meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> MetaGradient:
    """The meta-gradient ∇θs mean_i L(D'ᵢ; θ̃ᵢ) (θ̄ᵢ for regularized MAML) of one meta-batch."""
    mean_direction = None
    if settings.algorithm == "regmaml":
        mean_direction = mean_adaptation_direction(model, params, batch, kind, settings)

    def task_objective(
        start_params: Params,
        support_inputs: Tensor,
        support_labels: Tensor,
        target_inputs: Tensor,
        target_labels: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        adapted = adapt(
            model,
            start_params,
            support_inputs,
            support_labels,
            kind=kind,
            steps=settings.inner_steps,
            step_size=settings.inner_step_size,
            create_graph=settings.second_order,
        )
        if mean_direction is not None:
            adapted = coherence_corrected(
                adapted, start_params, mean_direction, settings.regularizer_gamma
            )
        outputs = forward(model, adapted, target_inputs)
        loss = loss_from_outputs(outputs, target_labels, kind)
        return loss, (loss.detach(), score_from_outputs(outputs, target_labels, kind))

    task_gradient = torch.func.grad(task_objective, has_aux=True)
    batched_gradient = torch.func.vmap(task_gradient, in_dims=(None, 0, 0, 0, 0))
    detached = {name: p.detach() for name, p in params.items()}
    gradient_sum: Params = {name: torch.zeros_like(p) for name, p in detached.items()}
    loss_sum = torch.zeros((), dtype=torch.float64)
    score_sum = torch.zeros((), dtype=torch.float64)
    for start, stop in _chunks(len(batch), settings.task_chunk_size):
        parts = _task_split(batch, start, stop)
        if stop - start == 1:
            grads, (loss, score) = task_gradient(detached, *(part[0] for part in parts))
            grads = {name: g[None] for name, g in grads.items()}
        else:
            grads, (loss, score) = batched_gradient(detached, *parts)
        for name, g in grads.items():
            gradient_sum[name] += g.sum(dim=0)
        loss_sum += loss.double().sum()
        score_sum += score.double().sum()
    tasks = len(batch)
    return MetaGradient(
        gradients={name: g / tasks for name, g in gradient_sum.items()},
        target_loss=float(loss_sum) / tasks,
        target_score=float(score_sum) / tasks,
    )


class MetaLearner:
    """θs and its Adam optimizer; :meth:`step` applies one meta-update."""

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: MetaSettings,
        meta_learning_rate: float,
    ) -> None:
        self.model = model
        self.kind = kind
        self.settings = settings
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=meta_learning_rate)

    def step(self, batch: TaskBatch) -> MetaGradient:
        """One meta-update on ``batch``; returns the meta-gradient and the batch's target loss."""
        result = meta_gradient(self.model, self.params, batch, self.kind, self.settings)
        for name, p in self.params.items():
            p.grad = result.gradients[name].detach().clone()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return result
