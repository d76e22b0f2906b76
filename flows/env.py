"""Process environment for the embedded default; set before Prefect or MLflow is imported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from phases.env import OFFLINE


def lifecycle_home() -> Path:
    return Path(os.environ.get("LIFECYCLE_HOME", ".lifecycle")).resolve()


def configure(home: Path | None = None) -> Path:
    """Point Prefect, MLflow and Hugging Face at local, offline state under ``home``.

    Values already in the environment win: ``PREFECT_API_URL`` selects a Prefect server
    (else a temporary local one starts), ``MLFLOW_TRACKING_URI`` an MLflow server (else
    SQLite in ``home``). Subprocesses (the DeepSpeed ranks) inherit all of it.
    """
    home = Path(home) if home else lifecycle_home()
    home.mkdir(parents=True, exist_ok=True)
    # Prefect forwards the "lifecycle" loggers (PREFECT_LOGGING_EXTRA_LOGGERS) to the console and
    # the UI, but a logger without a level inherits the root's WARNING: the phases' progress lines
    # (pretraining's steps, "resuming ... at step N") were dropped before reaching either.
    logging.getLogger("lifecycle").setLevel(logging.INFO)
    os.environ["LIFECYCLE_HOME"] = str(home)
    for k, v in defaults(home).items():
        os.environ.setdefault(k, v)
    return home


def defaults(home: Path) -> dict[str, str]:
    """The variables configure() sets when they are not already set."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The temporary server migrates a new database on its first start: past Prefect's 20 s
        # default on a busy 2-core machine ("Timed out while attempting to connect to ephemeral
        # Prefect API server", seen in the test suite on 2026-11-27).
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "lifecycle",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        **OFFLINE,
        "HF_DATASETS_CACHE": str(home / "cache" / "hf-datasets"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
