"""MAML (and the MAML family's shared meta-update) as pure functions of a params dict.

First-Order MAML (:mod:`.fomaml`) and the paper's regularized MAML (:mod:`.regmaml`) are this
module's :class:`MetaAlgorithm` with other flags.

A meta-batch is processed in chunks of ``task_chunk_size`` tasks. Within a chunk θs is viewed once
per task (``expand``, no copy), the forward passes are mapped over tasks with ``torch.func.vmap``
and every gradient — inner and outer — is plain autograd with respect to those per-task views.
That is exact with BatchNorm (tested against the per-task loop and finite differences in
float64), unlike ``torch.func.grad`` of a mean over a vmapped loss, and it keeps only one chunk's
graph alive. Chunk size 1 is the per-task loop (least memory, the CPU default for Conv-4); the
whole meta-batch in one chunk is fastest for the small sinusoid MLP (see benchmarks/).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from metalandscape.algorithms import EvaluationStart, HeadMode
from metalandscape.config import RunConfig
from metalandscape.data.tasks import TaskBatch, TaskKind, TaskSampler, TaskSource
from metalandscape.devices import task_chunk_size
from metalandscape.functional import (
    Params,
    adapt,
    coherence_corrected,
    forward,
    loss_from_outputs,
    score_from_outputs,
    unit_direction,
)


@dataclass(frozen=True)
class MetaSettings:
    """One MAML-family meta-update.

    ``second_order``: gradients flow through the inner loop (MAML; not First-Order MAML).
    ``regularized``: the paper's coherence-regularized update (θ̄ᵢ instead of θ̃ᵢ).
    ``task_chunk_size``: tasks per ``vmap`` call; 1 loops over tasks (least memory), ``None`` maps
    the whole meta-batch at once.
    """

    inner_steps: int
    inner_step_size: float
    regularizer_gamma: float = 0.5
    task_chunk_size: int | None = 1
    second_order: bool = True
    regularized: bool = False

    def __post_init__(self) -> None:
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.task_chunk_size is not None and self.task_chunk_size < 1:
            raise ValueError(
                f"task_chunk_size must be positive or None, got {self.task_chunk_size}"
            )


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


def _expand(params: Params, tasks: int) -> Params:
    """``θ`` viewed once per task: ``[tasks, ...]`` without copying."""
    return {name: p.expand(tasks, *p.shape) for name, p in params.items()}


def mean_adaptation_direction(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> Tensor:
    """θ̂μ: the mean over the meta-batch of the unit adaptation directions θ̂ᵢ (no gradient)."""
    detached = {name: p.detach() for name, p in params.items()}
    total = None
    for start, stop in _chunks(len(batch), settings.task_chunk_size):
        support_inputs, support_labels, _, _ = _task_split(batch, start, stop)
        starts = _expand(detached, stop - start)
        adapted = adapt(
            model,
            starts,
            support_inputs,
            support_labels,
            kind=kind,
            steps=settings.inner_steps,
            step_size=settings.inner_step_size,
            create_graph=False,
            batched=True,
        )
        chunk_sum = unit_direction(adapted, starts, batched=True).sum(dim=0)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None
    return total / len(batch)


def meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> MetaGradient:
    """The meta-gradient ∇θs mean_i L(D'ᵢ; θ̃ᵢ) (θ̄ᵢ for regularized MAML) of one meta-batch.

    Each chunk of tasks adapts from per-task views of θs (plain autograd, ``create_graph`` for
    second order), and its share of the mean target loss is back-propagated at once, so only one
    chunk's graph is alive at a time.
    """
    mean_direction = None
    if settings.regularized:
        mean_direction = mean_adaptation_direction(model, params, batch, kind, settings)
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    tasks = len(batch)
    loss_sum = torch.zeros((), dtype=torch.float64)
    score_sum = torch.zeros((), dtype=torch.float64)
    with torch.enable_grad():
        for start, stop in _chunks(tasks, settings.task_chunk_size):
            support_inputs, support_labels, target_inputs, target_labels = _task_split(
                batch, start, stop
            )
            batched = stop - start > 1
            if batched:
                starts = _expand(leaves, stop - start)
            else:  # one task: no task axis, no vmap (the plain per-task loop)
                starts = leaves
                support_inputs, support_labels = support_inputs[0], support_labels[0]
                target_inputs, target_labels = target_inputs[0], target_labels[0]
            adapted = adapt(
                model,
                starts,
                support_inputs,
                support_labels,
                kind=kind,
                steps=settings.inner_steps,
                step_size=settings.inner_step_size,
                create_graph=settings.second_order,
                batched=batched,
            )
            if mean_direction is not None:
                adapted = coherence_corrected(
                    adapted, starts, mean_direction, settings.regularizer_gamma, batched=batched
                )
            if batched:
                outputs = torch.func.vmap(lambda p, x: forward(model, p, x))(adapted, target_inputs)
                losses = torch.func.vmap(lambda o, y: loss_from_outputs(o, y, kind))(
                    outputs, target_labels
                )
                scores = torch.func.vmap(lambda o, y: score_from_outputs(o, y, kind))(
                    outputs.detach(), target_labels
                )
            else:
                outputs = forward(model, adapted, target_inputs)
                losses = loss_from_outputs(outputs, target_labels, kind)[None]
                scores = score_from_outputs(outputs, target_labels, kind)[None]
            (losses.sum() / tasks).backward()
            loss_sum += losses.detach().double().sum()
            score_sum += scores.double().sum()
    return MetaGradient(
        gradients={name: leaf.grad for name, leaf in leaves.items()},  # type: ignore[misc]
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
        *,
        sampler: TaskSampler | None = None,
        meta_batch_size: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.kind = kind
        self.settings = settings
        self.sampler = sampler
        self.meta_batch_size = meta_batch_size
        self.device = torch.device(device)
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=meta_learning_rate)

    def step(self, batch: TaskBatch) -> MetaGradient:
        """One meta-update on ``batch``; returns the meta-gradient and the batch's target loss."""
        result = meta_gradient(self.model, self.params, batch, self.kind, self.settings)
        for name, p in self.params.items():
            p.grad = result.gradients[name]  # fresh leaves' gradients: nothing else holds them
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def train_step(self, iteration: int) -> tuple[float, float]:
        """One meta-update on meta-train batch ``iteration``; returns its target loss and score."""
        if self.sampler is None or self.meta_batch_size is None:
            raise ValueError("train_step needs the learner's sampler and meta_batch_size")
        batch = self.sampler.meta_batch("train", iteration, self.meta_batch_size)
        result = self.step(batch.to(self.device))
        return result.target_loss, result.target_score


@dataclass(frozen=True)
class MetaAlgorithm:
    """A MAML-family algorithm: meta-train θs, evaluate by its inner loop from θs."""

    second_order: bool = True
    regularized: bool = False

    def meta_settings(self, config: RunConfig) -> MetaSettings:
        """The meta-update settings of a run."""
        if config.inner_steps is None or config.inner_step_size is None:
            raise ValueError("run config has no inner_steps/inner_step_size; resolve it first")
        return MetaSettings(
            inner_steps=config.inner_steps,
            inner_step_size=config.inner_step_size,
            regularizer_gamma=config.regularizer_gamma,
            task_chunk_size=config.task_chunk_size,
            second_order=self.second_order,
            regularized=self.regularized,
        )

    def output_size(self, config: RunConfig, source: TaskSource) -> int:
        """The task's outputs."""
        return source.output_size

    def learner(
        self,
        config: RunConfig,
        model: nn.Module,
        params: Params,
        source: TaskSource,
        device: torch.device,
    ) -> MetaLearner:
        """θs with Adam at the meta-learning rate, drawing the run's meta-train batches.

        Tasks per ``vmap`` call by device (:func:`~metalandscape.devices.task_chunk_size`).
        """
        return MetaLearner(
            model,
            params,
            source.kind,
            replace(
                self.meta_settings(config),
                task_chunk_size=task_chunk_size(config.task_chunk_size, device),
            ),
            config.meta_learning_rate,
            sampler=TaskSampler(source, config.seed),
            meta_batch_size=config.meta_batch_size,
            device=device,
        )

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """θs for every task (the head is meta-learned: ``head`` does not apply)."""
        return EvaluationStart(params)

    def evaluation_adaptation(self, config: RunConfig, params: Params) -> tuple[int, float]:
        """The run's own inner loop (T steps of α)."""
        assert config.inner_steps is not None and config.inner_step_size is not None
        return config.inner_steps, config.inner_step_size


ALGORITHM = MetaAlgorithm()
