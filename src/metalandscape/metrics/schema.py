"""The workflow config's JSON schema, its ``metrics:`` entries built from the metric plugins.

``workflow/schemas/config.schema.yaml`` holds everything but the settings of each metric; those
come from the rules declared next to each plugin's Settings fields (:func:`~.base.setting`), so a
new metric needs no schema edit. The workflow validates with :func:`validate_config` when it is
parsed, after Snakemake's own check against the YAML file (which fills in the defaults).

Loading the plugins imports torch (seconds), and every Snakemake start parses the workflow (on
SLURM, once per job), so each plugin's settings schema is cached in
``$METALANDSCAPE_CACHE`` (default ``~/.cache/metalandscape``) under a fingerprint of its entry
point and of every Python file of the package that holds it: any edit there rebuilds it. A cache
that cannot be read or written is skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import yaml

from metalandscape.data import dataset_kind, dataset_names
from metalandscape.metrics import metric_entry_points
from metalandscape.models import default_model_name, model_entry_points

CACHE_ENV = "METALANDSCAPE_CACHE"
CACHE_FILE = "metric-settings-schemas.json"
#: Newest entries kept: several checkouts (or versions) of the plugins may share one cache.
CACHE_ENTRIES = 256


class ConfigSchemaError(ValueError):
    """The workflow config breaks the schema, or a metric plugin it names cannot be loaded."""


def metric_settings_schemas(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{metric: JSON schema of its settings} for ``names`` (default: every registered metric).

    A name that is not registered is left out. Only plugins whose schema is not cached (or whose
    package changed since) are loaded.
    """

    def describe(name: str) -> dict[str, Any]:
        from metalandscape.metrics.base import metric_class, settings_json_schema

        return settings_json_schema(metric_class(name))

    return _cached_plugin_facts(metric_entry_points(), names, describe, "metric")


def model_facts(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{model: {"kind": ..., "settings": JSON schema of its settings}} for ``names`` (default:
    every registered model), cached like :func:`metric_settings_schemas`."""

    def describe(name: str) -> dict[str, Any]:
        from metalandscape.models.base import model_class
        from metalandscape.settings import settings_json_schema

        cls = model_class(name)
        return {"kind": cls.kind, "settings": settings_json_schema(cls.Settings)}

    return _cached_plugin_facts(model_entry_points(), names, describe, "model")


def _cached_plugin_facts(
    registered: Mapping[str, EntryPoint],
    names: Iterable[str] | None,
    describe: Callable[[str], dict[str, Any]],
    group: str,
) -> dict[str, dict[str, Any]]:
    """``describe(name)`` of each registered name of ``names``, from the cache when its plugin's
    fingerprint is there (``group`` keeps metric and model entries apart)."""
    chosen = sorted(registered if names is None else set(names) & set(registered))
    cached = _read_cache()
    facts: dict[str, dict[str, Any]] = {}
    built = False
    for name in chosen:
        fingerprint = plugin_fingerprint(registered[name])
        key = None if fingerprint is None else f"{group}:{fingerprint}"
        if key is not None and isinstance(cached.get(key), dict):
            facts[name] = cached[key]
            continue
        facts[name] = describe(name)
        if key is not None:
            cached.pop(key, None)
            cached[key] = facts[name]
            built = True
    if built:
        _write_cache(dict(list(cached.items())[-CACHE_ENTRIES:]))
    return facts


def plugin_fingerprint(entry: EntryPoint) -> str | None:
    """SHA-256 of ``entry``'s value and of every ``.py`` file of its top-level package (None
    when the module cannot be found without running it)."""
    try:
        spec = importlib.util.find_spec(entry.module.partition(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
    digest = hashlib.sha256(entry.value.encode())
    digest.update(_tree_digest(str(root)).encode())
    return digest.hexdigest()


@cache
def _tree_digest(root: str) -> str:
    """SHA-256 over the paths and bytes of the ``.py`` files at or below ``root``."""
    digest = hashlib.sha256()
    path = Path(root)
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_path() -> Path:
    """Where the settings schemas are cached (``$METALANDSCAPE_CACHE`` or ~/.cache)."""
    folder = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metalandscape"
    return Path(folder) / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        loaded = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_cache(cached: Mapping[str, Any]) -> None:
    """Write the cache whole (temporary file, then rename); skip it where that fails."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            json.dump(cached, handle)
        os.replace(handle.name, path)
    except OSError:
        return


