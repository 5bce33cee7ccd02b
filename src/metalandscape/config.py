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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metalandscape.algorithms import algorithm_names, unknown_algorithm_message
from metalandscape.data import (
    DATASET_REGISTRY,
    DataOptions,
    dataset_names,
    unknown_dataset_message,
)
from metalandscape.models import INITIALIZATIONS, default_model_name, model_entry_points

DATASETS: tuple[str, ...] = dataset_names()
ALGORITHMS: tuple[str, ...] = algorithm_names()
#: Where Sharp-MAML's sharpness-aware minimization acts (metalandscape.algorithms.sharpmaml).
SHARP_LEVELS: tuple[str, ...] = ("upper", "lower", "both")
#: Keys of a checkpoint schedule given as a mapping (see :func:`checkpoint_schedule`).
SCHEDULE_KEYS = ("log_spaced_until", "points", "then_every", "until")


class ConfigError(ValueError):
    """A user-fixable configuration problem; the message names the key.

    ``errors`` holds one line per problem found in the input (all of them, not just the first);
    the message is that line, or ``"N config errors: "`` and the lines joined with ``"; "``.
    """

    def __init__(self, *errors: str) -> None:
        self.errors: tuple[str, ...] = errors
        if len(errors) == 1:
            super().__init__(errors[0])
        else:
            super().__init__(f"{len(errors)} config errors: " + "; ".join(errors))


