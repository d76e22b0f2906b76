"""The Prefect server's scheduler creates the runs of a cron schedule (it failed on every pass with
SQLAlchemy 2.1: ``Can't evaluate bulk DML statement``; constraints.txt pins 2.0)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield url, tmp_path / "server.log"
    finally:
        proc.terminate()
        proc.wait(30)


def test_scheduler_creates_the_runs_of_a_cron_schedule(server):
    url, log = server
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import CronSchedule

    # A client bound to this server: settings cached by earlier tests could point get_client() at a
    # temporary server, which runs no scheduler.
    with SyncPrefectClient(url) as client:
        flow_id = client.create_flow_from_name("llm-lifecycle")
        dep = client.create_deployment(
            flow_id=flow_id,
            name="nightly-test",
            entrypoint="flows/pipeline.py:lifecycle_pipeline",
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="* * * * *", timezone="UTC"))],
        )
        runs = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not runs:
            time.sleep(2)
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep])))
    assert runs, f"the scheduler created no run; server log:\n{log.read_text()[-3000:]}"
    assert {r.state.type.value for r in runs} == {"SCHEDULED"}
    assert "bulk DML" not in log.read_text()
