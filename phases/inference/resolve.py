"""``--model`` as a directory or a registry URI: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

A registry URI is resolved with ``MlflowClient`` (the tracking URI from the environment):
the version by alias or number, then its artifacts (a local artifact store is read in
place; otherwise downloaded). The HF files are then found inside the logged artifact:
the transformers flavor keeps the model in ``model/`` and the tokenizer in
``components/tokenizer/``; a pyfunc or plain directory keeps them anywhere below.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from phases.errors import ConfigError, DataError

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ResolvedModel:
    model_dir: Path
    tokenizer_dir: Path
    label: str  # what was asked for (a path or the URI), for records and /v1/models


def resolve(spec: str, download_to: Path | None = None) -> ResolvedModel:
    if spec.startswith("models:/"):
        root = _registry_artifacts(spec, download_to)
        model_dir, tokenizer_dir = find_hf_dirs(root, spec)
        return ResolvedModel(model_dir, tokenizer_dir, spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--model {spec}: no such directory; give a saved model directory or models:/NAME@ALIAS")
    model_dir, tokenizer_dir = find_hf_dirs(path, spec)
    return ResolvedModel(model_dir, tokenizer_dir, spec)


def check(spec: str) -> None:
    """Fail now, with the message :func:`resolve` would give, if ``spec`` names no model; downloads nothing."""
    if spec.startswith("models:/"):
        registry_version(spec)
    elif not Path(spec).expanduser().exists():
        raise DataError(f"--model {spec}: no such directory; give a saved model directory or models:/NAME@ALIAS")


def registry_version(uri: str):
    """``(client, name, ModelVersion)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, or a clear error."""
    from mlflow.tracking import MlflowClient

    m = _URI.match(uri)
    if not m:
        raise ConfigError(f"model URI {uri!r} is malformed; use models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient()
    name = m["name"]
    try:
        client.get_registered_model(name)
    except Exception as e:  # mlflow.exceptions is beyond what phases/ may import
        raise DataError(
            f"{uri}: no registered model named {name!r} at tracking URI {client.tracking_uri} ({_first_line(e)}); "
            f"set MLFLOW_TRACKING_URI to the registry that holds it"
        ) from None
    try:
        version = client.get_model_version_by_alias(name, m["alias"]) if m["alias"] else client.get_model_version(name, m["version"])
    except Exception:
        what = f"alias {m['alias']!r} is not set" if m["alias"] else f"version {m['version']} does not exist"
        raise DataError(
            f"{uri}: {what} on registered model {name!r}; see its versions with MlflowClient().search_model_versions(\"name='{name}'\")"
        ) from None
    return client, name, version


def _registry_artifacts(uri: str, download_to: Path | None) -> Path:
    client, name, version = registry_version(uri)
    location = client.get_model_version_download_uri(name, version.version)
    local = _local_path(location)
    if local is not None and local.exists():
        return local
    dst = Path(download_to or tempfile.mkdtemp(prefix="lifecycle-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    source = version.source or ""
    if version.run_id:
        base = client.get_run(version.run_id).info.artifact_uri.rstrip("/")
        rel = source.split("/", 2)[2] if source.startswith("runs:/") else source[len(base) :].strip("/") if source.startswith(base) else ""
        return Path(client.download_artifacts(version.run_id, rel, str(dst)))
    model_id = getattr(version, "model_id", None)
    if model_id:
        logged = client.get_logged_model(model_id)
        local = _local_path(logged.artifact_location)
        if local is not None and local.exists():
            return local
    raise DataError(f"{uri}: its artifacts at {location} are neither local nor a run's; download them and pass the directory to --model")


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or re.match(r"^[A-Za-z]$", parsed.scheme):
        return Path(uri)
    return None


def find_hf_dirs(root: Path, label: str) -> tuple[Path, Path]:
    """The directory with ``config.json`` + weights, and the one with the tokenizer (often the same)."""
    root = Path(root)
    candidates = [root] + sorted(p for p in root.rglob("*") if p.is_dir())
    models = [d for d in candidates if (d / "config.json").is_file() and any(d.glob("*.safetensors"))]
    models = [d for d in models if d.name != "reward_model"] or models
    if not models:
        raise DataError(f"{label}: no model under {root} (no config.json with *.safetensors weights); give a directory saved with save_pretrained")
    model_dir = models[0]
    tokenizers = [d for d in [model_dir, *candidates] if (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()]
    if not tokenizers:
        raise DataError(f"{label}: no tokenizer under {root} (no tokenizer.json); save the tokenizer beside the model")
    return model_dir, tokenizers[0]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
