"""The paper's measures (§4–5) as metric plugins: accuracy, support loss, flatness, coherence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import get_args

import numpy as np
import torch

from metalandscape.data.tasks import Split
from metalandscape.functional import loss_from_outputs
from metalandscape.metrics.base import (
    EvaluationContext,
    Metric,
    MetricError,
    Quantity,
    mean_and_ci95,
    setting,
)
from metalandscape.metrics.eigen import (
    BACKENDS,
    DEFAULT_STOPPING_RULE,
    STOPPING_RULES,
    top_eigenvalues,
)

SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class TaskSettings:
    """``tasks`` tasks of ``split``: the first two settings of every per-task metric.

    A metric's Settings subclasses it, redeclaring ``tasks`` where its default differs.
    """

    tasks: int = setting(600, minimum=1)
    split: str = setting("test", choices=SPLITS)


@dataclass(frozen=True)
class PairSettings(TaskSettings):
    """``tasks`` tasks of ``split`` (the paper: 500): at least two, for means over task pairs."""

    tasks: int = setting(500, minimum=2)


def with_summary(
    name: str, values: np.ndarray, long_name: str, units: str, *, ci95_long_name: str | None = None
) -> dict[str, Quantity]:
    """``name`` per task, its task mean ``name_mean`` and the mean's 95% half-width ``name_ci95``."""
    mean, ci95 = mean_and_ci95(values)
    ci95_long_name = ci95_long_name or f"95% confidence half-width of mean {long_name}"
    return {
        name: Quantity(values, long_name, units, per_task=True),
        f"{name}_mean": Quantity(mean, f"mean {long_name}", units),
        f"{name}_ci95": Quantity(ci95, ci95_long_name, units),
    }


def off_diagonal_mean(gram: torch.Tensor) -> float:
    """Mean of the entries i ≠ j of a square matrix."""
    count = gram.shape[0]
    if count < 2:
        raise MetricError("coherence needs at least 2 tasks")
    total = gram.sum() - gram.diagonal().sum()
    return float(total / (count * (count - 1)))


class Accuracy(Metric):
    """Target accuracy (classification) or target MSE (regression) after adaptation."""

    name = "accuracy"
    description = "target accuracy / MSE at the adapted parameters, meta-test and meta-train tasks"

    @dataclass(frozen=True)
    class Settings:
        """``tasks`` evaluation tasks of each split in ``splits``."""

        tasks: int = setting(600, minimum=1)
        splits: tuple[str, ...] = setting(("test", "train"), choices=SPLITS)

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        out: dict[str, Quantity] = {}
        score = "accuracy" if context.kind == "classification" else "mse"
        units = "1" if score == "accuracy" else "squared output units"
        for split in self.settings.splits:
            loss, values = context.target_results(split, self.settings.tasks)
            label = "meta-test" if split == "test" else f"meta-{split}"
            out.update(
                with_summary(f"{split}_target_{score}", values, f"{label} target {score}", units)
            )
            if score == "accuracy":  # for regression the loss is the MSE already reported
                out.update(with_summary(f"{split}_target_loss", loss, f"{label} target loss", "1"))
        return out


class SupportLoss(Metric):
    """E[L(Dᵢ; θ̃ᵢ)]: the support loss at the adapted parameters."""

    name = "support_loss"
    description = "support loss at the adapted parameters (meta-test tasks)"

    Settings = TaskSettings

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        values = context.support_losses(self.settings.split, self.settings.tasks)
        return with_summary("support_loss", values, "support loss at adapted parameters", "1")


#: Where the hessian metric can take λmax: ``adapted`` θ̃ᵢ (the paper's flatness) or the start
#: θs (the task's start: θs, or the finetune baseline's per-task start).
HESSIAN_POINTS: tuple[str, ...] = ("adapted", "start")
#: The variable prefix of each point; ``adapted`` keeps the names the paper's figures read.
HESSIAN_PREFIX = {"adapted": "hessian", "start": "hessian_start"}
_POINT_WORDS = {"adapted": "adapted parameters", "start": "the start θs"}


