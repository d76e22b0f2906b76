"""Runs left behind by a killed process: found at the next start and closed, never left RUNNING.

A ``kill -9`` (or a lost machine) runs no handler: the MLflow runs of the killed pipeline stay
RUNNING and its Prefect flow run stays Running. Every parent run records the host and the
process that owns it (``lifecycle.host``, ``lifecycle.pid`` and the process's start time, so a
recycled pid is not mistaken for the owner). When a pipeline starts, :func:`close_orphans`
looks for RUNNING parent runs of this host whose process is gone, and marks them and their
RUNNING child runs KILLED with a ``lifecycle.error`` saying so, and the Prefect flow run they
name Crashed. Runs of other hosts are left alone: their process may be alive.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("lifecycle.crash")
TAG_HOST, TAG_PID, TAG_STARTED = "lifecycle.host", "lifecycle.pid", "lifecycle.pid_started"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_STARTED: _process_start(pid) or ""}


def is_alive(pid: int, started: str) -> bool:
    now = _process_start(pid)
    if now is None:
        try:
            os.kill(pid, 0)  # no /proc (not Linux): existence only
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return not started or now == started


def close_orphans(mlf, experiment_id: str) -> list[str]:
    """Mark this host's RUNNING parent runs whose process died (and their RUNNING children) KILLED;
    returns their run ids."""
    host = socket.gethostname()
    runs = mlf.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'", max_results=1000)
    closed = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or not tags.get(TAG_PID, "").isdigit():
            continue
        if is_alive(int(tags[TAG_PID]), tags.get(TAG_STARTED, "")):
            continue
        children = mlf.search_runs(
            [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{run.info.run_id}'", max_results=1000
        )
        for r in [*children, run]:
            mlf.set_tag(r.info.run_id, "lifecycle.error", f"the process that ran it (pid {tags[TAG_PID]} on {host}) died without closing it")
            mlf.set_terminated(r.info.run_id, "KILLED")
            closed.append(r.info.run_id)
        _crash_flow_run(tags.get("lifecycle.prefect_flow_run_id"))
        log.warning("closed MLflow run %s (and %d phase runs) left RUNNING by dead process %s", run.info.run_id, len(children), tags[TAG_PID])
    return closed


def _crash_flow_run(flow_run_id: str | None) -> None:
    if not flow_run_id or flow_run_id == "none":
        return
    try:
        from prefect import get_client
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.type in (StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED):
                client.set_flow_run_state(flow_run_id, Crashed(message="its process died (found by the next lifecycle run)"), force=True)
    except Exception as e:  # another server, or the run is gone: the MLflow side is what we own
        log.info("could not mark Prefect flow run %s crashed: %s", flow_run_id, e)
