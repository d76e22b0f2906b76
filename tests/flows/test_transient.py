"""A lost tracking server is retried; a permanent failure fails once, naming the problem.

A real MLflow tracking server (MLflow's own app, in-process on a thread: `mlflow server` takes
about 40 s to start on a loaded 2-core machine) sits behind a real TCP proxy that resets
connections. The pipeline flow runs through the CLI with ``MLFLOW_TRACKING_URI`` pointing at the
proxy. The data phase is a toy phase registered for the test (its build writes one small file
and logs a metric), so that no Spark session is paid for: what is tested is the task's retry
policy and MLflow's own retries, on real sockets.
"""

import dataclasses
import json
import socket
import struct
import threading

import pytest

from flows.cli import main
from phases import registry
from phases.errors import DataError
from tasks import phases as phase_tasks  # Prefect too: its console log handler binds the stream of the moment

EXPERIMENT = "transient"


class DroppingProxy:
    """A TCP proxy on loopback to ``upstream``. ``drop(n)`` resets every open connection and the next
    ``n`` new ones (RST, as when a server or a load balancer goes away); the others pass."""

    def __init__(self, upstream: int, drop_first: int = 0):
        self.upstream, self.to_drop, self.dropped = upstream, drop_first, 0
        self.live: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self, n: int) -> None:
        with self.lock:
            self.to_drop = n
            for s in list(self.live):
                self._reset(s)

    def _reset(self, s: socket.socket) -> None:
        self.live.discard(s)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            with self.lock:
                if self.to_drop > 0:
                    self.to_drop -= 1
                    self.dropped += 1
                    self._reset(client)
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                self.live.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with self.lock:
            for s in (src, dst):
                if s in self.live:
                    self.live.discard(s)
                    s.close()

    def close(self) -> None:
        self.server.close()
        self.drop(0)


