"""MAML (and the MAML family's shared meta-update) as pure functions of a params dict.

First-Order MAML (:mod:`.fomaml`) and the paper's regularized MAML (:mod:`.regmaml`) are this
module's :class:`MetaAlgorithm` with other flags. Tasks go in chunks of ``task_chunk_size`` as
:mod:`metalandscape.algorithms._shared` describes (per-task views of θs, forward passes mapped
with ``vmap``, plain autograd, one chunk's graph alive at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from metalandscape.algorithms._shared import (
    AlgorithmBase,
    ChunkAdaptation,
    MetaBatchLearner,
    MetaBatchPass,
    MetaGradient,
    TaskChunk,
    check_inner_loop,
    inner_loop,
    inner_loop_settings,
    task_chunks,
)
from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.devices import task_chunk_size
from metalandscape.functional import Params, coherence_corrected, unit_direction

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

__all__ = [
    "ALGORITHM",
    "MetaAlgorithm",
    "MetaGradient",
    "MetaLearner",
    "MetaSettings",
    "mean_adaptation_direction",
    "meta_gradient",
]


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
        check_inner_loop(self.inner_steps, self.task_chunk_size)

    def start_and_step_sizes(self, params: Params) -> tuple[Params, float]:
        """Evaluation adapts from θs with the inner loop's α."""
        return params, self.inner_step_size

    def adaptation(
        self, model: nn.Module, kind: TaskKind, *, create_graph: bool
    ) -> ChunkAdaptation:
        """The inner loop (T steps of α on every parameter) of a chunk of tasks."""
        return inner_loop(
            model,
            kind,
            steps=self.inner_steps,
            step_size=self.inner_step_size,
            create_graph=create_graph,
        )


def mean_adaptation_direction(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> Tensor:
    """θ̂μ: the mean over the meta-batch of the unit adaptation directions θ̂ᵢ (no gradient)."""
    detached = {name: p.detach() for name, p in params.items()}
    adapt_chunk = settings.adaptation(model, kind, create_graph=False)
    total = None
    for chunk in task_chunks(batch, settings.task_chunk_size, keep_task_axis=True):
        starts = chunk.starts(detached)
        chunk_sum = unit_direction(adapt_chunk(starts, chunk), starts, batched=True).sum(dim=0)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None
    return total / len(batch)


def meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: MetaSettings
) -> MetaGradient:
    """The meta-gradient ∇θs mean_i L(D'ᵢ; θ̃ᵢ) (θ̄ᵢ for regularized MAML) of one meta-batch.

    Each chunk of tasks adapts from per-task views of θs (plain autograd, ``create_graph`` for
    second order), and its share of the mean target loss is back-propagated at once.
    """
    adapt_chunk = settings.adaptation(model, kind, create_graph=settings.second_order)
    if settings.regularized:
        mean_direction = mean_adaptation_direction(model, params, batch, kind, settings)
        plain = adapt_chunk

        def corrected(starts: Params, chunk: TaskChunk) -> Params:
            return coherence_corrected(
                plain(starts, chunk),
                starts,
                mean_direction,
                settings.regularizer_gamma,
                batched=chunk.batched,
            )

        adapt_chunk = corrected
    meta_batch = MetaBatchPass(model, kind, settings.task_chunk_size, adapt_chunk)
    return meta_batch.meta_gradient(params, batch)


class MetaLearner(MetaBatchLearner):
    """θs and its Adam optimizer; :meth:`step` applies one meta-update.

    Arguments: model, θs, task kind, :class:`MetaSettings`, the meta-learning rate, and the
    keywords ``sampler``, ``meta_batch_size`` (for :meth:`train_step`) and ``device``.
    """

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """The MAML-family meta-gradient of ``batch`` at θs."""
        return meta_gradient(self.model, self.params, batch, self.kind, self.settings)


@dataclass(frozen=True)
class MetaAlgorithm(AlgorithmBase):
    """A MAML-family algorithm: meta-train θs, evaluate by its inner loop from θs."""

    second_order: bool = True
    regularized: bool = False
    learner_type = MetaLearner

    def settings(self, config: RunConfig) -> MetaSettings:
        """The meta-update settings of a run."""
        return MetaSettings(
            **inner_loop_settings(config),
            regularizer_gamma=config.regularizer_gamma,
            second_order=self.second_order,
            regularized=self.regularized,
        )

    meta_settings = settings

    def learner_settings(self, config: RunConfig, device: torch.device) -> MetaSettings:
        """The run's settings with tasks per ``vmap`` call by device
        (:func:`~metalandscape.devices.task_chunk_size`)."""
        return replace(
            self.settings(config), task_chunk_size=task_chunk_size(config.task_chunk_size, device)
        )


ALGORITHM = MetaAlgorithm()
