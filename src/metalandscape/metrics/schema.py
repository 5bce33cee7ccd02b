"""The workflow config's JSON schema, its ``metrics:`` entries built from the metric plugins.

``workflow/schemas/config.schema.yaml`` holds everything but the settings of each metric; those
come from the rules declared next to each plugin's Settings fields (:func:`~.base.setting`), so a
new metric needs no schema edit. The workflow validates with :func:`validate_config` when it is
parsed, after Snakemake's own check against the YAML file (which fills in the defaults).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from metalandscape.metrics.base import (
    MetricError,
    metric_class,
    metric_entry_points,
    settings_json_schema,
)


class ConfigSchemaError(ValueError):
    """The workflow config breaks the schema, or a metric plugin it names cannot be loaded."""


def metric_settings_schemas(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{metric: JSON schema of its settings} for ``names`` (default: every registered metric).

    Only the plugins named are loaded; a name that is not registered is left out.
    """
    registered = metric_entry_points()
    chosen = sorted(registered if names is None else set(names) & set(registered))
    return {name: settings_json_schema(metric_class(name)) for name in chosen}


def config_schema(path: str | Path, metrics: Iterable[str] | None = None) -> dict[str, Any]:
    """The schema file at ``path`` with the settings schema of each of ``metrics`` filled in.

    ``metrics`` defaults to every registered metric. Settings of any other metric stay checked
    only as a mapping (the file's ``additionalProperties``).
    """
    schema = yaml.safe_load(Path(path).read_text())
    section = schema["properties"]["metrics"]
    section["properties"] = {**section.get("properties", {}), **metric_settings_schemas(metrics)}
    return schema


def validate_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Check ``config`` against :func:`config_schema` for the metrics whose settings it holds.

    Raises :class:`ConfigSchemaError` with one line naming the offending key (``metrics.hessian.
    tol``) or the metric plugin that failed to load.
    """
    import jsonschema

    try:
        schema = config_schema(path, config.get("metrics") or {})
    except MetricError as error:
        raise ConfigSchemaError(str(error)) from None
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "the config"
        raise ConfigSchemaError(f"{key}: {' '.join(error.message.split())}")


__all__ = ["ConfigSchemaError", "config_schema", "metric_settings_schemas", "validate_config"]
