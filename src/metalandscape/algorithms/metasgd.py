"""Meta-SGD (Li, Zhou, Chen & Li 2017): per-parameter step sizes α meta-learned with θ.

Adaptation is θ̃ = θ − α ⊙ ∇θ L(D; θ) (T steps, one in the paper), with α shaped like θ. Both θ
and α follow the meta-gradient of the mean target loss after adaptation (second order by default,
``first_order`` drops the inner Hessian; α still gets its gradient −∇L(D) ⊙ ∇L(D') either way),
with one Adam optimizer over θ ∪ α.

α starts uniform in [0.005, 0.1] (the paper's initialisation, drawn from a seed; Li et al. 2017,
§4) or, with ``step_size_init="constant"``, equal to ``inner_step_size`` everywhere (Meta-SGD
started at MAML). Checkpoints hold α next to θ under :data:`STEP_SIZE_PREFIX` (see
:meth:`MetaSGDLearner.parameters_to_save`, :func:`split_step_sizes`); evaluation adapts with the
learned α (:func:`adapt_for_evaluation`; the registered :data:`ALGORITHM` hands α to the
landscape metrics through :meth:`MetaSGDAlgorithm.evaluation_adaptation`). The run config's
``metasgd_step_size_init``, ``metasgd_step_size_range`` and ``metasgd_first_order`` set α's start
and the variant; α's uniform draw uses the run's seed.

:func:`adapt_with_step_sizes` is :func:`metalandscape.functional.adapt` with per-parameter step
sizes, where parameters without a step size stay fixed (ANIL's inner loop has one on the head
only).
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
    adapt_for_evaluation,
    check_inner_loop,
    inner_loop,
    inner_loop_settings,
)
from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.functional import Params, StepSizes, adapt, gradient_leaves

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

STEP_SIZE_PREFIX = "step_size."
"""Prefix of α's entries in a saved parameter dict: α of ``head.weight`` is ``step_size.head.weight``."""

StepSizeInit = Literal["uniform", "constant"]


def adapt_with_step_sizes(
    model: nn.Module, params: Params, inputs: Tensor, labels: Tensor, **options: Any
) -> Params:
    """:func:`metalandscape.functional.adapt` with ``step_sizes``: one per parameter name."""
    return adapt(model, params, inputs, labels, step_size=options.pop("step_sizes"), **options)


@dataclass(frozen=True)
class MetaSGDSettings:
    """One Meta-SGD meta-update; ``inner_step_size`` is α's constant initial value (if chosen)."""

    inner_steps: int = 1
    inner_step_size: float = 0.01
    step_size_init: StepSizeInit = "uniform"
    step_size_range: tuple[float, float] = (0.005, 0.1)
    first_order: bool = False
    task_chunk_size: int | None = 1

    def __post_init__(self) -> None:
        check_inner_loop(self.inner_steps, self.task_chunk_size)
        if self.step_size_init not in ("uniform", "constant"):
            raise ValueError(f"step_size_init must be uniform or constant: {self.step_size_init!r}")
        low, high = self.step_size_range
        if not 0 <= low <= high:
            raise ValueError(f"step_size_range must satisfy 0 <= low <= high, got {low}, {high}")

    def start_and_step_sizes(self, params: Params) -> tuple[Params, Params]:
        """Evaluation adapts θ of the saved θ ∪ α ``params`` with the learned α."""
        return split_step_sizes(params)


@dataclass(frozen=True)
class MetaSGDGradient:
    """Mean meta-gradients w.r.t. θ and α of a meta-batch, its mean target loss and score."""

    gradients: Params
    step_size_gradients: Params
    target_loss: float
    target_score: float


def initial_step_sizes(params: Params, settings: MetaSGDSettings, seed: int) -> Params:
    """α shaped like θ: uniform in ``step_size_range`` (drawn from ``seed``) or constant."""
    generator = torch.Generator().manual_seed(int(seed))
    low, high = settings.step_size_range
    out: Params = {}
    for name, value in params.items():
        if settings.step_size_init == "constant":
            alpha = torch.full(value.shape, settings.inner_step_size, dtype=value.dtype)
        else:
            alpha = torch.empty(value.shape, dtype=value.dtype).uniform_(
                low, high, generator=generator
            )
        out[name] = alpha.to(value.device)
    return out


def meta_gradient(
    model: nn.Module,
    params: Params,
    step_sizes: Params,
    batch: TaskBatch,
    kind: TaskKind,
    settings: MetaSGDSettings,
) -> MetaSGDGradient:
    """∇θ and ∇α of mean_i L(D'ᵢ; θ − α ⊙ ∇L(Dᵢ; θ)) (T steps) over one meta-batch."""
    leaves = gradient_leaves(params)
    alphas = gradient_leaves(step_sizes)
    if alphas.keys() != leaves.keys():
        raise KeyError(f"step sizes and parameters differ: {sorted(alphas.keys() ^ leaves.keys())}")
    alpha_loop = inner_loop(
        model,
        kind,
        steps=settings.inner_steps,
        step_size=alphas,
        create_graph=not settings.first_order,
    )
    meta_batch = MetaBatchPass(model, kind, settings.task_chunk_size, alpha_loop)
    loss, score = meta_batch.backward(leaves, batch)
    return MetaSGDGradient(
        gradients={n: leaf.grad for n, leaf in leaves.items()},  # type: ignore[misc]
        step_size_gradients={n: a.grad for n, a in alphas.items()},  # type: ignore[misc]
        target_loss=loss,
        target_score=score,
    )


