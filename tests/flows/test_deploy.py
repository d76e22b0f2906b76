"""`lifecycle deploy` against a real Prefect server on loopback: typed deployments whose parameters the
API checks, the nightly schedule with its timezone, the one-at-a-time training queue; and a real
process worker that runs the pipeline (data phase, a few documents) from a deployment, whose MLflow
parent run carries the flow run's id and the deployment's name."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import deploy as D
from flows.cli import main

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
# Three documents a source: the data phase takes seconds once Spark is up.
TINY_DATA = {f"data.sources.{i}.max_docs": 3 for i in range(3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}
    for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "LIFECYCLE_HOME"):
        if k not in extra:
            env.pop(k, None)
    return env


def _wait_http(url: str, proc, log: Path, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the process exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer: {log.read_text()[-3000:]}")


def _stop(proc) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    log = tmp / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=_env(tmp / "prefect", PREFECT_UI_ENABLED="false"),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_http(f"{url}/health", proc, log)
        yield url, log
    finally:
        _stop(proc)


@pytest.fixture
def deployed(server, tmp_path, monkeypatch, capsys):
    url, _ = server
    monkeypatch.setenv("PREFECT_API_URL", url)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "client-prefect"))
    monkeypatch.delenv("LIFECYCLE_REPO", raising=False)
    assert main(["deploy", "--cron", "30 1 * * *", "--timezone", "Europe/Berlin"]) == 0
    out = capsys.readouterr().out
    assert "llm-lifecycle/nightly" in out and "'30 1 * * *' (Europe/Berlin)" in out
    return url


def test_deploy_applies_typed_scheduled_limited_deployments(deployed):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import PrefectHTTPStatusError

    with SyncPrefectClient(deployed) as client:
        pool = client.read_work_pool(D.POOL)
        assert pool.type == "process"
        queue = client.read_work_queue_by_name(D.TRAINING_QUEUE, work_pool_name=D.POOL)
        assert queue.concurrency_limit == 1
        nightly = client.read_deployment_by_name("llm-lifecycle/nightly")
        on_demand = client.read_deployment_by_name("llm-lifecycle/on-demand")
        evaluate = client.read_deployment_by_name("evaluate-model/rescore")

        [schedule] = nightly.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 1 * * *", "Europe/Berlin")
        assert not on_demand.schedules and not evaluate.schedules
        for d in (nightly, on_demand):
            assert d.work_pool_name == D.POOL and d.work_queue_name == D.TRAINING_QUEUE
            assert d.global_concurrency_limit.limit == 1 and d.concurrency_options.collision_strategy.value == "ENQUEUE"
            assert d.enforce_parameter_schema
            assert d.pull_steps == D.pull_steps(ROOT) and d.pull_steps[-1]["prefect.deployments.steps.set_working_directory"] == {
                "directory": str(ROOT)
            }
            assert d.parameters == {"config": "tiny", "overrides": {}, "phases": list(D.PHASE_NAMES), "force": False}
        assert evaluate.work_queue_name == "default" and evaluate.enforce_parameter_schema and evaluate.parameters == {"config": "tiny"}
        assert evaluate.parameter_openapi_schema["required"] == ["model"]

        schema = nightly.parameter_openapi_schema["properties"]
        assert set(schema) == {"config", "overrides", "phases", "force"}
        assert all(schema[p].get("description") for p in schema), "every parameter has a description in the form"
        assert schema["config"]["anyOf"][0]["enum"] == sorted(p.stem for p in (ROOT / "infra" / "configs").glob("*.yaml"))
        assert schema["phases"]["items"]["enum"] == list(D.PHASE_NAMES)
        assert schema["overrides"]["properties"]["pretrain.max_steps"]["minimum"] == 1

        bad = [
            ({"config": "nope"}, "config"),
            ({"overrides": {"pretrain.max_stepz": 20}}, "pretrain.max_stepz"),
            ({"overrides": {"pretrain.lr": -1}}, "pretrain.lr"),
            ({"overrides": {"data.sources.0.kind": "csv"}}, "data.sources.0.kind"),
            ({"phases": ["data", "trainz"]}, "phases[1]"),
            ({"force": "yes"}, "force"),
        ]
        for parameters, needle in bad:
            with pytest.raises(PrefectHTTPStatusError) as err:
                client.create_flow_run_from_deployment(on_demand.id, parameters=parameters)
            assert err.value.response.status_code == 409 and needle in err.value.response.text, parameters
        with pytest.raises(PrefectHTTPStatusError):
            client.create_flow_run_from_deployment(evaluate.id, parameters={})  # model is required

        good = client.create_flow_run_from_deployment(
            on_demand.id, parameters={"config": "gpu-124m", "phases": ["data"], "overrides": TINY_DATA, "force": True}
        )
        assert good.state.is_scheduled() and good.parameters["overrides"] == TINY_DATA and good.parameters["config"] == "gpu-124m"
        client.delete_flow_run(good.id)  # no worker is to run it

        ids = (nightly.id, on_demand.id, evaluate.id)
    assert main(["deploy", "--cron", "30 1 * * *", "--timezone", "Europe/Berlin"]) == 0  # again: the same deployments, updated
    with SyncPrefectClient(deployed) as client:
        assert (
            tuple(client.read_deployment_by_name(n).id for n in ("llm-lifecycle/nightly", "llm-lifecycle/on-demand", "evaluate-model/rescore")) == ids
        )


def test_deploy_refuses_bad_input_before_touching_the_server(monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: a call would fail differently
    for args, needle in [
        (["--timezone", "Mars/Olympus"], "Mars/Olympus"),
        (["--cron", "not a cron"], "not a cron"),
        (["--set", "pretrain.lr=-1"], "pretrain.lr=-1"),
        (["--config", "nope"], "presets: "),
    ]:
        assert main(["deploy", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
    monkeypatch.delenv("PREFECT_API_URL")
    assert main(["deploy"]) == 2 and "PREFECT_API_URL" in capsys.readouterr().err


def test_prefect_yaml_declares_what_deploy_applies():
    spec = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())
    declared = {(d["entrypoint"], d["name"]): d for d in spec["deployments"]}
    for s in D.specs():
        d = declared.pop((s.entrypoint, s.name))
        assert d["work_pool"]["name"] == D.POOL
        assert d["work_pool"].get("work_queue_name") == s.work_queue, s.name
        assert d.get("parameters", {}) == s.parameters, s.name
        assert d.get("enforce_parameter_schema") is True, s.name
        assert [(x["cron"], x["timezone"]) for x in d.get("schedules") or []] == ([(s.cron, s.timezone)] if s.cron else []), s.name
        assert (d.get("concurrency_limit") or {}).get("limit") == s.concurrency_limit, s.name
        assert d.get("description") == s.description, s.name
    assert not declared, f"deployments only infra/prefect.yaml declares: {list(declared)}"


def test_prefect_deploy_of_the_yaml_gives_the_same_deployments(deployed, tmp_path):
    """`prefect deploy --prefect-file infra/prefect.yaml --all` (the README's other way) over what
    `lifecycle deploy` applied: same schema, queue, limits, parameters and code location."""
    from prefect.client.orchestration import SyncPrefectClient

    names = ("llm-lifecycle/nightly", "llm-lifecycle/on-demand", "evaluate-model/rescore")
    with SyncPrefectClient(deployed) as client:
        before = {n: client.read_deployment_by_name(n) for n in names}
    r = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"],
        cwd=ROOT,
        env=_env(tmp_path / "cli-prefect", PREFECT_API_URL=deployed, LIFECYCLE_REPO=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with SyncPrefectClient(deployed) as client:
        after = {n: client.read_deployment_by_name(n) for n in names}
    for n in names:
        a, b = after[n], before[n]
        assert a.id == b.id, n  # updated in place, not a second deployment
        assert a.parameter_openapi_schema == b.parameter_openapi_schema, n
        assert (a.parameters, a.work_queue_name, a.enforce_parameter_schema, a.pull_steps) == (
            b.parameters,
            b.work_queue_name,
            b.enforce_parameter_schema,
            b.pull_steps,
        ), n
        assert (a.global_concurrency_limit and a.global_concurrency_limit.limit) == (
            b.global_concurrency_limit and b.global_concurrency_limit.limit
        ), n
    [schedule] = after["llm-lifecycle/nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (D.DEFAULT_CRON, D.DEFAULT_TIMEZONE)


def test_a_worker_runs_the_pipeline_from_its_deployment(deployed, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import SyncPrefectClient

    home = tmp_path / "home"
    log = tmp_path / "worker.log"
    with log.open("w") as fh:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", D.POOL, "--type", "process", "--limit", "1"],
            env=_env(tmp_path / "worker-prefect", PREFECT_API_URL=deployed, LIFECYCLE_HOME=str(home), PREFECT_WORKER_QUERY_SECONDS="2"),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with SyncPrefectClient(deployed) as client:
            dep = client.read_deployment_by_name("llm-lifecycle/on-demand")
            run = client.create_flow_run_from_deployment(dep.id, parameters={"phases": ["data"], "overrides": TINY_DATA})
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                run = client.read_flow_run(run.id)
                if run.state.is_final():
                    break
                time.sleep(3)
        assert run.state.is_completed(), f"{run.state}: {log.read_text()[-4000:]}"
    finally:
        _stop(worker)

    mlf = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    [parent] = mlf.search_runs([mlf.get_experiment_by_name("llm-lifecycle").experiment_id], filter_string="tags.`lifecycle.phases` = 'data'")
    tags = parent.data.tags
    assert tags["lifecycle.prefect_flow_run_id"] == str(run.id)
    assert tags["lifecycle.prefect_flow_run_url"].endswith(f"/runs/flow-run/{run.id}")
    assert tags["lifecycle.prefect_deployment"] == "on-demand"
    assert tags["lifecycle.lock_digest"] == hashlib.sha256((ROOT / "constraints.txt").read_bytes()).hexdigest()
    assert parent.info.status == "FINISHED"
    [data] = mlf.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert data.data.tags["lifecycle.phase"] == "data" and data.data.params["sources.0.max_docs"] == "3"

    # lifecycle lineage reads what the real data phase logged: its sources, licences and counts.
    monkeypatch.setenv("LIFECYCLE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    assert main(["lineage", parent.info.run_id, "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["pipeline"]["flow_run"]["id"] == str(run.id) and trace["pipeline"]["flow_run"]["deployment"] == "on-demand"
    [phase] = trace["phases"]
    from phases.config import load_config

    expected = [(s.name, s.license) for s in load_config("tiny").data.sources]
    assert [(s["source"], s["license"]) for s in phase["data"]["sources"]] == expected
    assert all(0 < s["read"] <= 3 for s in phase["data"]["sources"])
    assert phase["data"]["train_docs"] + phase["data"]["validation_docs"] == sum(s["train"] + s["validation"] for s in phase["data"]["sources"])
