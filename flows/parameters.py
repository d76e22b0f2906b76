"""The pipeline flow's parameter types: what the Prefect UI draws as a form and the API checks.

Prefect turns the flow's signature into a JSON schema (``parameter_openapi_schema``); a deployment
made with ``enforce_parameter_schema=True`` has the server validate every new flow run's
parameters against it, so a bad value is refused (HTTP 409) before a worker picks the run up.

- ``config``: one of the presets in ``infra/configs/`` (an enum, built from the files) or the path
  of a YAML file on the worker (a string ending in ``.yaml``/``.yml``): anything else is refused.
- ``overrides``: dotted key -> value, as ``lifecycle run --set`` takes them. Its schema is derived
  from the config schema (``LifecycleConfig``): one property per setting with the setting's type,
  range, choices and description; list items by index (``data.sources.0.max_docs``) through
  ``patternProperties``; no other key. What JSON schema cannot say (checks across fields) is
  checked when the flow loads the config, before any work starts.
- ``phases``: a subset of the six phase names (a multi-select).

The UI (Prefect 3.8's schema form) draws ``config``'s two choices as tabs named by their titles
("preset": a select of the files, "YAML file": a text field), ``phases`` (an array of enum items) as a
multi-select, ``overrides`` as one field per setting, each with its description and no default (a
default here would be the config class's, not the preset's, and the form fills defaults in); keys by
index are typed in the form's JSON view.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import Field, StringConstraints, WithJsonSchema

from phases.config import PHASE_NAMES, PRESET_DIR, LifecycleConfig

PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
PhaseName = Literal[PHASE_NAMES]
Preset = Annotated[Literal[PRESETS], Field(title="preset")]
YamlFile = Annotated[str, StringConstraints(pattern=r"\.ya?ml$"), Field(title="YAML file")]
ConfigChoice = Union[Preset, YamlFile]


def _resolve(schema: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with every ``$ref`` to ``$defs`` replaced by its definition (the config has no cycles)."""
    if isinstance(schema, list):
        return [_resolve(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return _resolve({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
    return {k: _resolve(v, defs) for k, v in schema.items()}


def _strip_defaults(schema: Any) -> Any:
    # A default in an override's schema would be the config class's default, not the preset's: the UI
    # fills a field with its default, which would silently replace the preset's value.
    if isinstance(schema, list):
        return [_strip_defaults(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: _strip_defaults(v) for k, v in schema.items() if k != "default"}


def _nullable(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "null" or any(s.get("type") == "null" for s in schema.get("anyOf", ()))


def _leaf(schema: Mapping[str, Any], key: str) -> dict[str, Any]:
    out = _strip_defaults(copy.deepcopy(dict(schema)))
    out["title"] = key
    if not _nullable(out):
        # Prefect's validator lets null through for an optional property without a default
        # (it rewrites {"type": T} to anyOf [T, null]); a non-nullable setting must still refuse it.
        out["not"] = {"type": "null"}
    return out


def _array_items(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for s in (schema, *schema.get("anyOf", ())):
        if s.get("type") == "array" and isinstance(s.get("items"), dict):
            return s["items"]
    return None


def _walk(schema: Mapping[str, Any], key: str, props: dict, patterns: dict) -> None:
    if schema.get("type") == "object" and "properties" in schema:  # a section: one property per setting
        for name, sub in schema["properties"].items():
            _walk(sub, f"{key}.{name}" if key else name, props, patterns)
        return
    props[key] = _leaf(schema, key)
    items = _array_items(schema)
    if items is None:
        return
    prefix = re.escape(key) + r"\.[0-9]+"
    patterns[f"^{prefix}$"] = _leaf(items, f"{key}.N")
    for name, sub in items.get("properties", {}).items():
        patterns[f"^{prefix}\\.{re.escape(name)}$"] = _leaf(sub, f"{key}.N.{name}")


def overrides_schema() -> dict[str, Any]:
    """A JSON schema for ``{dotted key: value}`` overrides, derived from the config schema."""
    root = LifecycleConfig.model_json_schema()
    resolved = _resolve({k: v for k, v in root.items() if k != "$defs"}, root.get("$defs", {}))
    props: dict[str, Any] = {}
    patterns: dict[str, Any] = {}
    _walk(resolved, "", props, patterns)
    return {
        "type": "object",
        "title": "overrides",
        "properties": props,
        "patternProperties": patterns,
        "additionalProperties": False,
    }


# At run time the flow also takes ``--set`` strings (the CLI passes them as typed); the API shows
# and enforces the key/value form.
Overrides = Annotated[Union[dict[str, Any], list[str]], WithJsonSchema(overrides_schema())]


def assignments(overrides: Mapping[str, Any] | list[str] | tuple[str, ...] | None) -> list[str]:
    """``{"pretrain.max_steps": 20}`` (or ``["pretrain.max_steps=20"]``) as the ``key=value`` strings
    ``phases.config.load_config`` applies. Values are written as YAML, which it reads back unchanged."""
    if not overrides:
        return []
    if isinstance(overrides, (list, tuple)):
        return [str(a) for a in overrides]
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True)}" for k, v in overrides.items()]


def as_mapping(sets: list[str], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` strings as key/value overrides, each value as the config schema typed it in
    ``resolved`` (the validated config's ``to_dict()``): ``pretrain.lr=1e-5`` gives the number
    1e-05, where YAML alone reads the string "1e-5", which the API's schema would refuse."""
    out: dict[str, Any] = {}
    for a in sets:
        key = a.partition("=")[0].strip()
        node: Any = resolved
        for part in key.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        out[key] = node
    return out
