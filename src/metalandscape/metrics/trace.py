"""Hessian trace of the support loss at each adapted θ̃ᵢ by Hutchinson's estimator.

tr(H) = E[zᵀHz] for Rademacher probes z (entries ±1): the estimate is the mean of ``probes``
quadratic forms zᵀHz, each one Hessian-vector product, and its own uncertainty is the standard
error of that mean (sample standard deviation over probes / √probes). Probes are drawn from
``numpy.random.default_rng([seed, task])``, so every task, epoch and run sees the same probes.
Hand-written because the estimator is three lines on top of the shared Hessian-vector product;
PyHessian's ``trace()`` fails on current PyTorch (issue #14).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from metalandscape.functional import Params, loss_from_outputs
from metalandscape.metrics.base import EvaluationContext, Metric, Quantity, setting
from metalandscape.metrics.builtin import TaskSettings, with_summary
from metalandscape.metrics.eigen import TaskHessianVectorProduct

Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of tr(H), its standard error, and the HVPs it took."""

    value: float
    standard_error: float
    hessian_vector_products: int


def rademacher_probes(count: int, size: int, seed: int, task: int) -> np.ndarray:
    """``[count, size]`` probes with independent ±1 entries from ``default_rng([seed, task])``."""
    rng = np.random.default_rng([seed, task])
    return rng.integers(0, 2, size=(count, size), dtype=np.int8).astype(np.float64) * 2 - 1


def hutchinson_trace(
    hessian_vector_product: Callable[[Tensor], Tensor], probes: np.ndarray, like: Tensor
) -> TraceEstimate:
    """Mean and standard error of zᵀHz over the rows z of ``probes`` (one HVP per row).

    ``hessian_vector_product`` maps a flat tensor shaped and typed like ``like`` to ``H v``.
    """
    forms = np.empty(len(probes))
    for index, probe in enumerate(probes):
        vector = torch.as_tensor(probe).to(device=like.device, dtype=like.dtype)
        forms[index] = float(vector @ hessian_vector_product(vector))
    error = float(forms.std(ddof=1) / math.sqrt(len(forms))) if len(forms) > 1 else math.nan
    return TraceEstimate(float(forms.mean()), error, len(forms))


def block_loss(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    criterion: Criterion,
) -> Callable[[Params], Tensor]:
    """The loss as a function of any subset of ``params``, the others held at their values."""
    fixed = {name: value.detach() for name, value in params.items()}

    def loss_of_params(block: Params) -> Tensor:
        outputs = torch.func.functional_call(model, {**fixed, **block}, (inputs,))
        return criterion(outputs, labels)

    return loss_of_params


def task_hessian(
    model: nn.Module, params: Params, inputs: Tensor, labels: Tensor, criterion: Criterion
) -> TaskHessianVectorProduct:
    """Products with the Hessian of ``criterion(model(inputs), labels)`` at ``params``."""
    return TaskHessianVectorProduct(block_loss(model, params, inputs, labels, criterion), params)


def block_trace(
    hvp: TaskHessianVectorProduct, *, probes: int, seed: int = 0, task: int = 0
) -> TraceEstimate:
    """Hutchinson's trace of the Hessian ``hvp`` with ``probes`` probes of task ``task``."""
    like = next(iter(hvp.leaves.values()))
    return hutchinson_trace(
        hvp.tensor_product, rademacher_probes(probes, hvp.size, seed, task), like
    )


def task_trace(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    criterion: Criterion,
    *,
    probes: int,
    seed: int = 0,
    task: int = 0,
) -> TraceEstimate:
    """Hutchinson's tr(∇²L) of ``criterion(model(inputs), labels)`` at ``params``."""
    hvp = task_hessian(model, params, inputs, labels, criterion)
    return block_trace(hvp, probes=probes, seed=seed, task=task)


class HessianTrace(Metric):
    """E[tr ∇²L(Dᵢ; θ̃ᵢ)]: Hutchinson trace of the support-loss Hessian at each θ̃ᵢ."""

    name = "hessian_trace"
    description = "Hutchinson trace of the support-loss Hessian at the adapted parameters"

    @dataclass(frozen=True)
    class Settings(TaskSettings):
        """``probes`` Rademacher probes (one HVP each) per task on ``tasks`` tasks of ``split``."""

        tasks: int = setting(20, minimum=1)
        probes: int = setting(  # a standard error needs two
            10,
            minimum=2,
            description="Rademacher probes per task, one Hessian-vector product each",
        )
        seed: int = setting(0, minimum=0)

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        settings = self.settings
        batch = context.tasks(settings.split, settings.tasks)
        adapted = context.adapted(settings.split, settings.tasks)
        criterion = partial(loss_from_outputs, kind=context.kind)
        estimates = [
            task_trace(
                context.model,
                params,
                batch.support_inputs[index],
                batch.support_labels[index],
                criterion,
                probes=settings.probes,
                seed=settings.seed,
                task=index,
            )
            for index, params in enumerate(adapted)
        ]
        values = np.asarray([estimate.value for estimate in estimates])
        errors = np.asarray([estimate.standard_error for estimate in estimates])
        summary = with_summary(
            "hessian_trace",
            values,
            "Hutchinson trace of the support-loss Hessian at adapted parameters",
            "1",
            ci95_long_name="95% confidence half-width of the mean trace over tasks "
            "(includes probe noise)",
        )
        return {
            "hessian_trace": summary["hessian_trace"],
            "hessian_trace_standard_error": Quantity(
                errors, "standard error of the Hutchinson estimate over probes", "1", True
            ),
            **summary,
            "hessian_trace_hessian_vector_products": Quantity(
                np.asarray([e.hessian_vector_products for e in estimates], dtype=np.float64),
                "Hessian-vector products spent",
                "1",
                True,
            ),
        }


__all__ = [
    "HessianTrace",
    "TraceEstimate",
    "block_loss",
    "block_trace",
    "hutchinson_trace",
    "rademacher_probes",
    "task_hessian",
    "task_trace",
]
