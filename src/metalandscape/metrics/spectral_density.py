"""Hessian spectral density of the support loss at each θ̃ᵢ by stochastic Lanczos quadrature.

Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net optimization via Hessian
eigenvalue density": for each of ``starts`` random unit vectors v, ``lanczos_steps`` steps of
Lanczos with full reorthogonalisation give a tridiagonal T; its eigenvalues θₖ (Ritz values,
``scipy.linalg.eigh_tridiagonal``) and the squared first components τₖ of its eigenvectors are a
Gauss quadrature of the spectral measure weighted by v: Σₖ τₖ δ(λ − θₖ) ≈ Σᵢ (vᵀuᵢ)² δ(λ − λᵢ),
exact for polynomials of degree ≤ 2·steps − 1. Averaged over starts (E(vᵀuᵢ)² = 1/n) this
estimates the spectral measure (1/n) Σᵢ δ(λ − λᵢ); smoothing each node with a Gaussian of
standard deviation ``sigma`` gives a density on the fixed eigenvalue grid of the settings, the
same for every task, epoch and run so densities can be compared and stacked.

Cost: ``starts × lanczos_steps`` Hessian-vector products per task. The Lanczos iteration is
:class:`metalandscape.metrics.eigen.lanczos_batched._LanczosRun` (the one the batched λmax backend uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from torch import Tensor

from metalandscape.functional import loss_from_outputs
from metalandscape.metrics.base import EvaluationContext, Metric, Quantity, setting
from metalandscape.metrics.builtin import TaskSettings, with_summary
from metalandscape.metrics.eigen.lanczos_batched import _LanczosRun
from metalandscape.metrics.trace import task_hessian


@dataclass(frozen=True)
class Quadrature:
    """Ritz values and weights of each start (rows; NaN-padded where Lanczos stopped early)."""

    nodes: np.ndarray  # [starts, steps]
    weights: np.ndarray  # [starts, steps]; each row sums to 1
    hessian_vector_products: int

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The SLQ spectral measure: all nodes and their weights averaged over starts."""
        keep = np.isfinite(self.nodes)
        return self.nodes[keep], self.weights[keep] / len(self.nodes)


def lanczos_quadrature(
    hessian_vector_product: Callable[[Tensor], Tensor],
    size: int,
    like: Tensor,
    *,
    starts: int,
    steps: int,
    seed: int = 0,
    task: int = 0,
) -> Quadrature:
    """Gauss quadrature nodes and weights of ``starts`` Lanczos runs of ``steps`` products each.

    Start vectors are Gaussian from ``numpy.random.default_rng([seed, task])``. A run that finds
    an invariant subspace earlier stops there (its quadrature is then exact for that start).
    """
    rng = np.random.default_rng([seed, task])
    nodes = np.full((starts, steps), np.nan)
    weights = np.full((starts, steps), np.nan)
    products = 0
    for start in range(starts):
        vector = torch.as_tensor(rng.standard_normal(size)).to(device=like.device, dtype=like.dtype)
        # tol = −∞: never stop because the top Ritz value converged (its residual bound can
        # underflow to 0); stop after ``steps`` products or on an invariant Krylov space only.
        run = _LanczosRun(
            vector, tol=-math.inf, max_iterations=steps, which="LA", stopping="residual"
        )
        with torch.no_grad():
            while run.result is None:
                run.step(hessian_vector_product(run.vector))
                products += 1
        alphas = np.asarray(run.alphas)
        betas = np.asarray(run.betas[: len(alphas) - 1])
        values, vectors = scipy.linalg.eigh_tridiagonal(alphas, betas)
        nodes[start, : len(values)] = values
        weights[start, : len(values)] = vectors[0] ** 2
    return Quadrature(nodes, weights, products)


