"""The metric plugin interface and the evaluation context metrics share.

A metric is one small class: a ``name``, a ``Settings`` dataclass, and ``compute(context)``
returning named :class:`Quantity` values (scalars or per-task arrays). Metrics are discovered
through the entry-point group ``metalandscape.metrics``; the built-ins register the same way
(see ``pyproject.toml``), so a third-party package adds a measure without touching the workflow::

    [project.entry-points."metalandscape.metrics"]
    my_measure = "my_package.metrics:MyMeasure"

The :class:`EvaluationContext` adapts each task once per (checkpoint, epoch) and caches what
metrics need — adapted parameters θ̃ᵢ, displacements θ̃ᵢ − θs, support gradients at θs, target
outputs — so no metric redoes another's adaptation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from metalandscape.algorithms.metasgd import adapt_with_step_sizes
from metalandscape.data.tasks import Split, TaskBatch, TaskKind, TaskSampler
from metalandscape.functional import (
    Params,
    adapt,
    flatten,
    forward,
    gradient,
    loss_from_outputs,
    score_from_outputs,
)
from metalandscape.metrics import metric_entry_points
from metalandscape.plugins import load_failure
from metalandscape.settings import SettingRule as SettingRule  # re-exported for plugins
from metalandscape.settings import SettingsError
from metalandscape.settings import parse_settings as parse_settings_of
from metalandscape.settings import setting as setting  # re-exported for metric plugins
from metalandscape.settings import settings_json_schema as settings_schema_of


class MetricError(ValueError):
    """Unknown metric, bad metric setting, or a plugin that broke its contract."""


@dataclass(frozen=True)
class Quantity:
    """One named result: a scalar, or one value per task (``per_task``).

    ``extra_dims`` ({name: coordinate values}, in order) adds trailing dimensions after the
    task one (a density over an eigenvalue grid, a value per layer).
    """

    values: float | np.ndarray
    long_name: str
    units: str = "1"
    per_task: bool = False
    extra_dims: Mapping[str, np.ndarray] | None = None


class Metric(ABC):
    """Base class of every metric plugin."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Settings:
        """No settings."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @abstractmethod
    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        """The metric's quantities at the context's checkpoint epoch."""

    def start_gradient_tasks(self) -> Mapping[str, int]:
        """How many tasks of each split :meth:`compute` asks
        :meth:`EvaluationContext.start_gradients` for; the context keeps those gradients from
        the adaptations' first steps instead of computing them again (none by default)."""
        return {}