def with_step_sizes(params: Params, step_sizes: Params) -> Params:
    """θ ∪ α: ``params`` and ``step_sizes`` under :data:`STEP_SIZE_PREFIX`."""
    return {**params, **{STEP_SIZE_PREFIX + name: a for name, a in step_sizes.items()}}


def split_step_sizes(saved: Params) -> tuple[Params, Params]:
    """(θ, α) of a saved dict holding θ and α under :data:`STEP_SIZE_PREFIX`."""
    step_sizes = {
        name.removeprefix(STEP_SIZE_PREFIX): value
        for name, value in saved.items()
        if name.startswith(STEP_SIZE_PREFIX)
    }
    params = {name: value for name, value in saved.items() if not name.startswith(STEP_SIZE_PREFIX)}
    if step_sizes.keys() != params.keys():
        missing = sorted(params.keys() - step_sizes.keys())
        raise KeyError(
            f"saved Meta-SGD parameters lack step sizes ({STEP_SIZE_PREFIX}*): {missing}"
        )
    return params, step_sizes


class MetaSGDLearner(MetaBatchLearner):
    """θ, α and one Adam optimizer over both; :meth:`step` applies one meta-update.

    ``params`` is θ ∪ α (α under :data:`STEP_SIZE_PREFIX`, the same tensors as ``theta`` and
    ``step_sizes``): what training checkpoints and resumes from. The constructor takes θ (α drawn
    from ``seed`` unless ``step_sizes`` are given) or a saved θ ∪ α; keywords as
    :class:`~metalandscape.algorithms.maml.MetaLearner`'s.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: MetaSGDSettings,
        meta_learning_rate: float,
        seed: int = 0,
        step_sizes: Params | None = None,
        **keywords: Any,
    ) -> None:
        if step_sizes is None and any(name.startswith(STEP_SIZE_PREFIX) for name in params):
            params, step_sizes = split_step_sizes(params)
        if step_sizes is None:
            step_sizes = initial_step_sizes(params, settings, seed)
        joint = with_step_sizes(params, step_sizes)
        super().__init__(model, joint, kind, settings, meta_learning_rate, **keywords)
        self.theta, self.step_sizes = split_step_sizes(self.params)

    def step(self, batch: TaskBatch) -> MetaSGDGradient:
        """One meta-update of θ and α on ``batch``."""
        result = meta_gradient(
            self.model, self.theta, self.step_sizes, batch, self.kind, self.settings
        )
        self.descend(with_step_sizes(result.gradients, result.step_size_gradients))
        return result

    @classmethod
    def from_saved(
        cls,
        model: nn.Module,
        saved: Params,
        kind: TaskKind,
        settings: MetaSGDSettings,
        meta_learning_rate: float,
        **keywords: Any,
    ) -> MetaSGDLearner:
        """A learner resuming from :meth:`parameters_to_save`'s dict (fresh optimizer state)."""
        return cls(model, saved, kind, settings, meta_learning_rate, **keywords)


@dataclass(frozen=True)
class MetaSGDAlgorithm(AlgorithmBase):
    """Meta-SGD: meta-train θ and α together; evaluation adapts with the learned α.

    Its learner starts from θ of a fresh run (α drawn from the run's seed) or a checkpoint's θ ∪ α.
    """

    learner_type = MetaSGDLearner

    def settings(self, config: RunConfig) -> MetaSGDSettings:
        """The run's Meta-SGD settings."""
        return MetaSGDSettings(
            **inner_loop_settings(config),
            step_size_init=cast(StepSizeInit, config.metasgd_step_size_init),
            step_size_range=config.metasgd_step_size_range,
            first_order=config.metasgd_first_order,
        )

    def learner_arguments(self, config: RunConfig) -> tuple[float, int]:
        """The meta-learning rate and the seed of α's uniform draw."""
        return config.meta_learning_rate, config.seed


ALGORITHM = MetaSGDAlgorithm()


__all__ = [
    "ALGORITHM",
    "STEP_SIZE_PREFIX",
    "MetaSGDAlgorithm",
    "MetaSGDGradient",
    "MetaSGDLearner",
    "MetaSGDSettings",
    "StepSizes",
    "adapt_for_evaluation",
    "adapt_with_step_sizes",
    "initial_step_sizes",
    "meta_gradient",
    "split_step_sizes",
    "with_step_sizes",
]
