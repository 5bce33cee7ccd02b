"""The algorithm registry: every training algorithm, its role, and where its learner lives.

This is the one place that names the algorithms. Config validation, the workflow grid, figures
and claims read names and roles from :data:`ALGORITHMS`; importing this package is cheap (no
torch), the algorithm modules load on first use (:func:`load_algorithm`).

Each algorithm module defines one object implementing :class:`Algorithm`: how many outputs the
trained network has, the learner whose :meth:`Learner.train_step` is one update, and how
evaluation starts (:meth:`Algorithm.evaluation_start`) and adapts
(:meth:`Algorithm.evaluation_adaptation`). Adding an algorithm is one module plus one line here (its
hyper-parameters, if any, are keys of :class:`~metalandscape.config.RunConfig`).

A third-party package adds one without editing this one: an entry point of the group
``metalandscape.algorithms`` naming its :class:`AlgorithmSpec` (keep that object in a module that
imports no torch, since the registry is read whenever a config is)::

    [project.entry-points."metalandscape.algorithms"]
    myalgo = "my_package.spec:SPEC"

This package never imports :mod:`metalandscape.config` (its modules name ``RunConfig`` in type
hints only): config validation reads the registry, not the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from metalandscape.plugins import registry_with_plugins, unknown_name_message

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from metalandscape.config import RunConfig
    from metalandscape.data.tasks import TaskSource
    from metalandscape.functional import Params
    from metalandscape.optimizers import Optimizer

Role = Literal["meta-learner", "baseline"]
HeadMode = Literal["per_task", "shared"]
HEAD_MODES: tuple[HeadMode, ...] = ("per_task", "shared")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One registered algorithm."""

    name: str
    role: Role
    title: str
    learner: str  # "module:attribute" of its Algorithm object, imported on first use
    # Metrics this algorithm cannot be measured with: (metric name, one-line reason) pairs.
    # Config validation refuses such a pairing without importing the algorithm.
    unsupported_metrics: tuple[tuple[str, str], ...] = field(default=())
    # Its runs that differ only by seed can train in one process, in lockstep
    # (metalandscape.lockstep: a MAML-family learner without the coherence regularizer).
    lockstep: bool = False
    # The algorithm this one is an intervention on (MAML plus a flatness or coherence term):
    # metalandscape.interventions compares their runs seed by seed.
    intervention_on: str | None = None

    def __post_init__(self) -> None:
        # The name is a field of run ids (``fontglot-default-5way1shot-<name>-seed0``, split at
        # ``-``; metalandscape.runs) and of the workflow schema's algorithm pattern.
        if not self.name.isascii() or not self.name.isalpha() or not self.name.islower():
            raise ValueError(
                f"algorithm name {self.name!r} must be lowercase letters a-z only (it is a field "
                f"of run ids such as fontglot-default-5way1shot-{self.name}-seed0); rename it"
            )


#: The entry-point group third-party algorithms register under (their AlgorithmSpec).
ENTRY_POINT_GROUP = "metalandscape.algorithms"

BUILTIN_ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "maml", "meta-learner", "MAML", "metalandscape.algorithms.maml:ALGORITHM", lockstep=True
        ),
        AlgorithmSpec(
            "fomaml",
            "meta-learner",
            "First-Order MAML",
            "metalandscape.algorithms.fomaml:ALGORITHM",
            lockstep=True,
        ),
        AlgorithmSpec(
            "regmaml",
            "meta-learner",
            "Regularized MAML",
            "metalandscape.algorithms.regmaml:ALGORITHM",
            intervention_on="maml",
        ),
        AlgorithmSpec(
            "finetune",
            "baseline",
            "Finetune baseline",
            "metalandscape.algorithms.finetune:ALGORITHM",
        ),
        AlgorithmSpec(
            "reptile",
            "meta-learner",
            "Reptile",
            "metalandscape.algorithms.reptile:ALGORITHM",
        ),
        AlgorithmSpec("anil", "meta-learner", "ANIL", "metalandscape.algorithms.anil:ALGORITHM"),
        AlgorithmSpec(
            "metasgd",
            "meta-learner",
            "Meta-SGD",
            "metalandscape.algorithms.metasgd:ALGORITHM",
        ),
        AlgorithmSpec(
            "sharpmaml",
            "meta-learner",
            "Sharp-MAML",
            "metalandscape.algorithms.sharpmaml:ALGORITHM",
            intervention_on="maml",
        ),
    )
}