def gaussian_density(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """Σₖ wₖ 𝒩(grid; nodesₖ, sigma²): the measure smoothed by a Gaussian of width ``sigma``."""
    return scipy.stats.norm.pdf(grid[:, None], loc=nodes[None, :], scale=sigma) @ weights


def eigenvalue_grid(low: float, high: float, points: int) -> np.ndarray:
    """``points`` equally spaced eigenvalues from ``low`` to ``high``."""
    return np.linspace(low, high, points)


class SpectralDensity(Metric):
    """Hessian eigenvalue density of the support loss at each θ̃ᵢ (stochastic Lanczos quadrature)."""

    name = "spectral_density"
    description = "Hessian eigenvalue density (SLQ) of the support loss at the adapted parameters"

    @dataclass(frozen=True)
    class Settings(TaskSettings):
        """``starts`` × ``lanczos_steps`` HVPs per task; density on ``grid_points`` of a grid.

        The grid spans ``grid_low``..``grid_high`` (eigenvalue units) and ``sigma`` is the
        Gaussian smoothing width in the same units; mass outside the grid is reported.
        """

        tasks: int = setting(10, minimum=1)
        starts: int = setting(4, minimum=1)
        lanczos_steps: int = setting(
            40, minimum=2, description="Lanczos steps per start, one Hessian-vector product each"
        )
        grid_low: float = setting(-30.0)
        grid_high: float = setting(
            120.0, description="upper end of the eigenvalue grid; must exceed grid_low"
        )
        grid_points: int = setting(601, minimum=2)
        sigma: float = setting(
            0.5,
            exclusive_minimum=0,
            description="width of the Gaussian smoothing, in eigenvalue units",
        )
        seed: int = setting(0, minimum=0)

        def __post_init__(self) -> None:
            if not self.grid_high > self.grid_low:
                raise ValueError(
                    f"settings 'grid_low' ({self.grid_low}) and 'grid_high' ({self.grid_high}) "
                    "give a grid with no width: grid_high must exceed grid_low"
                )

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        settings = self.settings
        quadratures = task_quadratures(context, settings)
        grid = eigenvalue_grid(settings.grid_low, settings.grid_high, settings.grid_points)
        outside = [_mass_outside(*q.measure(), grid, settings.sigma) for q in quadratures]
        products = [q.hessian_vector_products for q in quadratures]
        return {
            **_density_quantities(quadratures, grid, settings.sigma),
            **_ritz_quantities(quadratures, settings),
            "spectral_mass_outside_grid": Quantity(
                np.asarray(outside),
                "fraction of the smoothed density outside the eigenvalue grid",
                "1",
                True,
            ),
            "spectral_hessian_vector_products": Quantity(
                np.asarray(products, dtype=np.float64), "Hessian-vector products spent", "1", True
            ),
            **_extreme_ritz_quantities(quadratures),
        }


def task_quadratures(
    context: EvaluationContext, settings: SpectralDensity.Settings
) -> list[Quadrature]:
    """SLQ nodes and weights of each task's support-loss Hessian at its θ̃ᵢ."""
    batch = context.tasks(settings.split, settings.tasks)
    adapted = context.adapted(settings.split, settings.tasks)
    criterion = partial(loss_from_outputs, kind=context.kind)
    quadratures = []
    for index, params in enumerate(adapted):
        inputs, labels = batch.support_inputs[index], batch.support_labels[index]
        hvp = task_hessian(context.model, params, inputs, labels, criterion)
        quadratures.append(
            lanczos_quadrature(
                hvp.tensor_product,
                hvp.size,
                next(iter(params.values())),
                starts=settings.starts,
                steps=settings.lanczos_steps,
                seed=settings.seed,
                task=index,
            )
        )
    return quadratures


def _density_quantities(
    quadratures: list[Quadrature], grid: np.ndarray, sigma: float
) -> dict[str, Quantity]:
    """The smoothed density of each task on ``grid``, and their task mean."""
    densities = np.stack([gaussian_density(*q.measure(), grid, sigma) for q in quadratures])
    extra = {"eigenvalue": grid}
    return {
        "spectral_density": Quantity(
            densities,
            "Gaussian-smoothed Hessian eigenvalue density (SLQ) of the support loss",
            "1/eigenvalue",
            per_task=True,
            extra_dims=extra,
        ),
        "spectral_density_mean": Quantity(
            densities.mean(axis=0),
            "task-mean Hessian eigenvalue density (SLQ) of the support loss",
            "1/eigenvalue",
            extra_dims=extra,
        ),
    }


def _ritz_quantities(
    quadratures: list[Quadrature], settings: SpectralDensity.Settings
) -> dict[str, Quantity]:
    """The Ritz values and weights of every task's Lanczos starts."""
    ritz_dims = {
        "lanczos_start": np.arange(settings.starts),
        "ritz": np.arange(settings.lanczos_steps),
    }

    def per_start(values: np.ndarray, long_name: str) -> Quantity:
        return Quantity(values, long_name, "1", per_task=True, extra_dims=ritz_dims)

    return {
        "spectral_ritz_values": per_start(
            np.stack([q.nodes for q in quadratures]),
            "Ritz values (quadrature nodes) of each Lanczos start",
        ),
        "spectral_ritz_weights": per_start(
            np.stack([q.weights for q in quadratures]),
            "quadrature weights (squared first eigenvector components) of each start",
        ),
    }


def _extreme_ritz_quantities(quadratures: list[Quadrature]) -> dict[str, Quantity]:
    """The largest and smallest Ritz value of each task, with their task means."""
    out: dict[str, Quantity] = {}
    for name, extreme, long_name in (
        ("spectral_top_ritz_value", np.nanmax, "largest Ritz value (≈ λmax)"),
        ("spectral_bottom_ritz_value", np.nanmin, "smallest Ritz value (≈ λmin)"),
    ):
        values = np.asarray([extreme(q.nodes) for q in quadratures])
        ci95_long_name = f"95% half-width of mean {long_name}"
        out.update(with_summary(name, values, long_name, "1", ci95_long_name=ci95_long_name))
    return out


def _mass_outside(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> float:
    inside = scipy.stats.norm.cdf(grid[-1], nodes, sigma) - scipy.stats.norm.cdf(
        grid[0], nodes, sigma
    )
    return float(1.0 - inside @ weights)
