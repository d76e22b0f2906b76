"""``lifecycle up`` / ``lifecycle down``: a local stack on loopback for the Prefect and MLflow UIs.

``up`` starts a Prefect server (SQLite under ``$LIFECYCLE_HOME/prefect``), a process worker for
the deployments' work pool and an MLflow tracking server (``$LIFECYCLE_HOME/mlflow.db``, artifacts
under ``$LIFECYCLE_HOME/mlartifacts``), waits until each answers, records their process groups
in ``$LIFECYCLE_HOME/stack/stack.json`` and prints the URLs and the two variables that point runs
at them. ``down`` stops exactly those process groups. ``make run`` needs none of this: without
``PREFECT_API_URL`` a run starts a temporary server of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from phases.errors import LifecycleError

BIN = Path(sys.executable).parent
POOL = "lifecycle-pool"  # the work pool of infra/prefect.yaml


def _state_file(home: Path) -> Path:
    return home / "stack" / "stack.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _start(name: str, cmd: list[str], env: dict[str, str], home: Path) -> dict:
    log = home / "stack" / f"{name}.log"
    with log.open("a") as fh:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return {"pid": proc.pid, "log": str(log), "cmd": cmd}


def _wait_http(url: str, proc: dict, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(proc["pid"]):
            raise LifecycleError(f"{proc['cmd'][0]} exited during start; see {proc['log']}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise LifecycleError(f"{url} did not answer within {timeout_s:.0f} s; see {proc['log']}")


def up(home: Path, prefect_port: int = 4200, mlflow_port: int = 5000, pool: str = POOL, timeout_s: float = 180) -> dict:
    """Start the three services (or report the running ones); returns their URLs and pids."""
    state = _state_file(home)
    if state.is_file():
        running = json.loads(state.read_text())
        if all(_alive(s["pid"]) for s in running["services"].values()):
            return running
        down(home)  # a half-dead stack from before: clear it, then start anew
    state.parent.mkdir(parents=True, exist_ok=True)
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    services: dict[str, dict] = {}
    try:
        services["prefect-server"] = _start(
            "prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)], env, home
        )
        services["mlflow-server"] = _start(
            "mlflow-server",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{home / 'mlflow.db'}",
                "--artifacts-destination",
                str(home / "mlartifacts"),
            ],
            env,
            home,
        )
        _wait_http(f"{prefect_api}/health", services["prefect-server"], timeout_s)
        services["prefect-worker"] = _start(
            "prefect-worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
            {**env, "PREFECT_API_URL": prefect_api},
            home,
        )
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health", services["mlflow-server"], timeout_s)
        # The worker creates its pool when it starts: the pool's existence says the worker is up.
        _wait_http(f"{prefect_api}/work_pools/{pool}", services["prefect-worker"], timeout_s)
    except BaseException:
        _stop(services)
        raise
    result = {
        "prefect_ui": f"http://127.0.0.1:{prefect_port}",
        "prefect_api": prefect_api,
        "mlflow_ui": f"http://127.0.0.1:{mlflow_port}",
        "pool": pool,
        "services": services,
    }
    state.write_text(json.dumps(result, indent=2))
    return result


def _stop(services: dict[str, dict], grace_s: float = 15) -> None:
    for s in services.values():
        try:
            os.killpg(s["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(s["pid"]) for s in services.values()):
        time.sleep(0.2)
    for s in services.values():
        try:
            os.killpg(s["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(home: Path) -> list[str]:
    """Stop the process groups ``up`` recorded; returns the names stopped."""
    state = _state_file(home)
    if not state.is_file():
        return []
    services = json.loads(state.read_text())["services"]
    _stop(services)
    state.unlink()
    return list(services)