def config_schema(
    path: str | Path,
    metrics: Iterable[str] | None = None,
    models: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The schema file at ``path`` with the settings schema of each of ``metrics`` filled in,
    the registered data set and model names as the choices of ``dataset`` and
    ``overrides.model``, and each model's settings schema (``models``: :func:`model_facts`)
    checked where an experiment names it.

    ``metrics`` defaults to every registered metric. Settings of any other metric stay checked
    only as a mapping (the file's ``additionalProperties``).
    """
    schema = yaml.safe_load(Path(path).read_text())
    section = schema["properties"]["metrics"]
    section["properties"] = {**section.get("properties", {}), **metric_settings_schemas(metrics)}
    experiment = schema["$defs"]["experiment"]["properties"]
    experiment["dataset"]["enum"] = list(dataset_names())
    overrides = schema["$defs"]["overrides"]
    overrides["properties"]["model"]["enum"] = sorted(model_entry_points())
    overrides["allOf"] = [
        {
            "if": {"required": ["model"], "properties": {"model": {"const": name}}},
            "then": {"properties": {"model_settings": facts["settings"]}},
        }
        for name, facts in (models or {}).items()
    ]
    return schema


def validate_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Check ``config`` against :func:`config_schema` for the metrics whose settings it holds,
    and refuse NaN and ±inf anywhere (JSON Schema's bounds let them through).

    Raises :class:`ConfigSchemaError` with one line that starts with ``config`` and the key path
    (``config metrics.hessian.tol: ...``) and says the fix, or names the plugin that failed to
    load.
    """
    import jsonschema

    experiments = [e for e in config.get("experiments") or [] if isinstance(e, Mapping)]
    named = {_model_of(experiment) for experiment in experiments} - {None}
    try:
        models = model_facts(named)  # type: ignore[arg-type]
        schema = config_schema(path, config.get("metrics") or {}, models)
    except ValueError as error:  # a plugin that fails to load (MetricError, ModelError)
        raise ConfigSchemaError(str(error)) from None
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigSchemaError(schema_error_line(error))
    _check_finite(dict(config))
    _check_model_kinds(experiments, models)


def _model_of(experiment: Mapping[str, Any]) -> str | None:
    overrides = experiment.get("overrides")
    return overrides.get("model") if isinstance(overrides, Mapping) else None


def _check_model_kinds(
    experiments: list[Mapping[str, Any]], models: Mapping[str, Mapping[str, Any]]
) -> None:
    """Refuse an experiment whose model's outputs (logits, predictions) are not its tasks'."""
    for number, experiment in enumerate(experiments):
        model = _model_of(experiment)
        if model is None:
            continue
        dataset = experiment["dataset"]
        wanted = dataset_kind(dataset)
        kind = models[model]["kind"]
        if kind != wanted:
            raise ConfigSchemaError(
                f"config experiments[{number}].overrides.model: {model!r} is a {kind} model but "
                f"{dataset} tasks are {wanted}; choose a {wanted} model, e.g. "
                f"{default_model_name(dataset)}"
            )


def _check_finite(value: Any, parts: tuple[Any, ...] = ()) -> None:
    """Refuse NaN and ±inf anywhere in the config: JSON Schema's bounds let them through."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigSchemaError(
            f"config {key_path(parts)}: {value!r} is not a finite number; give a finite number"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, (*parts, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_finite(item, (*parts, index))


def key_path(parts: Iterable[Any]) -> str:
    """``experiments[0].overrides.inner_steps`` from a JSON path's parts."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _a(kind: str) -> str:
    return {"integer": "an integer", "array": "a list", "object": "a mapping"}.get(
        kind, f"a {kind}"
    )


def schema_error_line(error: Any) -> str:
    """One line for a jsonschema error: ``config <key path>: <what is wrong>; <the fix>``."""
    where = key_path(error.absolute_path) or "(top level)"
    value, rule, check = error.instance, error.validator, error.validator_value
    if rule == "minimum":
        text = f"{value!r} is below the minimum {check}; use {check} or more"
    elif rule == "exclusiveMinimum":
        text = f"{value!r} must be above {check}; use a larger value"
    elif rule == "maximum":
        text = f"{value!r} is above the maximum {check}; use {check} or less"
    elif rule == "exclusiveMaximum":
        text = f"{value!r} must be below {check}; use a smaller value"
    elif rule == "type":
        kinds = check if isinstance(check, list) else [check]
        text = f"{value!r} is not {' or '.join(_a(k) for k in kinds)}; give {_a(kinds[0])}"
    elif rule == "enum":
        text = f"{value!r} is not allowed; use one of {', '.join(map(str, check))}"
    elif rule == "const":
        text = f"{value!r} is not allowed; use {check!r}"
    elif rule == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(known)) if isinstance(value, Mapping) else []
        text = f"unknown key(s) {unknown}; known keys: {', '.join(known)}"
    elif rule == "required":
        missing = [key for key in check if not (isinstance(value, Mapping) and key in value)]
        text = f"needs the key(s) {missing}; add them"
    elif rule == "minItems":
        text = f"needs at least {check} item(s), got {len(value)}; add some"
    elif rule == "maxItems":
        text = f"takes at most {check} item(s), got {len(value)}; remove some"
    elif rule == "uniqueItems":
        text = f"{value!r} repeats an item; list each once"
    elif rule == "pattern":
        description = error.schema.get("description", f"must match {check}")
        text = f"{value!r} is not allowed: {description}; rename it"
    elif rule in ("oneOf", "anyOf"):
        text = f"{value!r} matches none of the allowed forms; see the schema's description"
    else:
        text = " ".join(error.message.split())
    return f"config {where}: {' '.join(text.split())}"


__all__ = [
    "ConfigSchemaError",
    "config_schema",
    "key_path",
    "metric_settings_schemas",
    "schema_error_line",
    "validate_config",
]
