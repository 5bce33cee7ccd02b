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

:func:`adapt_with_step_sizes` and :func:`backward_target_loss` are the general inner loop and
meta-gradient with per-parameter step sizes, where parameters without a step size stay fixed:
ANIL (:mod:`metalandscape.algorithms.anil`) is this loop with a step size on the head only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from metalandscape.algorithms import EvaluationStart, HeadMode
from metalandscape.algorithms.maml import _chunks, _expand, _task_split
from metalandscape.config import RunConfig
from metalandscape.data.tasks import TaskBatch, TaskKind, TaskSampler, TaskSource
from metalandscape.functional import (
    Params,
    forward,
    loss_from_outputs,
    score_from_outputs,
    task_losses,
)

STEP_SIZE_PREFIX = "step_size."
"""Prefix of α's entries in a saved parameter dict: α of ``head.weight`` is ``step_size.head.weight``."""

StepSizeInit = Literal["uniform", "constant"]
StepSizes = Mapping[str, Tensor | float]


def adapt_with_step_sizes(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    steps: int,
    step_sizes: StepSizes,
    create_graph: bool = True,
    batched: bool = False,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """T steps θ ← θ − α ⊙ ∇θ L(support) on the parameters named in ``step_sizes``; others stay.

    Like :func:`metalandscape.functional.adapt` (``create_graph``, ``batched``,
    ``return_trajectory`` mean the same), with one step size per parameter: a float or a tensor
    broadcastable to it (α shaped like θ, also against a leading task axis). When neither the
    parameters nor the step sizes require gradients (evaluation) no graph is kept.
    """
    names = [name for name in params if name in step_sizes]
    if not names:
        raise ValueError("step_sizes names none of the parameters: nothing would adapt")
    tracked = any(p.requires_grad for p in params.values()) or any(
        isinstance(a, Tensor) and a.requires_grad for a in step_sizes.values()
    )

    def fresh_leaves(point: Params) -> Params:
        return {n: p.detach().requires_grad_(n in step_sizes) for n, p in point.items()}

    if not tracked:
        params = fresh_leaves(params)
        create_graph = False
    trajectory = [params]
    with torch.enable_grad():
        for _ in range(steps):
            loss = task_losses(model, params, inputs, labels, kind, batched=batched).sum()
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                params[name] = params[name] - step_sizes[name] * grad
            if not tracked:
                params = fresh_leaves(params)
            trajectory.append(params)
    if not tracked:
        trajectory = [{n: p.detach() for n, p in point.items()} for point in trajectory]
        params = trajectory[-1]
    if return_trajectory:
        return params, trajectory
    return params


def backward_target_loss(
    model: nn.Module,
    leaves: Params,
    step_sizes: StepSizes,
    batch: TaskBatch,
    kind: TaskKind,
    *,
    steps: int,
    create_graph: bool,
    task_chunk_size: int | None,
) -> tuple[float, float]:
    """Back-propagate mean_i L(D'ᵢ; θ̃ᵢ) into ``leaves`` (and step-size tensors needing gradients).

    Each task adapts from ``leaves`` with :func:`adapt_with_step_sizes`; tasks go in chunks as in
    :func:`metalandscape.algorithms.maml.meta_gradient` (per-task views, plain autograd, one
    chunk's graph alive at a time). Gradients accumulate in ``.grad``. Returns the mean target
    loss and score.
    """
    tasks = len(batch)
    loss_sum = torch.zeros((), dtype=torch.float64)
    score_sum = torch.zeros((), dtype=torch.float64)
    with torch.enable_grad():
        for start, stop in _chunks(tasks, task_chunk_size):
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
            adapted = adapt_with_step_sizes(
                model,
                starts,
                support_inputs,
                support_labels,
                kind=kind,
                steps=steps,
                step_sizes=step_sizes,
                create_graph=create_graph,
                batched=batched,
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
    return float(loss_sum) / tasks, float(score_sum) / tasks


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
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.step_size_init not in ("uniform", "constant"):
            raise ValueError(f"step_size_init must be uniform or constant: {self.step_size_init!r}")
        low, high = self.step_size_range
        if not 0 <= low <= high:
            raise ValueError(f"step_size_range must satisfy 0 <= low <= high, got {low}, {high}")
        if self.task_chunk_size is not None and self.task_chunk_size < 1:
            raise ValueError(
                f"task_chunk_size must be positive or None, got {self.task_chunk_size}"
            )


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
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    alphas = {name: a.detach().requires_grad_(True) for name, a in step_sizes.items()}
    if alphas.keys() != leaves.keys():
        raise KeyError(f"step sizes and parameters differ: {sorted(alphas.keys() ^ leaves.keys())}")
    loss, score = backward_target_loss(
        model,
        leaves,
        alphas,
        batch,
        kind,
        steps=settings.inner_steps,
        create_graph=not settings.first_order,
        task_chunk_size=settings.task_chunk_size,
    )
    return MetaSGDGradient(
        gradients={n: leaf.grad for n, leaf in leaves.items()},  # type: ignore[misc]
        step_size_gradients={n: a.grad for n, a in alphas.items()},  # type: ignore[misc]
        target_loss=loss,
        target_score=score,
    )


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


def adapt_for_evaluation(
    model: nn.Module,
    saved: Params,
    support_inputs: Tensor,
    support_labels: Tensor,
    *,
    kind: TaskKind,
    settings: MetaSGDSettings,
    batched: bool = False,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """θ̃ of one task from a saved θ ∪ α: ``inner_steps`` steps with the learned α.

    ``batched``: θ and the data carry a leading task axis (α broadcasts against it).

    Returns θ̃ without α (its names are θ's), and with ``return_trajectory`` also [θ0, …, θT].
    """
    params, step_sizes = split_step_sizes(saved)
    return adapt_with_step_sizes(
        model,
        {n: p.detach() for n, p in params.items()},
        support_inputs,
        support_labels,
        kind=kind,
        steps=settings.inner_steps,
        step_sizes={n: a.detach() for n, a in step_sizes.items()},
        batched=batched,
        return_trajectory=return_trajectory,
    )


class MetaSGDLearner:
    """θ, α and one Adam optimizer over both; :meth:`step` applies one meta-update.

    ``params`` is θ ∪ α (α under :data:`STEP_SIZE_PREFIX`, the same tensors as ``theta`` and
    ``step_sizes``): what training checkpoints and resumes from.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: MetaSGDSettings,
        meta_learning_rate: float,
        seed: int,
        step_sizes: Params | None = None,
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
        self.theta = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        if step_sizes is None:
            step_sizes = initial_step_sizes(params, settings, seed)
        self.step_sizes = {
            name: a.detach().clone().requires_grad_(True) for name, a in step_sizes.items()
        }
        self.params: Params = {
            **self.theta,
            **{STEP_SIZE_PREFIX + name: a for name, a in self.step_sizes.items()},
        }
        self.optimizer = torch.optim.Adam(self.params.values(), lr=meta_learning_rate)

    def step(self, batch: TaskBatch) -> MetaSGDGradient:
        """One meta-update of θ and α on ``batch``."""
        result = meta_gradient(
            self.model, self.theta, self.step_sizes, batch, self.kind, self.settings
        )
        for name, p in self.theta.items():
            p.grad = result.gradients[name]
        for name, a in self.step_sizes.items():
            a.grad = result.step_size_gradients[name]
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
        """θ and α (under :data:`STEP_SIZE_PREFIX`), detached: what a checkpoint must hold."""
        return {name: p.detach() for name, p in self.params.items()}

    @classmethod
    def from_saved(
        cls,
        model: nn.Module,
        saved: Params,
        kind: TaskKind,
        settings: MetaSGDSettings,
        meta_learning_rate: float,
        **kwargs: Any,
    ) -> MetaSGDLearner:
        """A learner resuming from :meth:`parameters_to_save`'s dict (fresh optimizer state).

        ``kwargs``: the constructor's keyword arguments (sampler, meta_batch_size, device).
        """
        params, step_sizes = split_step_sizes(saved)
        return cls(model, params, kind, settings, meta_learning_rate, 0, step_sizes, **kwargs)


@dataclass(frozen=True)
class MetaSGDAlgorithm:
    """Meta-SGD: meta-train θ and α together; evaluation adapts with the learned α."""

    def settings(self, config: RunConfig) -> MetaSGDSettings:
        """The run's Meta-SGD settings."""
        if config.inner_steps is None or config.inner_step_size is None:
            raise ValueError("run config has no inner_steps/inner_step_size; resolve it first")
        return MetaSGDSettings(
            inner_steps=config.inner_steps,
            inner_step_size=config.inner_step_size,
            step_size_init=cast(StepSizeInit, config.metasgd_step_size_init),
            step_size_range=config.metasgd_step_size_range,
            first_order=config.metasgd_first_order,
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
    ) -> MetaSGDLearner:
        """θ ∪ α with Adam at the meta-learning rate, drawing the run's meta-train batches.

        ``params`` is θ of a fresh run (α drawn from the run's seed) or a checkpoint's θ ∪ α.
        """
        settings = self.settings(config)
        keywords: dict[str, Any] = {
            "sampler": TaskSampler(source, config.seed),
            "meta_batch_size": config.meta_batch_size,
            "device": device,
        }
        if any(name.startswith(STEP_SIZE_PREFIX) for name in params):
            return MetaSGDLearner.from_saved(
                model, params, source.kind, settings, config.meta_learning_rate, **keywords
            )
        return MetaSGDLearner(
            model,
            params,
            source.kind,
            settings,
            config.meta_learning_rate,
            config.seed,
            **keywords,
        )

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """θ (without α) for every task (the head is meta-learned: ``head`` does not apply)."""
        return EvaluationStart(split_step_sizes(params)[0])

    def evaluation_adaptation(self, config: RunConfig, params: Params) -> tuple[int, Params]:
        """The run's T steps with the learned α of the checkpoint ``params`` (θ ∪ α)."""
        assert config.inner_steps is not None
        return config.inner_steps, split_step_sizes(params)[1]


ALGORITHM = MetaSGDAlgorithm()


__all__ = [
    "ALGORITHM",
    "STEP_SIZE_PREFIX",
    "MetaSGDAlgorithm",
    "MetaSGDGradient",
    "MetaSGDLearner",
    "MetaSGDSettings",
    "adapt_for_evaluation",
    "adapt_with_step_sizes",
    "backward_target_loss",
    "initial_step_sizes",
    "meta_gradient",
    "split_step_sizes",
]
