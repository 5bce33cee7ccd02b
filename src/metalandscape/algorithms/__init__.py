"""The algorithm registry: every training algorithm, its role, and where its learner lives.

This is the one place that names the algorithms. Config validation, the workflow grid, figures
and claims read names and roles from :data:`ALGORITHMS`; importing this package is cheap (no
torch), the learner modules load on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["meta-learner", "baseline"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """One registered algorithm."""

    name: str
    role: Role
    title: str
    learner: str  # "module:attribute" of its learner, imported on first use


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec("maml", "meta-learner", "MAML", "metalandscape.algorithms.maml:MetaLearner"),
        AlgorithmSpec(
            "fomaml",
            "meta-learner",
            "First-Order MAML",
            "metalandscape.algorithms.maml:MetaLearner",
        ),
        AlgorithmSpec(
            "regmaml",
            "meta-learner",
            "Regularized MAML",
            "metalandscape.algorithms.maml:MetaLearner",
        ),
        AlgorithmSpec(
            "finetune",
            "baseline",
            "Finetune baseline",
            "metalandscape.algorithms.finetune:SupervisedLearner",
        ),
    )
}


def algorithm_names(role: Role | None = None) -> tuple[str, ...]:
    """Registered algorithm names in registry order, optionally only those of ``role``."""
    return tuple(name for name, spec in ALGORITHMS.items() if role is None or spec.role == role)
