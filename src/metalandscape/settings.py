"""Settings of a plugin (metric, model): a frozen dataclass whose fields declare their rules.

A field made with :func:`setting` carries a :class:`SettingRule` (type, bounds or choices,
nullability, description), declared once next to the plugin's code: :func:`parse_settings`
enforces it, and :meth:`SettingRule.json_schema` is the workflow schema's entry for it, so a new
plugin needs no schema edit. Torch-free: planning reads these rules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A setting that is unknown, mistyped or out of range (one line naming it and the fix)."""


SETTING_RULE = "metalandscape.setting"  # the dataclass field metadata key of a SettingRule


@dataclass(frozen=True)
class SettingRule:
    """What values a plugin setting takes: its type, bounds or choices, and whether null is ok.

    Declared once next to the Settings field (see :func:`setting`); :func:`parse_settings`
    enforces it and :meth:`json_schema` gives the workflow schema's entry for it.
    """

    # int, float, str, bool, or tuple: a non-empty list of distinct ``choices``, or without
    # choices a list (maybe empty) of distinct strings, or with ``items=int`` a non-empty list
    # of integers ≥ ``minimum``
    kind: type
    items: type = str
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    description: str | None = None  # the workflow schema's description of the setting

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (None if it is)."""
        if value is None:
            return None if self.nullable else f"must be {self.describe()}"
        if not same_kind(self.kind(), value):
            return f"must be {self.describe()}"
        if self.kind is tuple and self.items is int:
            whole = all(isinstance(item, int) and not isinstance(item, bool) for item in value)
            if not value or not whole or not all(self._in_bounds(item) for item in value):
                return f"must be {self.describe()}"
            return None
        if self.kind is tuple and self.choices is None:
            if not all(isinstance(item, str) for item in value) or len(set(value)) != len(value):
                return f"must be {self.describe()}"
            return None
        if self.kind is tuple:
            bad = [item for item in value if item not in (self.choices or ())]
            if not value or bad or len(set(value)) != len(value):
                return f"must be {self.describe()}"
            return None
        if self.choices is not None and value not in self.choices:
            return f"must be {self.describe()}"
        if self.kind is str:
            return None
        if not math.isfinite(value) or not self._in_bounds(value):
            return f"must be {self.describe()}"
        return None

    def _in_bounds(self, value: float) -> bool:
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.exclusive_minimum is not None and value <= self.exclusive_minimum)
            or (self.maximum is not None and value > self.maximum)
        )

    def describe(self) -> str:
        """The allowed values in words."""
        if self.kind is tuple and self.items is int:
            bound = f" >= {self.minimum:g}" if self.minimum is not None else ""
            text = f"a non-empty list of integers{bound}"
        elif self.kind is tuple and self.choices is None:
            text = "a list of distinct strings"
        elif self.kind is tuple:
            text = f"a non-empty list of distinct values of {', '.join(self.choices or ())}"
        elif self.choices is not None:
            text = f"one of {', '.join(self.choices)}"
        else:
            text = {
                bool: "true or false",
                int: "an integer",
                float: "a finite number",
                str: "a string",
            }[self.kind]
            bounds = [
                f">= {self.minimum:g}" if self.minimum is not None else "",
                f"> {self.exclusive_minimum:g}" if self.exclusive_minimum is not None else "",
                f"<= {self.maximum:g}" if self.maximum is not None else "",
            ]
            text = " ".join([text, " and ".join(b for b in bounds if b)]).strip()
        return f"{text} or null" if self.nullable else text

    def json_schema(self) -> dict[str, Any]:
        """This rule as a JSON-schema entry (the workflow schema's)."""
        if self.kind is tuple and self.items is int:
            item: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                item["minimum"] = self.minimum
            schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": item}
        elif self.kind is tuple and self.choices is None:
            schema = {"type": "array", "uniqueItems": True, "items": {"type": "string"}}
        elif self.kind is tuple:
            schema = {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "enum": list(self.choices or ())},
            }
        elif self.choices is not None:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {
                "type": {bool: "boolean", int: "integer", float: "number", str: "string"}[self.kind]
            }
            for key, bound in (
                ("minimum", self.minimum),
                ("exclusiveMinimum", self.exclusive_minimum),
                ("maximum", self.maximum),
            ):
                if bound is not None:
                    schema[key] = bound
        if self.nullable:
            schema = {"anyOf": [{"type": "null"}, schema]}
        return schema if self.description is None else {"description": self.description, **schema}


def setting(default: Any, *, kind: type | None = None, **rule: Any) -> Any:
    """A Settings field with its :class:`SettingRule` (``kind`` defaults to the default's type)."""
    kind = kind or (tuple if isinstance(default, tuple | list) else type(default))
    return dataclasses.field(
        default=default, metadata={SETTING_RULE: SettingRule(kind=kind, **rule)}
    )


def settings_json_schema(settings_class: type) -> dict[str, Any]:
    """The JSON schema of a Settings dataclass: one entry per field that declares a rule."""
    properties = {
        field.name: field.metadata[SETTING_RULE].json_schema()
        for field in dataclasses.fields(settings_class)
        if SETTING_RULE in field.metadata
    }
    return {"type": "object", "additionalProperties": False, "properties": properties}


def parse_settings(settings_class: type, raw: dict[str, Any], *, owner: str, fix: str) -> Any:
    """Build ``settings_class`` from a dict, naming any unknown, mistyped or out-of-range key.

    ``owner`` names the plugin in messages (``metric 'hessian'``); ``fix`` says where the value
    is set, with ``{key}`` for the setting's name (``metrics: hessian: {key} in the config``).
    """
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SettingsError(
            f"{owner} has no setting(s) {unknown}; its settings: {', '.join(sorted(fields)) or 'none'}"
        )
    defaults = settings_class()
    raw = dict(raw)
    for key, value in raw.items():
        rule = fields[key].metadata.get(SETTING_RULE)
        default = getattr(defaults, key)
        if rule is not None:
            problem = rule.problem(value)
        elif default is not None and not same_kind(default, value):
            problem = f"must be like {default!r}"
        else:
            problem = None
        if problem:
            raise SettingsError(
                f"{owner} setting {key!r} {problem}, got {value!r}; fix {fix.format(key=key)}"
            )
        if isinstance(value, list):
            raw[key] = tuple(value)
    try:
        return settings_class(**raw)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"{owner}: bad settings {raw}: {error}") from None


def same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))
