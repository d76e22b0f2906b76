"""Typed configuration: one frozen root with a section per phase.

Presets are YAML files in ``infra/configs/``; a preset may name a ``base`` preset that it
overrides. Dotted overrides (``pretrain.lr=3e-4``) apply last. Every value is validated
before any work starts, and a bad one raises :class:`ConfigError` with one line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from phases.errors import ConfigError
from phases.sections import (  # noqa: F401 (re-exported: the sections are imported from here)
    AlignConfig,
    DataConfig,
    EvaluateConfig,
    InferenceConfig,
    ModelConfig,
    NearDedupConfig,
    PretrainConfig,
    QualityConfig,
    Section,
    SourceConfig,
    SourceKind,
)

PRESET_DIR = Path(__file__).resolve().parents[1] / "infra" / "configs"
PHASE_NAMES = ("data", "model", "pretrain", "align", "inference", "evaluate")


class LifecycleConfig(Section):
    """The whole pipeline: a section per phase."""

    name: str = Field("tiny", description="Preset name, recorded in lineage.")
    experiment: str = Field("llm-lifecycle", min_length=1, description="MLflow experiment name.")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    align: AlignConfig = AlignConfig()
    inference: InferenceConfig = InferenceConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    def section(self, phase: str) -> Section:
        return getattr(self, phase)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- loading


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_preset(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r} is neither a YAML file nor a preset; presets: {', '.join(known)}")


def load_raw(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    path = _resolve_preset(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"config {path} names itself as a base (cycle: {' -> '.join(map(str, _seen))})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base:
        base_path = (path.parent / base) if (path.parent / base).exists() else base
        raw = _deep_merge(load_raw(base_path, _seen + (path,)), raw)
    return raw


def apply_override(raw: dict, assignment: str) -> dict:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict; list items by index."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value, e.g. pretrain.max_steps=20")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} indexes a list of {len(node)} items")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {key!r}: {last} indexes a list of {len(node)} items")
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see infra/configs/tiny.yaml"
        return f"{loc} is not a known setting; allowed keys here: {allowed}"
    if err["type"] == "missing":
        return f"{loc} is required but missing"
    value = err.get("input")
    if isinstance(value, dict):
        return f"{loc}: {msg.removeprefix('Value error, ')}"
    return f"{loc}={value!r} is invalid: {msg.removeprefix('Value error, ')}"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = LifecycleConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann, *(inner or ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def validate(raw: dict) -> LifecycleConfig:
    try:
        return LifecycleConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("; ".join(_describe(err) for err in e.errors())) from None


def load_config(name_or_path: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> LifecycleConfig:
    raw = load_raw(name_or_path)
    for assignment in overrides:
        raw = apply_override(raw, assignment)
    return validate(raw)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict into dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = obj
    return out