def _key(default: Any = dataclasses.MISSING, *, help: str) -> Any:
    """A RunConfig field with its meaning (``metalandscape train --list-config`` prints it)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a training run's result (given the data files)."""

    dataset: str = _key(
        help="a registered data set (metalandscape.data): sinusoid, fontglot, omniglot, "
        "miniimagenet, folders, or a plugin's"
    )
    algorithm: str = _key(help="a registered algorithm (metalandscape.algorithms), e.g. maml")
    seed: int = _key(0, help="seed of the initial parameters and the meta-training task stream")
    variant: str = _key("default", help="free label that tells runs of one setting apart")
    n_way: int = _key(5, help="classes per task (1 for sinusoid regression)")
    k_shot: int | None = _key(None, help="support examples per class (default 1; sinusoid 10)")
    query: int | None = _key(
        None, help="query examples per class (default k_shot; MiniImagenet 15; sinusoid 10)"
    )
    data_path: str | None = _key(
        None, help="data set file or folder (fontglot: results/data/fontglot.npz)"
    )
    rotation: str | None = _key(
        None, help="per_task, off or expand (default per_task for characters, else off)"
    )
    resize: str = _key("lanczos", help="image resampling filter: lanczos or nearest")
    image_size: tuple[int, int] | None = _key(
        None, help="class folders: resize every image to [height, width] (unset: keep their size)"
    )
    image_channels: str = _key(
        "auto", help="class folders: grey, rgb or auto (grey when every image is single-channel)"
    )
    inner_steps: int | None = _key(None, help="inner-loop gradient steps (default 5; sinusoid 1)")
    inner_step_size: float | None = _key(
        None, help="inner-loop learning rate α (default 0.1 characters, 0.01 others)"
    )
    meta_batch_size: int | None = _key(
        None, help="tasks per meta-update (default from dataset and shot, Appendix A.3)"
    )
    meta_learning_rate: float = _key(0.001, help="Adam learning rate of the meta-update β")
    iterations_per_epoch: int = _key(500, help="meta-updates between two saved checkpoints")
    epochs: int = _key(100, help="epochs to train; one checkpoint is kept per epoch")
    regularizer_gamma: float = _key(
        0.5, help="weight γ of regularized MAML's gradient-coherence term"
    )
    task_chunk_size: int | None = _key(
        None, help="tasks adapted at once (memory vs speed; no effect on results)"
    )
    filters: int | None = _key(
        None, help="convolution filters per layer (default 64 characters, 32 MiniImagenet)"
    )
    finetune_batch_size: int | None = _key(
        None, help="examples per step of the finetune baseline (default 64 at 1-shot, else 128)"
    )
    finetune_learning_rate: float = _key(0.001, help="Adam learning rate of the finetune baseline")
    hidden_sizes: tuple[int, ...] = _key((40, 40), help="sinusoid MLP hidden layer widths")
    train_amplitude: tuple[float, float] = _key(
        (0.1, 5.0), help="sinusoid meta-train amplitude range [low, high]"
    )
    train_phase: tuple[float, float] = _key(
        (0.0, math.pi / 2), help="sinusoid meta-train phase range [low, high]"
    )
    test_amplitude: tuple[float, float] = _key(
        (0.1, 5.0), help="sinusoid meta-test amplitude range [low, high]"
    )
    test_phase: tuple[float, float] = _key(
        (math.pi / 2, math.pi), help="sinusoid meta-test phase range [low, high]"
    )
    omniglot_proportional_split: bool = _key(
        False,
        help="split an Omniglot copy short of 1,623 characters in Finn's 1100/100/423 "
        "proportions instead of refusing it",
    )
    reptile_outer_step_size: float = _key(
        1.0,
        help="Reptile's outer step size ε₀ (annealed linearly to 0 over the run unless "
        "reptile_anneal is false)",
    )
    reptile_anneal: bool = _key(True, help="anneal Reptile's ε linearly to 0 over the run")
    reptile_inner_optimizer: str = _key(
        "sgd",
        help="Reptile's inner optimizer: sgd (MAML's inner loop) or adam (β1 = 0, as the paper)",
    )
    anil_first_order: bool = _key(
        False, help="ANIL: drop the second-order term of the head's inner loop"
    )
    metasgd_step_size_init: str = _key(
        "uniform",
        help="Meta-SGD α start: uniform in metasgd_step_size_range (the paper) or constant "
        "(inner_step_size everywhere)",
    )
    metasgd_step_size_range: tuple[float, float] = _key(
        (0.005, 0.1), help="Meta-SGD uniform α initialisation range [low, high]"
    )
    metasgd_first_order: bool = _key(
        False, help="Meta-SGD: drop the second-order term of the inner loop"
    )
    sharp_level: str = _key(
        "both",
        help="Sharp-MAML: where sharpness-aware minimization acts: upper (the meta-update), "
        "lower (each inner step) or both",
    )
    sharp_upper_radius: float = _key(
        0.05, help="Sharp-MAML: SAM radius of the meta-update (upper level; 0 turns it off)"
    )
    sharp_lower_radius: float = _key(
        0.05, help="Sharp-MAML: SAM radius of each inner step (lower level; 0 turns it off)"
    )
    model: str | None = _key(
        None,
        help="the network: a registered model (metalandscape train --list-models); unset: "
        "conv4 for image data, mlp for sinusoid",
    )
    model_settings: dict[str, Any] = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "the model's settings (e.g. {filters: 32}); they override filters and "
            "hidden_sizes"
        },
    )
    initialization: str = _key(
        "pytorch",
        help="initial weights: pytorch (PyTorch's default) or xavier (Finn et al.'s code: "
        "Glorot-uniform convolution and linear weights, zero biases)",
    )
    train_classes: int | None = _key(
        None,
        help="meta-train on only the first N classes of the meta-train split "
        "(meta-overfitting; unset: all)",
    )
    checkpoints: tuple[int, ...] | None = _key(
        None,
        help="meta-iterations of checkpoints 0, 1, 2, ... (a list, or {log_spaced_until, "
        "points, then_every, until}); unset: one per epoch, and epochs counts them",
    )

    def checkpoint_iterations(self) -> tuple[int, ...]:
        """The meta-iteration count of every checkpoint ("epoch") 0..epochs."""
        if self.checkpoints is not None:
            return self.checkpoints
        return tuple(epoch * self.iterations_per_epoch for epoch in range(self.epochs + 1))

    @property
    def model_name(self) -> str:
        """The registered model this run trains (``model``, or the data set's default)."""
        return self.model or default_model_name(self.dataset)

    @property
    def kind(self) -> str:
        """``classification`` or ``regression``: the data set's tasks (its registry entry)."""
        return DATASET_REGISTRY[self.dataset].kind

    def data_options(self) -> DataOptions:
        """How this run's image files become arrays."""
        return DataOptions(
            resize=self.resize,
            image_size=self.image_size,
            image_channels=self.image_channels,
            omniglot_proportional_split=self.omniglot_proportional_split,
        )

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
_OMITTED_AT_DEFAULT = {
    "initialization": "pytorch",
    "checkpoints": None,
    "train_classes": None,
    "model": None,
    "model_settings": {},
    "image_size": None,
    "image_channels": "auto",
}


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
        import numpy as np  # only for a schedule: plain config checks stay light

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


