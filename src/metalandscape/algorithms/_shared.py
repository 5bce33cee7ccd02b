"""What the registered algorithms share: task chunks, the chunked meta-update, learners' and
algorithms' common parts. Each algorithm module keeps only what differs.

A meta-batch is processed in chunks of ``task_chunk_size`` tasks (:func:`task_chunks`). Within a
chunk θ is viewed once per task (``expand``, no copy), the forward passes are mapped over tasks
with ``torch.func.vmap`` and every gradient — inner and outer — is plain autograd with respect to
those per-task views. That is exact with BatchNorm (tested against the per-task loop and finite
differences in float64), unlike ``torch.func.grad`` of a mean over a vmapped loss, and it keeps
only one chunk's graph alive. Chunk size 1 is the per-task loop (least memory, the CPU default for
Conv-4); the whole meta-batch in one chunk is fastest for the small sinusoid MLP (see benchmarks/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from metalandscape.algorithms import EvaluationStart, HeadMode, Learner
from metalandscape.data.tasks import TaskBatch, TaskKind, TaskSampler, TaskSource
from metalandscape.functional import (
    Params,
    StepSizes,
    adapt,
    forward,
    forward_tasks,
    gradient_leaves,
    loss_from_outputs,
    losses_from_outputs,
    score_from_outputs,
    scores_from_outputs,
)
from metalandscape.optimizers import Adam, Optimizer

if TYPE_CHECKING:
    from metalandscape.config import RunConfig


def check_inner_loop(inner_steps: int, task_chunk_size: int | None) -> None:
    """Refuse fewer than one inner step or a chunk size below 1 (``None``: whole meta-batches)."""
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
    if task_chunk_size is not None and task_chunk_size < 1:
        raise ValueError(f"task_chunk_size must be positive or None, got {task_chunk_size}")


def resolved_inner_loop(config: RunConfig) -> tuple[int, float]:
    """The run's ``inner_steps`` and ``inner_step_size`` (refused before the config is resolved)."""
    if config.inner_steps is None or config.inner_step_size is None:
        raise ValueError("run config has no inner_steps/inner_step_size; resolve it first")
    return config.inner_steps, config.inner_step_size


def inner_loop_settings(config: RunConfig) -> dict[str, Any]:
    """A meta-learner's settings keywords from the run: T, α and tasks per ``vmap`` call."""
    steps, step_size = resolved_inner_loop(config)
    return {
        "inner_steps": steps,
        "inner_step_size": step_size,
        "task_chunk_size": config.task_chunk_size,
    }


class InnerLoopSettings(Protocol):
    """What every algorithm's settings hold: the evaluation inner loop."""

    inner_steps: int

    def start_and_step_sizes(self, params: Params) -> tuple[Params, float | StepSizes]:
        """Where evaluation adapts from, and with which step sizes, for trained ``params``."""
        ...


@dataclass(frozen=True)
class TaskChunk:
    """Some tasks of a meta-batch: with a leading task axis when ``batched``, else one task."""

    support_inputs: Tensor
    support_labels: Tensor
    target_inputs: Tensor
    target_labels: Tensor
    tasks: int
    batched: bool

    def starts(self, params: Params) -> Params:
        """``params`` viewed once per task (``expand``, no copy) when batched, else ``params``."""
        if not self.batched:
            return params
        return {name: p.expand(self.tasks, *p.shape) for name, p in params.items()}


def task_chunks(
    batch: TaskBatch, chunk_size: int | None, *, keep_task_axis: bool = False
) -> Iterator[TaskChunk]:
    """``batch`` in chunks of ``chunk_size`` tasks (``None``: one chunk); a chunk of one task
    loses its task axis (the plain per-task loop) unless ``keep_task_axis``."""
    tasks = len(batch)
    size = tasks if chunk_size is None else chunk_size
    for start in range(0, tasks, size):
        stop = min(start + size, tasks)
        parts = (
            batch.support_inputs[start:stop],
            batch.support_labels[start:stop],
            batch.target_inputs[start:stop],
            batch.target_labels[start:stop],
        )
        batched = keep_task_axis or stop - start > 1
        if not batched:
            parts = tuple(part[0] for part in parts)
        yield TaskChunk(*parts, tasks=stop - start, batched=batched)


ChunkAdaptation = Callable[[Params, TaskChunk], Params]
"""Adapted parameters of a chunk's tasks from their per-task starts (:meth:`TaskChunk.starts`)."""


def support_adaptation(
    adapt_task: Callable[..., Params], model: nn.Module, **options: Any
) -> ChunkAdaptation:
    """``adapt_task(model, starts, support inputs, support labels, batched=…, **options)`` on
    each chunk: :func:`~metalandscape.functional.adapt` or an inner loop called like it."""

    def adapt_chunk(starts: Params, chunk: TaskChunk) -> Params:
        inputs, labels = chunk.support_inputs, chunk.support_labels
        return adapt_task(model, starts, inputs, labels, batched=chunk.batched, **options)

    return adapt_chunk


