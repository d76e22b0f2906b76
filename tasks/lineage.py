"""MLflow lineage: one parent run per pipeline run, one child run per phase.

Everything goes through ``MlflowClient`` with explicit run ids (no fluent ``active_run``
state), so concurrent tasks and subprocesses cannot log into the wrong run. Each child
run carries the Prefect flow-run id, the git commit and the config hash as tags, its
config section as params, its output manifest as an artifact, and its inputs as MLflow
datasets with explicit digests (the upstream outputs' content fingerprints).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from phases.config import LifecycleConfig, flatten
from phases.refs import PhaseRef
from phases.storage import MANIFEST

TAG_PHASE = "lifecycle.phase"
TAG_FLOW_RUN = "lifecycle.prefect_flow_run_id"
TAG_FLOW_RUN_URL = "lifecycle.prefect_flow_run_url"
TAG_DEPLOYMENT = "lifecycle.prefect_deployment"
TAG_LOCK_DIGEST = "lifecycle.lock_digest"
TAG_CONFIG_HASH = "lifecycle.config_hash"
TAG_REUSED = "lifecycle.reused"
TAG_SOURCE_RUN = "lifecycle.source_run_id"


def tracking_uri(home: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite under the lifecycle home."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"


def client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(home))


def experiment_id(mlf, name: str, home: Path) -> str:
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # With a local SQLite store, artifacts live under the lifecycle home (not in ./mlruns of the cwd);
    # a tracking server decides its own artifact location.
    local = tracking_uri(home).startswith("sqlite:")
    location = (Path(home).resolve() / "mlartifacts").as_uri() if local else None
    try:
        return mlf.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another run
        return mlf.get_experiment_by_name(name).experiment_id


def shown_tracking_uri(home: Path) -> str:
    """The tracking URI as logs and artifacts may show it: a password in it masked."""
    from phases.data.pii import mask_url_credentials

    return mask_url_credentials(tracking_uri(home))


def run_link(home: Path, exp_id: str, run_id: str) -> str:
    """A link to an MLflow run: the tracking server's page, or how to open a local store's UI."""
    uri = shown_tracking_uri(home)
    if uri.startswith(("http://", "https://")):
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id})"
    return f"`{run_id}` (local store {uri}: `make ui-mlflow`, then http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run_id})"


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, with ``-dirty`` when the work tree has changes; ``unknown`` outside git."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


LOCK_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"


def lock_digest(path: Path = LOCK_FILE) -> str:
    """sha256 of the lock file the install used (compare with ``sha256sum constraints.txt``); ``none`` without one."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "none"


def deployment_name() -> str | None:
    """The Prefect deployment this flow run belongs to (None for a run started from the CLI or Python)."""
    try:
        from prefect.runtime import deployment

        return deployment.name
    except Exception:  # no API to ask: the run is not a deployment's
        return None


def base_tags(cfg: LifecycleConfig, flow_run_id: str | None, commit: str, deployment: str | None = None) -> dict[str, str]:
    """The tags every run of one pipeline run carries (parent, phases, registered model version).

    ``deployment`` defaults to the deployment of the current flow run, when it has one.
    """
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if deployment is None and flow_run_id:
        deployment = deployment_name()
    return {
        TAG_FLOW_RUN: flow_run_id or "none",
        **({TAG_FLOW_RUN_URL: f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"} if ui and flow_run_id else {}),
        TAG_DEPLOYMENT: deployment or "none",
        TAG_CONFIG_HASH: cfg.digest(),
        "lifecycle.preset": cfg.name,
        "mlflow.source.git.commit": commit,
        TAG_LOCK_DIGEST: lock_digest(),
    }


def start_parent(mlf, exp_id: str, cfg: LifecycleConfig, tags: Mapping[str, str], phases: list[str]) -> str:
    run = mlf.create_run(exp_id, run_name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", tags={**tags, "lifecycle.phases": ",".join(phases)})
    mlf.log_dict(run.info.run_id, cfg.to_dict(), "config.yaml")
    mlf.log_param(run.info.run_id, "config_hash", cfg.digest())
    return run.info.run_id


def start_child(mlf, exp_id: str, parent_id: str, phase: str, section: Mapping[str, Any], tags: Mapping[str, str], key: str) -> str:
    from mlflow.entities import Param

    run = mlf.create_run(exp_id, run_name=phase, tags={**tags, "mlflow.parentRunId": parent_id, TAG_PHASE: phase, "lifecycle.phase_key": key})
    params = [Param(k[:250], str(v)[:6000]) for k, v in flatten(dict(section)).items()]
    for i in range(0, len(params), 100):
        mlf.log_batch(run.info.run_id, params=params[i : i + 100])
    return run.info.run_id


def log_inputs(mlf, run_id: str, inputs: Mapping[str, PhaseRef]) -> None:
    """Each upstream output as an MLflow dataset input, digest = its content fingerprint."""
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    class OutputSource(FileSystemDatasetSource):
        """A pipeline output directory (or a source list) named by its URI."""

        def __init__(self, uri: str):
            self._uri = uri

        @property
        def uri(self):
            return self._uri

        @staticmethod
        def _get_source_type() -> str:
            return "local"

        def load(self, dst_path=None):
            return self._uri

        @staticmethod
        def _can_resolve(raw_source):
            return False

        @classmethod
        def _resolve(cls, raw_source):
            return cls(str(raw_source))

        def to_dict(self):
            return {"uri": self._uri}

        @classmethod
        def from_dict(cls, d):
            return cls(d["uri"])

    datasets = []
    for name, ref in inputs.items():
        ds = MetaDataset(OutputSource(ref.uri), name=f"{ref.phase}-{ref.key}", digest=ref.fingerprint[:36])
        datasets.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", name)]))
    if datasets:
        mlf.log_inputs(run_id, datasets=datasets)


def headline_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    return {f"headline/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def finish_child(mlf, run_id: str, ref: PhaseRef, reused: bool) -> None:
    """Close a phase's child run; a reused output points to the run that produced it."""
    from mlflow.entities import Metric

    from phases.storage import read_manifest

    manifest = Path(ref.uri) / MANIFEST
    mlf.log_artifact(run_id, str(manifest))
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in headline_metrics(ref.summary).items()]
    if metrics:
        mlf.log_batch(run_id, metrics=metrics)
    mlf.set_tag(run_id, "lifecycle.output_uri", ref.uri)
    mlf.set_tag(run_id, "lifecycle.fingerprint", ref.fingerprint)
    mlf.set_tag(run_id, TAG_REUSED, str(reused).lower())
    source = read_manifest(Path(ref.uri)).get("lineage", {}).get("mlflow_run_id") if reused else None
    if source:
        mlf.set_tag(run_id, TAG_SOURCE_RUN, source)
    mlf.set_terminated(run_id, "FINISHED")


def fail_run(mlf, run_id: str, error: BaseException) -> None:
    mlf.set_tag(run_id, "lifecycle.error", f"{type(error).__name__}: {error}"[:5000])
    mlf.set_terminated(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
