"""Process environment for the embedded default; set before Prefect or MLflow is imported."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

from phases.env import OFFLINE
from phases.errors import write_error

# Where runs write under the home: phase outputs and pretraining checkpoints (MLflow's and Prefect's
# local stores sit in the home itself).
STATE_DIRS = ("outputs", "checkpoints")


def lifecycle_home() -> Path:
    return Path(os.environ.get("LIFECYCLE_HOME", ".lifecycle")).resolve()


def configure(home: Path | None = None) -> Path:
    """Point Prefect, MLflow and Hugging Face at local, offline state under ``home``.

    Values already in the environment win: ``PREFECT_API_URL`` selects a Prefect server
    (else a temporary local one starts), ``MLFLOW_TRACKING_URI`` an MLflow server (else
    SQLite in ``home``). Subprocesses (the DeepSpeed ranks) inherit all of it. A home that
    cannot be written fails first, in one line (:func:`check_writable`).
    """
    home = Path(home) if home else lifecycle_home()
    check_writable(home)
    # Prefect forwards the "lifecycle" loggers (PREFECT_LOGGING_EXTRA_LOGGERS) to the console and
    # the UI, but a logger without a level inherits the root's WARNING: the phases' progress lines
    # (pretraining's steps, "resuming ... at step N") were dropped before reaching either.
    logging.getLogger("lifecycle").setLevel(logging.INFO)
    os.environ["LIFECYCLE_HOME"] = str(home)
    for k, v in defaults(home).items():
        os.environ.setdefault(k, v)
    return home


def check_writable(home: Path) -> None:
    """Make the home and write a file in it and in each state folder there is, before anything starts: a
    home that is read-only, full, not ours or a file fails here in one line (``WriteError``), not as a
    traceback of the Prefect server or MLflow's store minutes later. Missing state folders are left to
    the runs that fill them (a dry run creates nothing but the home)."""
    for d in (home, *(home / s for s in STATE_DIRS)):
        try:
            if d == home:
                d.mkdir(parents=True, exist_ok=True)
            elif not d.is_dir():
                if not os.path.lexists(d):
                    continue
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d))
            with tempfile.NamedTemporaryFile(dir=d, prefix=".write-check-") as probe:
                probe.write(b"ok")
                probe.flush()
        except OSError as e:
            if e.filename is not None and Path(e.filename).name.startswith(".write-check-"):
                e = OSError(e.errno, e.strerror, str(d))  # name the directory, not the probe's random name
            err = write_error(e, f"LIFECYCLE_HOME {home}", default_path=d)
            if err is None:
                raise
            raise err from e


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