def inner_loop(
    model: nn.Module,
    kind: TaskKind,
    *,
    steps: int,
    step_size: float | StepSizes,
    create_graph: bool,
) -> ChunkAdaptation:
    """:func:`~metalandscape.functional.adapt` on each chunk's support sets."""
    return support_adaptation(
        adapt, model, kind=kind, steps=steps, step_size=step_size, create_graph=create_graph
    )


def target_losses(
    model: nn.Module, adapted: Params, chunk: TaskChunk, kind: TaskKind
) -> tuple[Tensor, Tensor]:
    """Per-task target losses (differentiable) and scores (not) ``[tasks]`` of a chunk at θ̃."""
    if not chunk.batched:
        outputs = forward(model, adapted, chunk.target_inputs)
        losses = loss_from_outputs(outputs, chunk.target_labels, kind)
        return losses[None], score_from_outputs(outputs, chunk.target_labels, kind)[None]
    outputs = forward_tasks(model, adapted, chunk.target_inputs)
    return (
        losses_from_outputs(outputs, chunk.target_labels, kind),
        scores_from_outputs(outputs.detach(), chunk.target_labels, kind),
    )


@dataclass(frozen=True)
class MetaGradient:
    """Mean meta-gradient of a meta-batch and the mean target loss and score behind it."""

    gradients: Params
    target_loss: float
    target_score: float