def _check_choice(values: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if key in values and values[key] not in choices:
        raise ConfigError(
            f"config key {key!r} must be one of {', '.join(choices)}, got {values[key]!r}"
        )


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


@dataclass(frozen=True)
class ConfigKey:
    """One RunConfig key as ``--list-config`` prints it."""

    name: str
    type: str
    default: str
    help: str


def _show(value: Any) -> str:
    """A default as YAML would read it back, floats to 4 significant digits."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def config_keys() -> list[ConfigKey]:
    """Every RunConfig key with its type, default and meaning, from the dataclass fields."""
    keys = []
    for spec in dataclasses.fields(RunConfig):
        if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            default = "required"
        elif spec.default is dataclasses.MISSING:
            default = _show(spec.default_factory())
        elif spec.default is None:
            default = "from dataset"
        else:
            default = _show(spec.default)
        type_name = str(spec.type).replace("typing.", "")
        keys.append(ConfigKey(spec.name, type_name, default, spec.metadata.get("help", "")))
    return keys


def format_config_keys() -> str:
    """``--list-config``'s table: one key per line, type, default and meaning."""
    keys = config_keys()
    name_width = max(len(key.name) for key in keys)
    type_width = max(len(key.type) for key in keys)
    default_width = max(len(key.default) for key in keys)
    header = f"{'key':<{name_width}}  {'type':<{type_width}}  {'default':<{default_width}}  meaning"
    lines = [header]
    for key in keys:
        lines.append(
            f"{key.name:<{name_width}}  {key.type:<{type_width}}  "
            f"{key.default:<{default_width}}  {key.help}"
        )
    return "\n".join(lines)


def _collect(errors: list[str], check: Any, *arguments: Any, **options: Any) -> Any:
    """Run one check; on ConfigError record its line(s) in ``errors`` and return None."""
    try:
        return check(*arguments, **options)
    except ConfigError as error:
        errors.extend(error.errors)
        return None


def _check_choices(values: dict[str, Any]) -> None:
    if values.get("rotation") not in (None, "per_task", "off", "expand"):
        raise ConfigError(
            f"config key 'rotation' must be per_task, off or expand, got {values['rotation']!r}"
        )


def _check_resize(values: dict[str, Any]) -> None:
    if values.get("resize", "lanczos") not in ("lanczos", "nearest"):
        raise ConfigError(
            f"config key 'resize' must be lanczos or nearest, got {values['resize']!r}"
        )


def _check_hidden_sizes(values: dict[str, Any], key: str) -> tuple[int, ...]:
    hidden = values[key]
    if not isinstance(hidden, list | tuple) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ConfigError(f"config key {key!r} must be a list of positive ints, got {hidden!r}")
    return tuple(hidden)


def _check_flag(values: dict[str, Any], key: str) -> None:
    if not isinstance(values.get(key, False), bool):
        raise ConfigError(f"config key {key!r} must be true or false, got {values[key]!r}")


def _check_step_size_range(values: dict[str, Any], key: str) -> tuple[float, float]:
    """Meta-SGD's α initialisation range: a [low, high] pair with low ≥ 0."""
    low, high = _check_range(values, key)
    if low < 0:
        raise ConfigError(f"config key {key!r} must have low ≥ 0, got [{low}, {high}]")
    return (low, high)


def _store_checked(
    errors: list[str],
    values: dict[str, Any],
    key: str,
    check: Callable[[dict[str, Any], str], Any],
) -> None:
    """Run ``check(values, key)`` when ``key`` is set; store its fixed-up value, or record why not."""
    if key in values:
        checked = _collect(errors, check, values, key)
        if checked is not None:
            values[key] = checked


def _check_keys(values: dict[str, Any], errors: list[str]) -> None:
    """Unknown keys (removed from ``values``), and the required dataset and algorithm."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        errors.append(
            f"unknown run config key(s) {unknown}; known keys: {', '.join(sorted(_FIELDS))}"
            " (metalandscape train --list-config)"
        )
        for key in unknown:
            del values[key]
    for key in ("dataset", "algorithm"):
        if key not in values:
            errors.append(f"run config needs {key!r}")
    if "dataset" in values and values["dataset"] not in DATASETS:
        errors.append(f"config key 'dataset': {unknown_dataset_message(values['dataset'])}")
    if "algorithm" in values and values["algorithm"] not in ALGORITHMS:
        errors.append(f"config key 'algorithm': {unknown_algorithm_message(values['algorithm'])}")


def _check_numbers(values: dict[str, Any], errors: list[str]) -> None:
    """Counts, rates and the sinusoid ranges (stored back as float pairs)."""
    for key in ("n_way", "k_shot", "query", "inner_steps", "meta_batch_size", "filters"):
        _collect(errors, _check_positive_int, values, key)
    for key in ("iterations_per_epoch", "task_chunk_size", "finetune_batch_size", "train_classes"):
        _collect(errors, _check_positive_int, values, key)
    _collect(errors, _check_positive_int, values, "epochs", minimum=0)
    _collect(errors, _check_positive_int, values, "seed", minimum=0)
    for key in ("inner_step_size", "meta_learning_rate", "finetune_learning_rate"):
        _collect(errors, _check_positive_float, values, key)
    _collect(errors, _check_positive_float, values, "regularizer_gamma", allow_zero=True)
    for key in ("train_amplitude", "train_phase", "test_amplitude", "test_phase"):
        _store_checked(errors, values, key, _check_range)


def _check_algorithm_options(values: dict[str, Any], errors: list[str]) -> None:
    """The on/off flags and the Reptile and Meta-SGD settings."""
    for key in (
        "omniglot_proportional_split",
        "reptile_anneal",
        "anil_first_order",
        "metasgd_first_order",
    ):
        _collect(errors, _check_flag, values, key)
    _collect(errors, _check_positive_float, values, "reptile_outer_step_size")
    _collect(errors, _check_choice, values, "reptile_inner_optimizer", ("sgd", "adam"))
    _collect(errors, _check_choice, values, "metasgd_step_size_init", ("uniform", "constant"))
    _collect(errors, _check_choice, values, "sharp_level", SHARP_LEVELS)
    for key in ("sharp_upper_radius", "sharp_lower_radius"):
        _collect(errors, _check_positive_float, values, key, allow_zero=True)
    _store_checked(errors, values, "metasgd_step_size_range", _check_step_size_range)


def _check_model_and_data(values: dict[str, Any], errors: list[str]) -> None:
    """Model shape, data options, checkpoints, and the keys that depend on the dataset."""
    _store_checked(errors, values, "hidden_sizes", _check_hidden_sizes)
    _collect(errors, _check_choices, values)
    _collect(errors, _check_resize, values)
    spec = DATASET_REGISTRY.get(values.get("dataset", ""))
    if values.get("train_classes") is not None and spec is not None and not spec.needs_files:
        errors.append("config key 'train_classes' applies to image data sets; drop it")
    _collect(errors, _check_model, values)
    if values.get("initialization", "pytorch") not in INITIALIZATIONS:
        errors.append(
            f"config key 'initialization' must be one of {', '.join(INITIALIZATIONS)}, "
            f"got {values['initialization']!r}"
        )
    if values.get("checkpoints") is not None:
        schedule = _collect(errors, checkpoint_schedule, values["checkpoints"])
        if schedule is not None:
            values["checkpoints"] = schedule
            values["epochs"] = len(schedule) - 1
    if spec is not None and spec.kind == "regression" and values.get("n_way", 1) != 1:
        errors.append(
            f"config key 'n_way' is {values['n_way']} but {spec.name} regression has one output; "
            "drop n_way or set it to 1"
        )
    needs_path = spec is not None and spec.needs_files and spec.default_path is None
    if needs_path and values.get("data_path") is None:
        errors.append(
            f"dataset {values['dataset']!r} needs 'data_path' (the folder holding its files: "
            f"{spec.layout_help})"  # type: ignore[union-attr]
        )
    _store_checked(errors, values, "image_size", _check_image_size)
    _collect(errors, _check_choice, values, "image_channels", ("auto", "grey", "rgb"))


def _check_image_size(values: dict[str, Any], key: str) -> tuple[int, int] | None:
    value = values[key]
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(
            f"config key 'image_size' must be [height, width] in pixels, got {value!r}; "
            "write e.g. image_size: [84, 84]"
        )
    return (int(value[0]), int(value[1]))


def _check_model(values: dict[str, Any]) -> None:
    """``model`` names a registered model; ``model_settings`` is a mapping (its keys and values
    are the model's to check, when it is built: metalandscape.models.base.configured_model)."""
    model = values.get("model")
    if model is not None:
        registered = sorted(model_entry_points())
        if model not in registered:
            raise ConfigError(
                f"config key 'model' is {model!r}, which no installed package registers; use one "
                f"of {', '.join(registered)} (metalandscape train --list-models) or install it"
            )
    settings = values.get("model_settings")
    if settings is None:
        values["model_settings"] = {}
    elif not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise ConfigError(
            f"config key 'model_settings' must be a mapping of setting names to values, got "
            f"{settings!r}; write e.g. model_settings: {{filters: 32}}"
        )
    else:
        values["model_settings"] = json.loads(json.dumps(settings))


def _check_values(values: dict[str, Any]) -> list[str]:
    """Every problem of ``values`` (one line each); fixes up ranges and lists in place."""
    errors: list[str] = []
    for check in (_check_keys, _check_numbers, _check_algorithm_options, _check_model_and_data):
        check(values, errors)
    return errors


def resolve_run_config(raw: dict[str, Any]) -> RunConfig:
    """Check ``raw`` and fill the dataset- and shot-dependent defaults.

    Every problem of ``raw`` is reported at once, in one :class:`ConfigError`.
    """
    values = dict(raw)
    errors = _check_values(values)
    if errors:
        raise ConfigError(*errors)
    spec = DATASET_REGISTRY[values["dataset"]]
    if values.get("k_shot") is None:
        values["k_shot"] = 10 if spec.defaults == "sinusoid" else 1
    shot = values["k_shot"]
    defaults: dict[str, Any]
    if spec.defaults == "sinusoid":
        # Finn et al.: T = 1, α = 0.01, meta-batch 25, 10 target points.
        defaults = {
            "inner_steps": 1,
            "inner_step_size": 0.01,
            "meta_batch_size": 25,
            "query": 10,
            "task_chunk_size": None,
        }
        values["n_way"] = 1
    elif spec.defaults == "characters":
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
    if spec.default_path is not None:
        defaults["data_path"] = spec.default_path
    for key, value in defaults.items():
        if values.get(key) is None:
            values[key] = value
    return RunConfig(**values)