def load_metric(entry: EntryPoint) -> type[Metric]:
    """The Metric class of ``entry``; a plugin that fails is one line naming it and the fix."""
    try:
        cls = entry.load()
    except Exception as error:  # any import error of a plugin, named clearly
        raise MetricError(
            f"metric plugin {entry.name!r} (entry point {entry.value}) failed to load: "
            f"{load_failure(error)}; reinstall the package that declares it "
            "(pip install -e . in its checkout) or uninstall it"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise MetricError(
            f"metric plugin {entry.name!r} (entry point {entry.value}) is not a Metric class; "
            "fix the entry point in the pyproject.toml that declares it and reinstall"
        )
    return cls


def metric_class(name: str) -> type[Metric]:
    """The Metric class registered as ``name``, loading that plugin only."""
    entries = metric_entry_points()
    if name not in entries:
        raise MetricError(
            f"unknown metric {name!r}; available metrics: {', '.join(sorted(entries)) or 'none'}"
        )
    return load_metric(entries[name])


def available_metrics() -> dict[str, type[Metric]]:
    """Every registered metric, all plugins loaded; the ones that fail are named in one line."""
    found: dict[str, type[Metric]] = {}
    problems: list[str] = []
    for name, entry in metric_entry_points().items():
        try:
            found[name] = load_metric(entry)
        except MetricError as error:
            problems.append(str(error))
    if problems:
        raise MetricError(" | ".join(problems))
    return found


def make_metric(name: str, settings: Mapping[str, Any] | None = None) -> Metric:
    """Instantiate metric ``name`` with ``settings`` checked against its Settings dataclass."""
    cls = metric_class(name)
    return cls(parse_settings(cls, dict(settings or {})))


def settings_json_schema(cls: type[Metric]) -> dict[str, Any]:
    """The JSON schema of ``cls.Settings``: one entry per field that declares a rule."""
    return settings_schema_of(cls.Settings)


def parse_settings(cls: type[Metric], raw: dict[str, Any]) -> Any:
    """Build ``cls.Settings`` from a dict, naming any unknown, mistyped or out-of-range key."""
    try:
        return parse_settings_of(
            cls.Settings,
            raw,
            owner=f"metric {cls.name!r}",
            fix=f"metrics: {cls.name}: {{key}} in the config (or --set {cls.name}.{{key}}=...)",
        )
    except SettingsError as error:
        raise MetricError(str(error)) from None


class EvaluationContext:
    """What metrics share at one θs: tasks, their adaptations and gradients, each computed once.

    ``start_params`` is θs, where every task's adaptation starts, unless ``task_start`` gives
    task ``i``'s own start (the finetune baseline's per-task head). Task ``i`` of ``split`` is
    task ``i`` of ``TaskSampler(source, evaluation_seed)``, the same at every epoch. Every cache
    grows on demand: asking for 60 tasks after 600 reuses the first 60.
    Each task adapts by the run's algorithm (:meth:`~metalandscape.algorithms.Algorithm.
    evaluation_adaptation`): ``inner_steps`` steps of ``inner_step_size``, one float for every
    parameter (MAML, Reptile, the finetune baseline) or a mapping from parameter name to a float
    or a tensor shaped like it (Meta-SGD's learned α); a parameter missing from the mapping stays
    at its start (ANIL's body), so its displacement θ̃ᵢ − θs is zero and direction-based metrics
    (trajectory coherence) live in the adapted parameters. Curvature and gradients at θs or θ̃ᵢ
    are still taken over all parameters.
    ``carried`` is a dict handed from the previous measured epoch's context to this one's (same
    run, epochs in order): metrics keep warm-start state there (e.g. each task's top Hessian
    eigenvector), under their own keys; it starts empty.
    ``start_gradient_tasks``: how many of each split's support gradients at θs the metrics will
    ask for (:meth:`Metric.start_gradient_tasks`); the adaptation's first step is that gradient
    when every parameter adapts by plain gradient descent, so the context keeps that many from
    it. ``adaptation_options``: further keywords of the algorithm's inner loop
    (:meth:`~metalandscape.algorithms.Algorithm.evaluation_adaptation_options`).
    """

    def __init__(
        self,
        model: nn.Module,
        start_params: Params,
        sampler: TaskSampler,
        kind: TaskKind,
        *,
        inner_steps: int,
        inner_step_size: float | Mapping[str, Tensor | float],
        device: torch.device | str = "cpu",
        task_chunk_size: int | None = 1,
        progress: bool = False,
        task_start: Callable[[int], Params] | None = None,
        carried: dict[str, Any] | None = None,
        start_gradient_tasks: Mapping[str, int] | None = None,
        adaptation_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model.to(device)
        self.device = torch.device(device)
        self.start_params = {name: p.detach().to(self.device) for name, p in start_params.items()}
        self.dtype = next(iter(self.start_params.values())).dtype
        self.sampler = sampler
        self.kind = kind
        self.inner_steps = inner_steps
        self.inner_step_size: float | dict[str, Tensor | float] = (
            inner_step_size
            if isinstance(inner_step_size, int | float)
            else {
                name: value.detach().to(self.device, self.dtype)
                if isinstance(value, Tensor)
                else value
                for name, value in inner_step_size.items()
            }
        )
        # The first adaptation step is the full support gradient at the start unless only some
        # parameters adapt (ANIL's head); then start gradients are computed on their own.
        self.adaptation_options = dict(adaptation_options or {})
        self._first_step_is_start_gradient = not self.adaptation_options.get("sam_radius") and (
            isinstance(self.inner_step_size, int | float)
            or set(self.inner_step_size) >= set(self.start_params)
        )
        self.task_chunk_size = task_chunk_size
        self.progress = progress
        self.adaptations = 0
        self.carried: dict[str, Any] = {} if carried is None else carried
        self._tasks: dict[str, list] = {}
        self._adapted: dict[str, list[Params]] = {}
        self._start_gradients: dict[str, list[Tensor]] = {}
        self.start_gradient_tasks: dict[str, int] = dict(start_gradient_tasks or {})
        self._target: dict[str, list[tuple[float, float]]] = {}
        self.task_start = task_start
        self._task_starts: dict[int, Params] = {}

    # --- per-task starts (registries: the finetune baseline's per-task head) ---------------

    def start_for(self, index: int) -> Params:
        """Where task ``index``'s adaptation starts: ``task_start(index)`` or θs."""
        if self.task_start is None:
            return self.start_params
        if index not in self._task_starts:
            self._task_starts[index] = {
                name: p.detach().to(self.device) for name, p in self.task_start(index).items()
            }
        return self._task_starts[index]

    def _starts(self, start: int, stop: int) -> Params:
        """``[stop - start, ...]`` starts of tasks ``start..stop-1`` (θs viewed, not copied)."""
        if self.task_start is None:
            return {name: p.expand(stop - start, *p.shape) for name, p in self.start_params.items()}
        starts = [self.start_for(index) for index in range(start, stop)]
        return {name: torch.stack([s[name] for s in starts]) for name in starts[0]}

    # ----------------------------------------------------------------------------------------

    def tasks(self, split: Split, count: int) -> TaskBatch:
        """The first ``count`` evaluation tasks of ``split``, on the context's device."""
        cache = self._tasks.setdefault(split, [])
        for index in range(len(cache), count):
            cache.append(self.sampler.task(split, index).to(self.device, self.dtype))
        return TaskBatch.stack(cache[:count])

    def adapted(self, split: Split, count: int) -> list[Params]:
        """θ̃ᵢ for the first ``count`` tasks (the algorithm's adaptation from θs on each support set)."""
        cache = self._adapted.setdefault(split, [])
        if len(cache) < count:
            batch = self.tasks(split, count)
            indices = range(len(cache), count)
            bar = tqdm(
                total=len(indices),
                desc=f"adapting {split} tasks",
                disable=not self.progress,
                mininterval=1.0,
                leave=False,
            )
            for start in range(indices.start, count, self._chunk(count)):
                stop = min(start + self._chunk(count), count)
                cache.extend(self._adapt_chunk(split, batch, start, stop))
                bar.update(stop - start)
            bar.close()
        return cache[:count]

    def _chunk(self, count: int) -> int:
        return count if self.task_chunk_size is None else self.task_chunk_size

    def _adapt(
        self,
        starts: Params,
        inputs: Tensor,
        labels: Tensor,
        batched: bool,
        gradients: list[Params] | None = None,
    ) -> Params:
        """The algorithm's evaluation adaptation from ``starts`` (no graph kept); ``gradients``
        receives each step's support gradient (see :func:`~metalandscape.functional.adapt`)."""
        if isinstance(self.inner_step_size, dict):
            adapter: Callable[..., Any] = adapt_with_step_sizes
            step: dict[str, Any] = {"step_sizes": self.inner_step_size}
        else:
            adapter, step = adapt, {"step_size": self.inner_step_size}
        adapted = adapter(
            self.model,
            starts,
            inputs,
            labels,
            kind=self.kind,
            steps=self.inner_steps,
            create_graph=False,
            batched=batched,
            gradients=gradients,
            **step,
            **self.adaptation_options,
        )
        assert isinstance(adapted, dict)
        return adapted

    def _adapt_chunk(self, split: Split, batch: TaskBatch, start: int, stop: int) -> list[Params]:
        """Adapt tasks ``start..stop-1``. When the first step is the full support gradient at
        the start, the start-gradient cache has reached ``start`` and the metrics will ask for
        it (``start_gradient_tasks``), that gradient is kept as the tasks' ∇L(Dᵢ; θs)
        (:meth:`start_gradients`), so it is not computed twice."""
        tasks = stop - start
        start_gradients = self._start_gradients.setdefault(split, [])
        keep = (
            start < self.start_gradient_tasks.get(split, 0)
            and len(start_gradients) == start
            and self._first_step_is_start_gradient
        )
        steps: list[Params] | None = [] if keep else None
        if tasks == 1:
            adapted = self._adapt(
                self.start_for(start),
                batch.support_inputs[start],
                batch.support_labels[start],
                batched=False,
                gradients=steps,
            )
            if steps:
                start_gradients.append(flatten([steps[0][name] for name in self.start_params]))
            self.adaptations += 1
            return [adapted]
        adapted = self._adapt(
            self._starts(start, stop),
            batch.support_inputs[start:stop],
            batch.support_labels[start:stop],
            batched=True,
            gradients=steps,
        )
        if steps:
            kept = min(stop, self.start_gradient_tasks[split]) - start
            first = [steps[0][name][:kept] for name in self.start_params]
            start_gradients.extend(flatten(first, batched=True).unbind(0))
        self.adaptations += tasks
        return [{name: value[i] for name, value in adapted.items()} for i in range(tasks)]

    def displacements(self, split: Split, count: int) -> Tensor:
        """``[count, P]``: θ̃ᵢ − θs of each task, flattened."""
        adapted = self.adapted(split, count)
        if self.task_start is None:
            start = flatten(self.start_params)
            return torch.stack([flatten(p) - start for p in adapted])
        return torch.stack([flatten(p) - flatten(self.start_for(i)) for i, p in enumerate(adapted)])

    def start_gradients(self, split: Split, count: int) -> Tensor:
        """``[count, P]``: ∇L(Dᵢ; θs), the support-loss gradient at θs, flattened (kept from
        the adaptation's first step where :meth:`_adapt_chunk` could keep it)."""
        cache = self._start_gradients.setdefault(split, [])
        if len(cache) < count:
            batch = self.tasks(split, count)
            for start in range(len(cache), count, self._chunk(count)):
                stop = min(start + self._chunk(count), count)
                grads = gradient(
                    self.model,
                    self._starts(start, stop),
                    batch.support_inputs[start:stop],
                    batch.support_labels[start:stop],
                    self.kind,
                    batched=True,
                )
                cache.extend(flatten(grads, batched=True).unbind(0))
        return torch.stack(cache[:count])

    def target_results(self, split: Split, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-task target loss and score (accuracy or MSE) at θ̃ᵢ."""
        cache = self._target.setdefault(split, [])
        if len(cache) < count:
            batch = self.tasks(split, count)
            adapted = self.adapted(split, count)
            results = []
            with torch.no_grad():
                for index in range(len(cache), count):
                    outputs = forward(self.model, adapted[index], batch.target_inputs[index])
                    labels = batch.target_labels[index]
                    loss = loss_from_outputs(outputs, labels, self.kind)
                    results.append(
                        torch.stack([loss, score_from_outputs(outputs, labels, self.kind)])
                    )
            # One transfer to the host for all new tasks, not two per task.
            cache.extend(map(tuple, torch.stack(results).double().cpu().tolist()))
        values = np.asarray(cache[:count], dtype=np.float64)
        return values[:, 0], values[:, 1]

    def support_losses(self, split: Split, count: int) -> np.ndarray:
        """Per-task support loss L(Dᵢ; θ̃ᵢ) at the adapted parameters."""
        batch = self.tasks(split, count)
        adapted = self.adapted(split, count)
        with torch.no_grad():
            losses = torch.stack(
                [
                    loss_from_outputs(
                        forward(self.model, adapted[i], batch.support_inputs[i]),
                        batch.support_labels[i],
                        self.kind,
                    )
                    for i in range(count)
                ]
            )
        return losses.double().cpu().numpy()


def mean_and_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))