@dataclass(frozen=True)
class MetaBatchPass:
    """One pass over a meta-batch: each chunk of ``task_chunk_size`` tasks adapts from per-task
    views of θ by ``adapt_chunk`` and is scored on its target sets with ``model``'s loss."""

    model: nn.Module
    kind: TaskKind
    task_chunk_size: int | None
    adapt_chunk: ChunkAdaptation

    def run(
        self,
        params: Params,
        batch: TaskBatch,
        use_chunk: Callable[[TaskChunk, Params, Tensor], None],
    ) -> tuple[float, float]:
        """Hand ``use_chunk`` each chunk, its adapted parameters and its per-task target losses;
        returns the mean target loss and score."""
        loss_sum = torch.zeros((), dtype=torch.float64)
        score_sum = torch.zeros((), dtype=torch.float64)
        for chunk in task_chunks(batch, self.task_chunk_size):
            adapted = self.adapt_chunk(chunk.starts(params), chunk)
            losses, scores = target_losses(self.model, adapted, chunk, self.kind)
            use_chunk(chunk, adapted, losses)
            loss_sum += losses.detach().double().sum()
            score_sum += scores.double().sum()
        return float(loss_sum) / len(batch), float(score_sum) / len(batch)

    def backward(self, leaves: Params, batch: TaskBatch) -> tuple[float, float]:
        """Back-propagate mean_i L(D'ᵢ; θ̃ᵢ) into ``leaves`` (and into step-size tensors
        ``adapt_chunk`` uses that require gradients) one chunk's share at a time, so only one
        chunk's graph is alive; gradients accumulate in ``.grad``. Returns the mean target loss
        and score."""

        def backward_share(chunk: TaskChunk, adapted: Params, losses: Tensor) -> None:
            (losses.sum() / len(batch)).backward()

        with torch.enable_grad():
            return self.run(leaves, batch, backward_share)

    def meta_gradient(self, params: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ mean_i L(D'ᵢ; θ̃ᵢ) at θ = ``params`` over ``batch``."""
        leaves = gradient_leaves(params)
        loss, score = self.backward(leaves, batch)
        return MetaGradient(
            gradients={name: leaf.grad for name, leaf in leaves.items()},  # type: ignore[misc]
            target_loss=loss,
            target_score=score,
        )


def adapt_for_evaluation(
    model: nn.Module,
    params: Params,
    support_inputs: Tensor,
    support_labels: Tensor,
    *,
    kind: TaskKind,
    settings: InnerLoopSettings,
    batched: bool = False,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """θ̃ of one task from trained ``params``: ``settings.inner_steps`` steps with the step sizes
    of :meth:`~InnerLoopSettings.start_and_step_sizes`, no graph kept.

    ``batched``: θ and the data carry a leading task axis (θ may be ``expand``-ed views). With
    ``return_trajectory`` also returns [θ0, …, θT].
    """
    start, step_size = settings.start_and_step_sizes(params)
    if isinstance(step_size, Mapping):
        step_size = {n: a.detach() if isinstance(a, Tensor) else a for n, a in step_size.items()}
    trajectory: list[Params] = []
    adapted = adapt(
        model,
        {name: p.detach() for name, p in start.items()},
        support_inputs,
        support_labels,
        kind=kind,
        steps=settings.inner_steps,
        step_size=step_size,
        batched=batched,
        trajectory=trajectory,
    )
    return (adapted, trajectory) if return_trajectory else adapted


class TrainedParameters:
    """A learner's trained tensors ``params`` (fresh leaf copies) and one optimizer over them."""

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        learning_rate: float,
        device: torch.device | str,
        optimizer: type[Optimizer] = Adam,
    ) -> None:
        self.model = model
        self.kind = kind
        self.device = torch.device(device)
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.optimizer = optimizer(self.params.values(), lr=learning_rate)

    def descend(self, gradients: Params) -> None:
        """One optimizer step with ``gradients`` (a dict like ``params``) as the gradients."""
        for name, p in self.params.items():
            p.grad = gradients[name]  # fresh tensors: nothing else holds them
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def parameters_to_save(self) -> Params:
        """``params``, detached: what a checkpoint holds."""
        return {name: p.detach() for name, p in self.params.items()}


class MetaBatchLearner(TrainedParameters):
    """A meta-learner: :meth:`step` updates on a meta-batch, :meth:`train_step` on the run's
    meta-train batch ``iteration``. Subclasses define :meth:`meta_gradient` (or :meth:`step`)."""

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: Any,
        learning_rate: float,
        *,
        sampler: TaskSampler | None = None,
        meta_batch_size: int | None = None,
        device: torch.device | str = "cpu",
        optimizer: type[Optimizer] = Adam,
    ) -> None:
        super().__init__(model, params, kind, learning_rate, device, optimizer)
        self.settings = settings
        self.sampler = sampler
        self.meta_batch_size = meta_batch_size

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """The meta-gradient at ``params`` of ``batch``."""
        raise NotImplementedError

    def step(self, batch: TaskBatch) -> Any:
        """One meta-update on ``batch``; returns the meta-gradient and the batch's target loss."""
        result = self.meta_gradient(batch)
        self.descend(result.gradients)
        return result

    def train_step(self, iteration: int) -> tuple[float, float]:
        """One meta-update on meta-train batch ``iteration``; returns its target loss and score."""
        if self.sampler is None or self.meta_batch_size is None:
            raise ValueError("train_step needs the learner's sampler and meta_batch_size")
        batch = self.sampler.meta_batch("train", iteration, self.meta_batch_size)
        result = self.step(batch.to(self.device))
        return result.target_loss, result.target_score


class AlgorithmBase:
    """The parts of :class:`~metalandscape.algorithms.Algorithm` every registered algorithm
    shares: its learner is ``learner_type(model, θ, kind, settings, *arguments, **batches,
    device=…)``; evaluation adapts from the same start for every task as the settings say
    (:meth:`InnerLoopSettings.start_and_step_sizes`). Subclasses name ``learner_type`` and
    define :meth:`settings`; the other hooks have meta-learners' defaults."""

    learner_type: ClassVar[Callable[..., Learner]]

    def settings(self, config: RunConfig) -> Any:
        """The run's settings of this algorithm."""
        raise NotImplementedError

    def learner_settings(self, config: RunConfig, device: torch.device) -> Any:
        """The settings the learner trains with on ``device`` (:meth:`settings` by default)."""
        return self.settings(config)

    def learner_arguments(self, config: RunConfig) -> tuple[Any, ...]:
        """The learner's arguments after its settings: the meta-learning rate by default."""
        return (config.meta_learning_rate,)

    def batches(self, config: RunConfig, source: TaskSource) -> dict[str, Any]:
        """Where the learner's training batches come from: the run's meta-train batches."""
        return {
            "sampler": TaskSampler(source, config.seed),
            "meta_batch_size": config.meta_batch_size,
        }

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
    ) -> Learner:
        """A learner from ``params`` on the run's training batches."""
        return self.learner_type(
            model,
            params,
            source.kind,
            self.learner_settings(config, device),
            *self.learner_arguments(config),
            **self.batches(config, source),
            device=device,
        )

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """The same start for every task (the head is meta-learned: ``head`` does not apply)."""
        return EvaluationStart(self.settings(config).start_and_step_sizes(params)[0])

    def evaluation_adaptation_options(self, config: RunConfig) -> dict[str, Any]:
        """Plain gradient descent: no further keywords of the inner loop."""
        return {}

    def evaluation_adaptation(
        self, config: RunConfig, params: Params
    ) -> tuple[int, float | StepSizes]:
        """The run's T inner steps with the step sizes the settings give for ``params``."""
        settings = self.settings(config)
        return settings.inner_steps, settings.start_and_step_sizes(params)[1]