def algorithm_names(role: Role | None = None) -> tuple[str, ...]:
    """Registered algorithm names in registry order, optionally only those of ``role``."""
    return tuple(name for name, spec in ALGORITHMS.items() if role is None or spec.role == role)


def unsupported_metric_reason(algorithm: str, metric: str) -> str | None:
    """Why ``algorithm``'s runs cannot be measured with ``metric`` (None: they can)."""
    return dict(ALGORITHMS[algorithm].unsupported_metrics).get(metric)


class Learner(Protocol):
    """The trained parameters, their optimizer and one training update."""

    params: Params
    optimizer: Optimizer

    def train_step(self, iteration: int) -> tuple[float, float]:
        """Update on the run's batch ``iteration``; returns (loss, accuracy or MSE)."""
        ...


@dataclass(frozen=True)
class EvaluationStart:
    """Where evaluation adapts from: ``shared`` for every task, or ``per_task(i)`` for task i."""

    shared: Params
    per_task: Callable[[int], Params] | None = None


class Algorithm(Protocol):
    """What training and evaluation ask of an algorithm (never its name)."""

    def output_size(self, config: RunConfig, source: TaskSource) -> int:
        """Outputs of the network this algorithm trains."""
        ...

    def learner(
        self,
        config: RunConfig,
        model: nn.Module,
        params: Params,
        source: TaskSource,
        device: torch.device,
    ) -> Learner:
        """A learner starting at ``params``."""
        ...

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """The evaluation start from trained ``params`` (e.g. a fresh head per task)."""
        ...

    def evaluation_adaptation(
        self, config: RunConfig, params: Params
    ) -> tuple[int, float | Mapping[str, Tensor | float]]:
        """(steps, step sizes) of the adaptation to each evaluation task from trained ``params``.

        The step sizes are one float for every parameter (MAML's inner loop) or a mapping from
        parameter name to a float or a tensor shaped like the parameter (Meta-SGD's learned α);
        parameters missing from the mapping stay at the start (ANIL's body).
        """
        ...

    def evaluation_adaptation_options(self, config: RunConfig) -> dict[str, Any]:
        """Further keywords of :func:`~metalandscape.functional.adapt` for that adaptation
        (Sharp-MAML's ``sam_radius``); ``{}`` for plain gradient descent."""
        ...


def load_algorithm(name: str) -> Algorithm:
    """The :class:`Algorithm` object registered as ``name`` (imports its module)."""
    try:
        spec = ALGORITHMS[name]
    except KeyError:
        raise ValueError(unknown_algorithm_message(name)) from None
    module, attribute = spec.learner.split(":")
    algorithm: Any = getattr(importlib.import_module(module), attribute)
    return algorithm


def unknown_algorithm_message(name: str) -> str:
    """One line: ``name`` is not registered (and why, when a plugin of that name broke)."""
    return unknown_name_message(name, ALGORITHMS, BROKEN_ALGORITHM_PLUGINS, "algorithm")


#: Every algorithm: the built-ins, then the plugins' (read once, when this package is imported,
#: after everything above is defined: a plugin's module may import any of it).
ALGORITHMS, BROKEN_ALGORITHM_PLUGINS = registry_with_plugins(
    ENTRY_POINT_GROUP, BUILTIN_ALGORITHMS, AlgorithmSpec, "algorithm"
)