# MLflow's tracking server app (the Flask app `mlflow server` runs), served by werkzeug on one port; its
# own process, because the app points the process's MLflow tracking and registry URIs at its store.
SERVER = """
from werkzeug.serving import make_server
from mlflow.server import app
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server on loopback: SQLite store, artifacts served through it."""
    import os
    import subprocess
    import sys
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    env = {
        **os.environ,
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{root / 'mlflow.db'}",  # what `mlflow server` hands its workers
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(root / "artifacts"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        port = int(proc.stdout.readline() or 0)
        assert port, f"the MLflow server did not start: {(root / 'server.log').read_text()[-3000:]}"
        # The first request creates the store's tables (SQLite migrations): before any test's clock.
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", timeout=300).read()
        yield port
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _config(tmp_path, experiment: str):
    src = tmp_path / "web.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"document {i}"}) + "\n" for i in range(3)))
    path = tmp_path / "transient.yaml"
    path.write_text(
        f"base: tiny\nname: transient\nexperiment: {experiment}\ndata:\n  sources:\n    - {{name: web, kind: jsonl, path: {json.dumps(str(src))}}}\n"
    )
    return path


def _toy_data_phase(monkeypatch, build):
    """Register ``build`` as the data phase's build, and retry without waiting (the policy, not its delays)."""
    monkeypatch.setitem(registry.BY_NAME, "data", dataclasses.replace(registry.BY_NAME["data"], build=build))
    monkeypatch.setitem(phase_tasks.TASKS, "data", phase_tasks.TASKS["data"].with_options(retry_delay_seconds=0))


def _run(tmp_path, monkeypatch, capsys, proxy, experiment):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # MLflow's client retries a lost connection itself: 2 retries without backoff here (7 with
    # backoff, about 4 minutes, by default) keep the test short; past them, the task's retry is next.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    # Prefect read its settings when this module imported it, before flows.env.configure() set them:
    # the temporary server's home and configure()'s 120 s for its first start, given here.
    with temporary_settings({PREFECT_HOME: tmp_path / "prefect", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}):
        code = main(["run", "--config", str(_config(tmp_path, experiment)), "--phases", "data", "--json"])
    return code, capsys.readouterr()


def _phase_runs(port: int, experiment: str):
    """The experiment's runs, read from the server itself (not through the proxy)."""
    from mlflow.tracking import MlflowClient

    mlf = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    runs = mlf.search_runs([mlf.get_experiment_by_name(experiment).experiment_id], order_by=["attributes.start_time ASC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return parent, [r for r in runs if r.data.tags.get("lifecycle.phase") == "data"]


def _task_run(flow_run_id: str):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return run


def test_a_lost_tracking_server_is_retried_by_mlflow_then_by_the_phase_task(tmp_path, monkeypatch, capsys, tracking_server):
    proxy = DroppingProxy(tracking_server, drop_first=2)  # the flow's first requests: MLflow's client retries them
    attempts = []

    def build(cfg, inputs, out, sink):
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            proxy.drop(3)  # the server goes away for longer than the client's 1 + 2 tries
        sink.log_metrics({"rows": 3})
        (out / "rows.txt").write_text("3\n")
        return {"train_docs": 3}

    _toy_data_phase(monkeypatch, build)
    try:
        code, out = _run(tmp_path, monkeypatch, capsys, proxy, f"{EXPERIMENT}-retried")
    finally:
        proxy.close()
    assert code == 0, out.err[-3000:]
    assert proxy.dropped == 5 and attempts == [1, 2]
    result = json.loads(out.out[out.out.index("{") :])
    assert (tmp_path / "home" / "outputs" / "data" / result["phases"]["data"]["uri"].rsplit("/", 1)[1] / "manifest.json").is_file()

    parent, runs = _phase_runs(tracking_server, f"{EXPERIMENT}-retried")
    assert parent.info.status == "FINISHED"
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]  # one MLflow run per attempt
    assert "Max retries exceeded" in runs[0].data.tags["lifecycle.error"] and "Connection" in runs[0].data.tags["lifecycle.error"]
    assert runs[1].data.metrics["rows"] == 3
    task_run = _task_run(parent.data.tags["lifecycle.prefect_flow_run_id"])
    assert task_run.run_count == 2 and task_run.state.is_completed()


def test_a_permanent_failure_runs_once_and_names_the_problem(tmp_path, monkeypatch, capsys, tracking_server):
    proxy = DroppingProxy(tracking_server)
    attempts = []

    def build(cfg, inputs, out, sink):
        attempts.append(1)
        raise DataError("source 'web' has no readable file under /data/web: check data.sources.0.path")

    _toy_data_phase(monkeypatch, build)
    try:
        code, out = _run(tmp_path, monkeypatch, capsys, proxy, f"{EXPERIMENT}-permanent")
    finally:
        proxy.close()
    assert code == 2 and attempts == [1] and proxy.dropped == 0
    assert out.err.strip().splitlines()[-1] == (
        "lifecycle: error: phase data failed: DataError: source 'web' has no readable file under /data/web: check data.sources.0.path"
    )
    parent, runs = _phase_runs(tracking_server, f"{EXPERIMENT}-permanent")
    assert [r.info.status for r in runs] == ["FAILED"] and parent.info.status == "FAILED"
    task_run = _task_run(parent.data.tags["lifecycle.prefect_flow_run_id"])
    assert task_run.run_count == 1 and task_run.state.is_failed()


@pytest.mark.parametrize(
    "error, transient",
    [
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (DataError("bad data"), False),
        (ValueError("bad value"), False),
        (OSError(28, "No space left on device"), False),
    ],
    ids=["reset", "timeout", "data-error", "value-error", "disk-full"],
)
def test_the_retry_policy_by_error(error, transient):
    """The classes of the policy, one by one (the two flows above show it on real sockets)."""
    assert phase_tasks.is_transient(error) is transient


def test_the_retry_policy_sees_through_mlflow_and_sqlalchemy_wrappers(tmp_path, monkeypatch):
    """MLflow gives up on a lost connection with an MlflowException raised while handling requests'
    error, and on a locked SQLite store with one raised from SQLAlchemy's: both are retried; a read-only
    store is not (real errors of the real libraries)."""
    import sqlite3

    import sqlalchemy
    from mlflow.tracking import MlflowClient

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    lost = _raised(lambda: MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").search_experiments())
    assert type(lost).__name__ == "MlflowException" and phase_tasks.is_transient(lost)

    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    store = sqlalchemy.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})  # MLflow's SQL store's library
    with store.connect() as conn:
        locked = _raised(lambda: conn.execute(sqlalchemy.text("insert into t values (1)")))
    holder.close()
    assert type(locked).__name__ == "OperationalError" and type(locked).__module__ == "sqlalchemy.exc"
    assert "locked" in str(locked.__cause__) and phase_tasks.is_transient(locked)
    db.chmod(0o444)
    readonly = _raised(lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("insert into t values (1)"))
    assert "readonly" in str(readonly) and not phase_tasks.is_transient(readonly)


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as e:  # noqa: BLE001 (the error is the result)
        return e
    raise AssertionError("no error raised")
