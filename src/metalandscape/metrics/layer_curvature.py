"""Per-layer curvature: λmax and trace of each layer's diagonal Hessian block at each θ̃ᵢ.

A layer's block is the Hessian of the support loss with respect to that layer's parameters only,
all other parameters held at θ̃ᵢ: H_ℓ = ∂²L/∂θ_ℓ². Its λmax comes from ARPACK Lanczos
(:func:`metalandscape.metrics.eigen.top_eigenvalue_lanczos`) and its trace from Hutchinson's
estimator (:mod:`metalandscape.metrics.trace`), both on Hessian-vector products of the block.
The block traces add up to the full trace; the block λmax values need not bound the full one
from above (λmax(H) ≥ max_ℓ λmax(H_ℓ), by Cauchy interlacing).

Layers are the modules that own parameters directly (Conv-4: ``features.0.0`` conv,
``features.0.1`` BatchNorm, …, ``head``), or the parameter-name prefixes of ``layers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from metalandscape.functional import Params, loss_from_outputs
from metalandscape.metrics.base import EvaluationContext, Metric, MetricError, Quantity, setting
from metalandscape.metrics.builtin import TaskSettings
from metalandscape.metrics.eigen import (
    DEFAULT_LANCZOS_MAX_HVPS,
    DEFAULT_LANCZOS_TOL,
    TaskHessianVectorProduct,
    top_eigenvalue_lanczos,
)
from metalandscape.metrics.trace import block_loss, block_trace


def parameter_layers(names: Sequence[str], prefixes: Sequence[str] = ()) -> dict[str, list[str]]:
    """{layer: its parameter names}: by owning module, or by each of ``prefixes``.

    A prefix matches a parameter name equal to it or starting with it and a dot. Raises
    MetricError naming setting ``layers`` for a prefix that matches no parameter.
    """
    if not prefixes:
        layers: dict[str, list[str]] = {}
        for name in names:
            layers.setdefault(name.rpartition(".")[0] or name, []).append(name)
        return layers
    layers = {}
    for prefix in prefixes:
        members = [n for n in names if n == prefix or n.startswith(f"{prefix}.")]
        if not members:
            owners = sorted({n.rpartition(".")[0] or n for n in names})
            raise MetricError(
                f"metric 'layer_curvature' setting 'layers': {prefix!r} names no parameters of "
                f"the model; its layers: {', '.join(owners)}"
            )
        layers[prefix] = members
    return layers


class LayerCurvature(Metric):
    """Per task and layer: λmax and Hutchinson trace of the layer's support-loss Hessian block."""

    name = "layer_curvature"
    description = "λmax and trace of each layer's Hessian block of the support loss at θ̃ᵢ"

    @dataclass(frozen=True)
    class Settings(TaskSettings):
        """``layers``: parameter-name prefixes (empty: every parameter-owning module).

        Per task and layer: Lanczos to relative residual ``tol`` (≤ ``max_hvps`` HVPs) and
        ``probes`` Rademacher probes.
        """

        tasks: int = setting(10, minimum=1)
        layers: tuple[str, ...] = setting(
            (),
            kind=tuple,
            description="parameter-name prefixes, one per layer; "
            "empty - every parameter-owning module",
        )
        probes: int = setting(10, minimum=2)
        tol: float = setting(DEFAULT_LANCZOS_TOL, exclusive_minimum=0, maximum=1)
        max_hvps: int = setting(DEFAULT_LANCZOS_MAX_HVPS, minimum=1)
        seed: int = setting(0, minimum=0)

        def __post_init__(self) -> None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        settings = self.settings
        layers = parameter_layers(list(context.start_params), settings.layers)
        estimates = layer_estimates(context, layers, settings)
        extra = {"layer": np.asarray(list(layers), dtype=str)}

        def per_layer(name: str, long_name: str) -> Quantity:
            return Quantity(estimates[name], long_name, "1", per_task=True, extra_dims=extra)

        def task_mean(name: str, long_name: str) -> Quantity:
            return Quantity(estimates[name].mean(axis=0), long_name, "1", extra_dims=extra)

        return {
            "layer_top_eigenvalue": per_layer("top", "top eigenvalue of the layer's Hessian block"),
            "layer_top_eigenvalue_mean": task_mean(
                "top", "task-mean top eigenvalue of the layer's Hessian block"
            ),
            "layer_eigen_converged": per_layer("converged", "Lanczos converged (1) or not (0)"),
            "layer_trace": per_layer("trace", "Hutchinson trace of the layer's Hessian block"),
            "layer_trace_standard_error": per_layer(
                "error", "standard error of the Hutchinson estimate over probes"
            ),
            "layer_trace_mean": task_mean("trace", "task-mean trace of the layer's Hessian block"),
            "layer_hessian_vector_products": per_layer("products", "Hessian-vector products spent"),
        }


def layer_estimates(
    context: EvaluationContext, layers: Mapping[str, list[str]], settings: LayerCurvature.Settings
) -> dict[str, np.ndarray]:
    """``[task, layer]`` arrays ``top``, ``converged``, ``trace``, ``error`` and ``products``.

    Per task and layer: λmax by ARPACK Lanczos (seeded ``seed + task``) and Hutchinson's trace
    of the layer's block of the support-loss Hessian at θ̃ᵢ.
    """
    batch = context.tasks(settings.split, settings.tasks)
    adapted = context.adapted(settings.split, settings.tasks)
    criterion = partial(loss_from_outputs, kind=context.kind)
    names = ("top", "converged", "trace", "error", "products")
    out = {name: np.empty((len(adapted), len(layers))) for name in names}
    for task, params in enumerate(adapted):
        loss = block_loss(
            context.model, params, batch.support_inputs[task], batch.support_labels[task], criterion
        )
        for column, members in enumerate(layers.values()):
            block: Params = {name: params[name] for name in members}
            eigen = top_eigenvalue_lanczos(
                loss, block, tol=settings.tol, max_hvps=settings.max_hvps, seed=settings.seed + task
            )
            estimate = block_trace(
                TaskHessianVectorProduct(loss, block),
                probes=settings.probes,
                seed=settings.seed,
                task=task,
            )
            out["top"][task, column] = eigen.value
            out["converged"][task, column] = float(eigen.converged)
            out["trace"][task, column] = estimate.value
            out["error"][task, column] = estimate.standard_error
            out["products"][task, column] = (
                eigen.hessian_vector_products + estimate.hessian_vector_products
            )
    return out
