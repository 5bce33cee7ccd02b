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
from typing import TYPE_CHECKING, Any

from torch import nn

from metalandscape.algorithms._shared import (
    AlgorithmBase,
    MetaBatchLearner,
    MetaBatchPass,
    MetaGradient,
    adapt_for_evaluation,
    check_inner_loop,
    inner_loop,
    inner_loop_settings,
)
from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.functional import Params
from metalandscape.models import HEAD_PREFIX

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

__all__ = [
    "ALGORITHM",
    "ANILAlgorithm",
    "ANILLearner",
    "ANILSettings",
    "adapt_for_evaluation",
    "head_step_sizes",
    "meta_gradient",
]


def head_step_sizes(params: Params, step_size: float) -> dict[str, float]:
    """``step_size`` for each head parameter (names starting with ``HEAD_PREFIX``), none else."""
    sizes = {name: step_size for name in params if name.startswith(HEAD_PREFIX)}
    if not sizes:
        raise KeyError(f"no head parameters (names starting with {HEAD_PREFIX!r}) to adapt")
    return sizes


@dataclass(frozen=True)
class ANILSettings:
    """One ANIL meta-update: head-only inner loop of ``inner_steps`` steps of ``inner_step_size``."""

    inner_steps: int
    inner_step_size: float
    first_order: bool = False
    task_chunk_size: int | None = 1

    def __post_init__(self) -> None:
        check_inner_loop(self.inner_steps, self.task_chunk_size)

    def start_and_step_sizes(self, params: Params) -> tuple[Params, dict[str, float]]:
        """Evaluation adapts the head from θ as training does; the body stays at θ."""
        return params, head_step_sizes(params, self.inner_step_size)


def meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: ANILSettings
) -> MetaGradient:
    """∇θ mean_i L(D'ᵢ; θ̃ᵢ) with θ̃ᵢ = θ with its head adapted on Dᵢ, over one meta-batch."""
    head_loop = inner_loop(
        model,
        kind,
        steps=settings.inner_steps,
        step_size=head_step_sizes(params, settings.inner_step_size),
        create_graph=not settings.first_order,
    )
    meta_batch = MetaBatchPass(model, kind, settings.task_chunk_size, head_loop)
    return meta_batch.meta_gradient(params, batch)


class ANILLearner(MetaBatchLearner):
    """θ and its Adam optimizer; :meth:`step` applies one ANIL meta-update.

    Arguments as :class:`~metalandscape.algorithms.maml.MetaLearner`'s, with :class:`ANILSettings`.
    """

    def __init__(self, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        head_step_sizes(self.params, self.settings.inner_step_size)  # refuse a model without a head

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """ANIL's meta-gradient of ``batch`` at θ."""
        return meta_gradient(self.model, self.params, batch, self.kind, self.settings)


@dataclass(frozen=True)
class ANILAlgorithm(AlgorithmBase):
    """ANIL: meta-train θ through a head-only inner loop; evaluation adapts the head only."""

    learner_type = ANILLearner

    def settings(self, config: RunConfig) -> ANILSettings:
        """The run's ANIL settings."""
        return ANILSettings(
            **inner_loop_settings(config),
            first_order=config.anil_first_order,
        )


ALGORITHM = ANILAlgorithm()
