"""Register the aligned model in the MLflow model registry (transformers flavor), with an alias.

The align phase publishes a plain Hugging Face directory (model + tokenizer). This module
turns it into an MLflow model: ``mlflow.transformers.save_model`` of a local text-generation
pipeline, written to a temporary directory and uploaded to the given run with
``MlflowClient`` (no fluent API, so no global active run or tracking URI is touched), then
registered as a new version of ``name`` and given ``alias`` (``challenger`` by default: the
evaluate gate decides whether it becomes ``champion``). Everything is local: the pipeline
is built from the directory, the pip requirements are pinned from the installed versions
(no dependency inference subprocess), and nothing is fetched from a hub.

Load it back with ``mlflow.transformers.load_model("models:/<name>@challenger")`` or
``mlflow.pyfunc.load_model(...)``.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path

ARTIFACT_PATH = "model"


def _pip_requirements() -> list[str]:
    return [f"{dist}=={version(dist)}" for dist in ("transformers", "torch", "tokenizers", "safetensors")]


def _pipeline(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")


def register_aligned_model(tracking_uri: str, run_id: str, model_dir: Path, name: str, alias: str = "challenger") -> str:
    """Log ``model_dir`` to run ``run_id`` as an MLflow transformers model, register it as a new
    version of ``name``, point ``alias`` at it, and return the version (a string such as ``"3"``)."""
    import mlflow.transformers
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from phases.env import offline_env

    offline_env()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no Hugging Face model (config.json): pass the align phase's output directory")
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)  # fails early, naming the run, when it does not exist
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as tmp:
        local = Path(tmp) / ARTIFACT_PATH
        mlflow.transformers.save_model(
            transformers_model=_pipeline(model_dir),
            path=str(local),
            task="text-generation",
            pip_requirements=_pip_requirements(),
            metadata={"source_dir": str(model_dir)},
        )
        client.log_artifacts(run_id, str(local), ARTIFACT_PATH)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(getattr(e, "error_code", "")):
            raise
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
    mv = client.create_model_version(name, source=source, run_id=run_id, tags={"lifecycle.model_dir": str(model_dir)})
    client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)