class Hessian(Metric):
    """E[λmax(∇²L(Dᵢ; θ))] of the support loss at each θ̃ᵢ and/or at θs, with the run's α and T.

    The adapted point is the paper's flatness; gradient descent with step α cannot settle where
    the curvature exceeds 2/α, so ``inner_step_size`` and ``inner_steps`` are written beside it
    (``inner_step_size`` NaN when α is learned per parameter, as in Meta-SGD).
    """

    name = "hessian"
    description = "top Hessian eigenvalue of the support loss at the adapted parameters (flatness)"

    @dataclass(frozen=True)
    class Settings(TaskSettings):
        """``backend``: ``lanczos_batched`` (tasks in lockstep), ``lanczos`` or ``pyhessian``.

        ``at``: where λmax is taken, ``adapted`` (θ̃ᵢ, variables ``hessian_*``) and/or ``start``
        (θs, variables ``hessian_start_*``), in one pass over the same tasks.
        ``warm_start`` (``lanczos_batched``): start each task's solve from its converged top
        eigenvector at the previous measured epoch of the job, at random where there is none.
        ``stopping`` (``lanczos_batched``): stop when the eigenvalue's error bound (``eigenvalue``)
        or the Ritz residual (``residual``) is ≤ ``tol``·|λ|.
        """

        tasks: int = setting(60, minimum=1)
        backend: str = setting("lanczos_batched", choices=BACKENDS)
        tol: float | None = setting(
            None,
            kind=float,
            exclusive_minimum=0,
            maximum=1,
            nullable=True,
            description="relative tolerance of the eigensolver; null - the backend's default",
        )
        max_hessian_vector_products: int | None = setting(None, kind=int, minimum=1, nullable=True)
        seed: int = setting(0, minimum=0)
        warm_start: bool = setting(
            True,
            description="start each task's Lanczos from its eigenvector at the previous measured epoch",
        )
        stopping: str = setting(
            DEFAULT_STOPPING_RULE,
            choices=STOPPING_RULES,
            description="stop Lanczos on the eigenvalue's error bound or on the Ritz residual",
        )
        at: tuple[str, ...] = setting(
            ("adapted",),
            choices=HESSIAN_POINTS,
            description="where lambda_max is taken: adapted (theta~_i) and/or start (theta_s)",
        )

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        settings = self.settings
        out: dict[str, Quantity] = {}
        for point in settings.at:
            if point == "adapted":
                params = context.adapted(settings.split, settings.tasks)
            else:
                params = [context.start_for(index) for index in range(settings.tasks)]
            out.update(self._at(context, point, params))
        step = context.inner_step_size
        alpha = float(step) if isinstance(step, int | float) else float("nan")
        out["inner_step_size"] = Quantity(alpha, "inner-loop step size alpha of the run", "1")
        out["inner_steps"] = Quantity(
            float(context.inner_steps), "inner-loop steps T of the run", "1"
        )
        return out

    def _at(self, context: EvaluationContext, point: str, params: list) -> dict[str, Quantity]:
        """λmax at ``params`` (one parameter set per task) as the variables of ``point``."""
        settings = self.settings
        batch = context.tasks(settings.split, settings.tasks)
        warm = settings.warm_start and settings.backend == "lanczos_batched"
        previous: dict[int, torch.Tensor] = {}
        if warm:
            suffix = "" if point == "adapted" else f"/{point}"
            previous = context.carried.setdefault(f"{self.name}/{settings.split}{suffix}", {})
        results = top_eigenvalues(
            settings.backend,
            context.model,
            params,
            batch.support_inputs,
            batch.support_labels,
            partial(loss_from_outputs, kind=context.kind),
            tol=settings.tol,
            max_hvps=settings.max_hessian_vector_products,
            seed=settings.seed,
            start_vectors=[previous.get(i) for i in range(settings.tasks)] if previous else None,
            stopping=settings.stopping,
        )
        if warm:
            previous.clear()
            previous.update(
                {i: r.vector for i, r in enumerate(results) if r.converged and r.vector is not None}
            )
        prefix, where = HESSIAN_PREFIX[point], _POINT_WORDS[point]
        out = with_summary(
            f"{prefix}_top_eigenvalue",
            np.asarray([result.value for result in results]),
            f"top eigenvalue of the support-loss Hessian at {where}",
            "1",
        )
        products = [result.hessian_vector_products for result in results]
        out[f"{prefix}_vector_products"] = Quantity(
            np.asarray(products, dtype=np.float64),
            f"Hessian-vector products spent at {where}",
            "1",
            True,
        )
        out[f"{prefix}_converged"] = Quantity(
            np.asarray([result.converged for result in results], dtype=np.float64),
            f"eigensolver converged (1) or not (0) at {where}",
            "1",
            True,
        )
        return out


class TrajectoryCoherence(Metric):
    """E[θ̂ᵢᵀθ̂ⱼ] over task pairs i ≠ j, θ̂ᵢ = (θ̃ᵢ − θs)/‖θ̃ᵢ − θs‖; and E‖θ̃ᵢ − θs‖."""

    name = "trajectory_coherence"
    description = "mean cosine between adaptation directions of task pairs, and trajectory norm"

    Settings = PairSettings

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        steps = context.displacements(self.settings.split, self.settings.tasks).double()
        norms = steps.norm(dim=1)
        directions = steps / norms.clamp_min(torch.finfo(steps.dtype).tiny)[:, None]
        out = {
            "trajectory_coherence": Quantity(
                off_diagonal_mean(directions @ directions.T),
                "mean cosine similarity of adaptation directions, task pairs i != j",
                "1",
            )
        }
        out.update(
            with_summary(
                "trajectory_norm", norms.cpu().numpy(), "L2 norm of adaptation displacement", "1"
            )
        )
        return out


class GradientCoherence(Metric):
    """E[gᵢᵀgⱼ] over task pairs i ≠ j with gᵢ = −∇L(Dᵢ; θs), and E[cos(gᵢ, gⱼ)].

    The raw inner product (the paper's measure) grows with the gradients' size; the cosine does
    not. A zero gradient counts as cosine 0 with every other.
    """

    name = "gradient_coherence"
    description = "mean inner product of support-loss gradients at θs, task pairs i != j"

    Settings = PairSettings

    def start_gradient_tasks(self) -> Mapping[str, int]:
        return {self.settings.split: self.settings.tasks}

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        gradients = -context.start_gradients(self.settings.split, self.settings.tasks).double()
        norms = gradients.norm(dim=1)
        out = {
            "gradient_coherence": Quantity(
                off_diagonal_mean(gradients @ gradients.T),
                "mean inner product of support gradients at the meta-train solution, i != j",
                "1",
            ),
            "gradient_cosine": Quantity(
                off_diagonal_mean(_cosines(gradients, norms)),
                "mean cosine of support gradients at the meta-train solution, i != j",
                "1",
            ),
        }
        out.update(
            with_summary("gradient_norm", norms.cpu().numpy(), "L2 norm of support gradient", "1")
        )
        return out


def _cosines(vectors: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """The matrix of cos(vᵢ, vⱼ) (0 where either vector is zero)."""
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    unit = vectors / safe[:, None]
    return unit @ unit.T
