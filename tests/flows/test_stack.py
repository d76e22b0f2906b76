"""`lifecycle up` starts a real Prefect server, worker and MLflow server on loopback; `down` leaves no process."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from flows.cli import main
from flows.stack import _alive

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_then_down_leaves_no_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    prefect_port, mlflow_port = _free_port(), _free_port()
    try:
        assert main(["up", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]) == 0
        out = capsys.readouterr().out
        assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in out
        state = json.loads((tmp_path / "stack" / "stack.json").read_text())
        pids = [s["pid"] for s in state["services"].values()]
        assert set(state["services"]) == {"prefect-server", "prefect-worker", "mlflow-server"} and all(map(_alive, pids))
        assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=5).status_code == 200
        pool = httpx.get(f"http://127.0.0.1:{prefect_port}/api/work_pools/lifecycle-pool", timeout=5).json()
        assert pool["type"] == "process"
        assert main(["up", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]) == 0  # already up: same pids
        assert [s["pid"] for s in json.loads((tmp_path / "stack" / "stack.json").read_text())["services"].values()] == pids
    finally:
        assert main(["down"]) == 0
    assert not any(map(_alive, pids)), "a service outlived `lifecycle down`"
    assert not (tmp_path / "stack" / "stack.json").exists()
    assert main(["down"]) == 0 and "nothing to stop" in capsys.readouterr().out
