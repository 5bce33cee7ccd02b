"""The typed configuration of one training run: the one place that knows the defaults.

A run is one (dataset, way, shot, algorithm, seed, variant) with its hyper-parameters. Unset
values (``None``) take the paper's defaults (Appendix A.3) for the dataset and shot, or Finn et
al.'s where the paper is silent; :func:`resolve_run_config` fills them in and checks every value,
naming the key of anything wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from metalandscape.algorithms import algorithm_names

Dataset = Literal["sinusoid", "fontglot", "omniglot", "miniimagenet"]
DATASETS: tuple[str, ...] = ("sinusoid", "fontglot", "omniglot", "miniimagenet")
ALGORITHMS: tuple[str, ...] = algorithm_names()
CHARACTER_DATASETS = ("fontglot", "omniglot")
#: Weight initializations (key ``initialization``): ``pytorch``, PyTorch's default
#: (Kaiming-uniform weights, uniform biases); ``xavier``, Finn et al.'s code (Glorot-uniform
#: weights of every convolution and linear layer, zero biases).
INITIALIZATIONS: tuple[str, ...] = ("pytorch", "xavier")
#: Keys of a checkpoint schedule given as a mapping (see :func:`checkpoint_schedule`).
SCHEDULE_KEYS = ("log_spaced_until", "points", "then_every", "until")


class ConfigError(ValueError):
    """A user-fixable configuration problem; the message names the key."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a training run's result (given the data files)."""

    dataset: str
    algorithm: str
    seed: int = 0
    variant: str = "default"
    n_way: int = 5
    k_shot: int | None = None
    query: int | None = None
    data_path: str | None = None
    rotation: str | None = None
    resize: str = "lanczos"
    inner_steps: int | None = None
    inner_step_size: float | None = None
    meta_batch_size: int | None = None
    meta_learning_rate: float = 0.001
    iterations_per_epoch: int = 500
    epochs: int = 100
    regularizer_gamma: float = 0.5
    task_chunk_size: int | None = None
    filters: int | None = None
    finetune_batch_size: int | None = None
    finetune_learning_rate: float = 0.001
    hidden_sizes: tuple[int, ...] = (40, 40)
    train_amplitude: tuple[float, float] = (0.1, 5.0)
    train_phase: tuple[float, float] = (0.0, math.pi / 2)
    test_amplitude: tuple[float, float] = (0.1, 5.0)
    test_phase: tuple[float, float] = (math.pi / 2, math.pi)
    # An Omniglot copy short of 1,623 characters is refused unless this allows splitting it in
    # Finn's 1100/100/423 proportions (metalandscape.data.omniglot).
    omniglot_proportional_split: bool = False
    initialization: str = "pytorch"
    # Meta-train on the first N classes of the meta-train split only (meta-overfitting).
    train_classes: int | None = None
    # Meta-iterations at which checkpoints 0, 1, 2, ... are written (0 first); None: one per
    # epoch, at 0, iterations_per_epoch, 2 * iterations_per_epoch, ... (``epochs`` is then the
    # number of checkpoints after θ0).
    checkpoints: tuple[int, ...] | None = None

    def checkpoint_iterations(self) -> tuple[int, ...]:
        """The meta-iteration count of every checkpoint ("epoch") 0..epochs."""
        if self.checkpoints is not None:
            return self.checkpoints
        return tuple(epoch * self.iterations_per_epoch for epoch in range(self.epochs + 1))

    @property
    def kind(self) -> str:
        """``regression`` for sinusoids, else ``classification``."""
        return "regression" if self.dataset == "sinusoid" else "classification"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists).

        Keys added after run files were first written are left out at their defaults, so a
        run's stored config (and its resume check) is unchanged by their addition.
        """
        values = dataclasses.asdict(self)
        for key, default in _OMITTED_AT_DEFAULT.items():
            if values[key] == default:
                del values[key]
        return json.loads(json.dumps(values))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_OMITTED_AT_DEFAULT = {"initialization": "pytorch", "checkpoints": None, "train_classes": None}


def _schedule_error(value: Any, problem: str) -> ConfigError:
    return ConfigError(
        f"config key 'checkpoints' {problem}, got {value!r}; give a list of increasing "
        "meta-iterations or {log_spaced_until: N, points: P, then_every: E, until: T}"
    )


def checkpoint_schedule(value: Any) -> tuple[int, ...]:
    """The checkpoint iterations (0 first, strictly increasing) of a ``checkpoints`` value.

    A list gives them (0 is added when absent). The mapping ``{log_spaced_until: N, points: P,
    then_every: E, until: T}`` gives 0, then P iterations log-spaced from 1 to N (rounded,
    duplicates dropped), then every E iterations after N up to T, and T itself.
    """
    if isinstance(value, dict):
        if set(value) != set(SCHEDULE_KEYS):
            raise _schedule_error(value, f"needs exactly the keys {list(SCHEDULE_KEYS)}")
        if not all(isinstance(value[k], int) and not isinstance(value[k], bool) for k in value):
            raise _schedule_error(value, "takes integers")
        until_log, points, every, until = (value[k] for k in SCHEDULE_KEYS)
        if until_log < 1 or points < 1 or every < 1 or until < until_log:
            raise _schedule_error(
                value, "needs log_spaced_until, points, then_every ≥ 1 and until ≥ log_spaced_until"
            )
        logs = np.unique(np.rint(np.geomspace(1, until_log, points)).astype(int)).tolist()
        regular = list(range(until_log + every, until + 1, every))
        return tuple(sorted({0, *logs, *regular, until}))
    if isinstance(value, list | tuple) and value:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise _schedule_error(value, "takes integers")
        iterations = [0, *value] if value[0] != 0 else list(value)
        if any(b <= a for a, b in itertools.pairwise(iterations)):
            raise _schedule_error(value, "must be strictly increasing and ≥ 0")
        return tuple(iterations)
    raise _schedule_error(value, "is neither a list nor a mapping")


def _check_positive_int(values: dict[str, Any], key: str, minimum: int = 1) -> None:
    value = values.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config key {key!r} must be an integer ≥ {minimum}, got {value!r}")


def _check_positive_float(values: dict[str, Any], key: str, allow_zero: bool = False) -> None:
    value = values.get(key)
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ConfigError(f"config key {key!r} must be a finite number {bound}, got {value!r}")


def _check_range(values: dict[str, Any], key: str) -> tuple[float, float]:
    value = values[key]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    ):
        raise ConfigError(
            f"config key {key!r} must be a [low, high] pair of numbers, got {value!r}"
        )
    low, high = float(value[0]), float(value[1])
    if not low < high:
        raise ConfigError(
            f"config key {key!r} = [{low}, {high}] is empty or inverted; give [low, high], low < high"
        )
    return (low, high)


def resolve_run_config(raw: dict[str, Any]) -> RunConfig:
    """Check ``raw`` and fill the dataset- and shot-dependent defaults."""
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown run config key(s) {unknown}; known keys: {', '.join(sorted(_FIELDS))}"
        )
    for key in ("dataset", "algorithm"):
        if key not in raw:
            raise ConfigError(f"run config needs {key!r}")
    values = dict(raw)
    if values["dataset"] not in DATASETS:
        raise ConfigError(
            f"config key 'dataset' must be one of {DATASETS}, got {values['dataset']!r}"
        )
    if values["algorithm"] not in ALGORITHMS:
        raise ConfigError(
            f"config key 'algorithm' must be one of {ALGORITHMS}, got {values['algorithm']!r}"
        )
    for key in ("n_way", "k_shot", "query", "inner_steps", "meta_batch_size", "filters"):
        _check_positive_int(values, key)
    for key in ("iterations_per_epoch", "task_chunk_size", "finetune_batch_size", "train_classes"):
        _check_positive_int(values, key)
    _check_positive_int(values, "epochs", minimum=0)
    _check_positive_int(values, "seed", minimum=0)
    for key in ("inner_step_size", "meta_learning_rate", "finetune_learning_rate"):
        _check_positive_float(values, key)
    _check_positive_float(values, "regularizer_gamma", allow_zero=True)
    for key in ("train_amplitude", "train_phase", "test_amplitude", "test_phase"):
        if key in values:
            values[key] = _check_range(values, key)
    if not isinstance(values.get("omniglot_proportional_split", False), bool):
        raise ConfigError(
            "config key 'omniglot_proportional_split' must be true or false, "
            f"got {values['omniglot_proportional_split']!r}"
        )
    if "hidden_sizes" in values:
        hidden = values["hidden_sizes"]
        if not isinstance(hidden, list | tuple) or not all(
            isinstance(h, int) and h > 0 for h in hidden
        ):
            raise ConfigError(
                f"config key 'hidden_sizes' must be a list of positive ints, got {hidden!r}"
            )
        values["hidden_sizes"] = tuple(hidden)
    if values.get("rotation") not in (None, "per_task", "off", "expand"):
        raise ConfigError(
            f"config key 'rotation' must be per_task, off or expand, got {values['rotation']!r}"
        )
    if values.get("train_classes") is not None and values["dataset"] == "sinusoid":
        raise ConfigError("config key 'train_classes' applies to image data sets; drop it")
    if values.get("initialization", "pytorch") not in INITIALIZATIONS:
        raise ConfigError(
            f"config key 'initialization' must be one of {', '.join(INITIALIZATIONS)}, "
            f"got {values['initialization']!r}"
        )
    if values.get("checkpoints") is not None:
        values["checkpoints"] = checkpoint_schedule(values["checkpoints"])
        values["epochs"] = len(values["checkpoints"]) - 1
    if values.get("resize", "lanczos") not in ("lanczos", "nearest"):
        raise ConfigError(
            f"config key 'resize' must be lanczos or nearest, got {values['resize']!r}"
        )

    dataset = values["dataset"]
    if values.get("k_shot") is None:
        values["k_shot"] = 10 if dataset == "sinusoid" else 1
    shot = values["k_shot"]
    defaults: dict[str, Any]
    if dataset == "sinusoid":
        # Finn et al.: T = 1, α = 0.01, meta-batch 25, 10 target points.
        defaults = {
            "inner_steps": 1,
            "inner_step_size": 0.01,
            "meta_batch_size": 25,
            "query": 10,
            "task_chunk_size": None,
        }
        if values.get("n_way", 1) != 1:
            raise ConfigError(
                f"config key 'n_way' is {values['n_way']} but sinusoid regression has one output; "
                "drop n_way or set it to 1"
            )
        values["n_way"] = 1
    elif dataset in CHARACTER_DATASETS:
        defaults = {
            "inner_steps": 5,
            "inner_step_size": 0.1,
            "meta_batch_size": 16 if shot == 1 else 8,
            "query": shot,
            "rotation": "per_task",
            "filters": 64,
            "finetune_batch_size": 64 if shot == 1 else 128,
            "task_chunk_size": 1,
        }
        if dataset == "fontglot":
            defaults["data_path"] = "results/data/fontglot.npz"
    else:
        defaults = {
            "inner_steps": 5,
            "inner_step_size": 0.01,
            "meta_batch_size": 4 if shot == 1 else 2,
            "query": 15,
            "rotation": "off",
            "filters": 32,
            "finetune_batch_size": 64 if shot == 1 else 128,
            "task_chunk_size": 1,
        }
    defaults.setdefault("finetune_batch_size", 64)
    for key, value in defaults.items():
        if values.get(key) is None:
            values[key] = value
    if dataset != "sinusoid" and values.get("data_path") is None:
        raise ConfigError(
            f"dataset {dataset!r} needs 'data_path' (the folder holding its files); "
            "see README's data layouts"
        )
    return RunConfig(**values)
