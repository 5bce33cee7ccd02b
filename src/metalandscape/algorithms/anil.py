"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020): the inner loop adapts the head only.

The inner loop is MAML's (T steps of full-batch gradient descent on the support loss with one
step size) restricted to the final layer, the parameters named :data:`~metalandscape.models.
HEAD_PREFIX`; the body stays at θ. The outer loop updates all parameters with Adam through the
meta-gradient of the mean target loss: second order differentiates through the head's inner loop
(the body's gradient includes how the features shape the head's adaptation), ``first_order``
detaches the inner gradients as First-Order MAML does.

Evaluation adapts the head only, exactly as training does (:func:`adapt_for_evaluation`): the
adapted parameters and every point of the trajectory hold the body unchanged, so θ̃ − θ is zero
outside the head and adaptation directions, trajectory coherence and any displacement-based
quantity live in the head's parameters. Curvature metrics at θ̃ still see all parameters (the
Hessian of the support loss at θ̃ over body and head); a metric that needs the body to move
cannot be asked of ANIL. The registered :data:`ALGORITHM` hands the metrics exactly this
adaptation (:meth:`ANILAlgorithm.evaluation_adaptation`: a step size for the head parameters
only), and gradient coherence, measured at θ over all parameters, keeps its meaning as a property
of the landscape at the meta-train solution (its body part drives no adaptation).

The run config's ``anil_first_order`` selects the first-order variant; the inner loop takes the
run's ``inner_steps`` and ``inner_step_size`` and the outer Adam its ``meta_learning_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalandscape.algorithms import EvaluationStart, HeadMode
from metalandscape.algorithms.maml import MetaGradient
from metalandscape.algorithms.metasgd import adapt_with_step_sizes, backward_target_loss
from metalandscape.config import RunConfig
from metalandscape.data.tasks import TaskBatch, TaskKind, TaskSampler, TaskSource
from metalandscape.functional import Params
from metalandscape.models import HEAD_PREFIX


@dataclass(frozen=True)
class ANILSettings:
    """One ANIL meta-update: head-only inner loop of ``inner_steps`` steps of ``inner_step_size``."""

    inner_steps: int
    inner_step_size: float
    first_order: bool = False
    task_chunk_size: int | None = 1

    def __post_init__(self) -> None:
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.task_chunk_size is not None and self.task_chunk_size < 1:
            raise ValueError(
                f"task_chunk_size must be positive or None, got {self.task_chunk_size}"
            )


def head_step_sizes(params: Params, step_size: float) -> dict[str, float]:
    """``step_size`` for each head parameter (names starting with ``HEAD_PREFIX``), none else."""
    sizes = {name: step_size for name in params if name.startswith(HEAD_PREFIX)}
    if not sizes:
        raise KeyError(f"no head parameters (names starting with {HEAD_PREFIX!r}) to adapt")
    return sizes


def adapt_head(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    settings: ANILSettings,
    batched: bool = False,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """ANIL's inner loop: the head takes ``inner_steps`` gradient steps, the body stays at θ.

    Differentiable in ``params`` (second order unless ``settings.first_order``) when they require
    gradients; otherwise (evaluation) no graph is kept.
    """
    return adapt_with_step_sizes(
        model,
        params,
        inputs,
        labels,
        kind=kind,
        steps=settings.inner_steps,
        step_sizes=head_step_sizes(params, settings.inner_step_size),
        create_graph=not settings.first_order,
        batched=batched,
        return_trajectory=return_trajectory,
    )


def meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: ANILSettings
) -> MetaGradient:
    """∇θ mean_i L(D'ᵢ; θ̃ᵢ) with θ̃ᵢ = θ with its head adapted on Dᵢ, over one meta-batch."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    loss, score = backward_target_loss(
        model,
        leaves,
        head_step_sizes(leaves, settings.inner_step_size),
        batch,
        kind,
        steps=settings.inner_steps,
        create_graph=not settings.first_order,
        task_chunk_size=settings.task_chunk_size,
    )
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
    settings: ANILSettings,
    batched: bool = False,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """θ̃ of one task: the head adapted as in training, the body left at θ.

    ``batched``: θ and the data carry a leading task axis (θ may be ``expand``-ed views).
    """
    return adapt_head(
        model,
        {n: p.detach() for n, p in params.items()},
        support_inputs,
        support_labels,
        kind=kind,
        settings=settings,
        batched=batched,
        return_trajectory=return_trajectory,
    )


class ANILLearner:
    """θ and its Adam optimizer; :meth:`step` applies one ANIL meta-update."""

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: ANILSettings,
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
        head_step_sizes(self.params, settings.inner_step_size)  # refuse a model without a head
        self.optimizer = torch.optim.Adam(self.params.values(), lr=meta_learning_rate)

    def step(self, batch: TaskBatch) -> MetaGradient:
        """One meta-update on ``batch``; returns the meta-gradient and the batch's target loss."""
        result = meta_gradient(self.model, self.params, batch, self.kind, self.settings)
        for name, p in self.params.items():
            p.grad = result.gradients[name]
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

    def parameters_to_save(self) -> Params:
        """θ, detached."""
        return {name: p.detach() for name, p in self.params.items()}


@dataclass(frozen=True)
class ANILAlgorithm:
    """ANIL: meta-train θ through a head-only inner loop; evaluation adapts the head only."""

    def settings(self, config: RunConfig) -> ANILSettings:
        """The run's ANIL settings."""
        if config.inner_steps is None or config.inner_step_size is None:
            raise ValueError("run config has no inner_steps/inner_step_size; resolve it first")
        return ANILSettings(
            inner_steps=config.inner_steps,
            inner_step_size=config.inner_step_size,
            first_order=config.anil_first_order,
            task_chunk_size=config.task_chunk_size,
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
    ) -> ANILLearner:
        """θ with Adam at the meta-learning rate, drawing the run's meta-train batches."""
        return ANILLearner(
            model,
            params,
            source.kind,
            self.settings(config),
            config.meta_learning_rate,
            sampler=TaskSampler(source, config.seed),
            meta_batch_size=config.meta_batch_size,
            device=device,
        )

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """θ for every task (the head is meta-learned: ``head`` does not apply)."""
        return EvaluationStart(params)

    def evaluation_adaptation(
        self, config: RunConfig, params: Params
    ) -> tuple[int, dict[str, float]]:
        """The run's T steps of α on the head parameters; the body stays at θ."""
        assert config.inner_steps is not None and config.inner_step_size is not None
        return config.inner_steps, head_step_sizes(params, config.inner_step_size)


ALGORITHM = ANILAlgorithm()
