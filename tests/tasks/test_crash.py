"""Runs left RUNNING by a killed process are closed by the next start, and only those."""

import os
import subprocess
import sys

from tasks import crash


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_close_orphans_closes_only_runs_of_dead_processes_on_this_host(tmp_path):
    from mlflow.tracking import MlflowClient

    mlf = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlf.create_experiment("crash-test", artifact_location=str(tmp_path / "artifacts"))
    mine = crash.owner_tags()
    dead = {**mine, crash.TAG_PID: str(_dead_pid()), crash.TAG_STARTED: "1"}
    recycled = {**mine, crash.TAG_STARTED: "0"}  # this pid, but another process's start time: the owner died
    elsewhere = {**dead, crash.TAG_HOST: "another-host"}
    runs = {
        name: mlf.create_run(exp, run_name=name, tags=tags).info.run_id
        for name, tags in (("dead", dead), ("alive", mine), ("recycled", recycled), ("elsewhere", elsewhere))
    }
    child = mlf.create_run(exp, run_name="pretrain", tags={**dead, "mlflow.parentRunId": runs["dead"]}).info.run_id
    finished_child = mlf.create_run(exp, run_name="data", tags={**dead, "mlflow.parentRunId": runs["dead"]}).info.run_id
    mlf.set_terminated(finished_child, "FINISHED")

    closed = crash.close_orphans(mlf, exp)

    assert set(closed) == {runs["dead"], child, runs["recycled"]}
    status = lambda r: mlf.get_run(r).info.status  # noqa: E731
    assert status(runs["dead"]) == status(child) == status(runs["recycled"]) == "KILLED"
    assert status(runs["alive"]) == status(runs["elsewhere"]) == "RUNNING" and status(finished_child) == "FINISHED"
    assert "died without closing it" in mlf.get_run(child).data.tags["lifecycle.error"]
    assert crash.close_orphans(mlf, exp) == []  # idempotent


def test_owner_tags_describe_this_process():
    tags = crash.owner_tags()
    assert tags[crash.TAG_PID] == str(os.getpid()) and crash.is_alive(os.getpid(), tags[crash.TAG_STARTED])
    assert not crash.is_alive(_dead_pid(), "")
