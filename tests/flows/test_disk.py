"""A full disk or an unwritable home: one line naming the path and the fix, nothing marked complete.

The faults are real: the kernel refuses the writes. A file size limit (RLIMIT_FSIZE; Python ignores
SIGXFSZ, so the write raises EFBIG) stands in for a full disk wherever the test runs; a 1 MiB tmpfs
gives the real ENOSPC, and a read-only mount the real EROFS, where this machine lets the test mount
(root with CAP_SYS_ADMIN; skipped elsewhere).
"""

import contextlib
import dataclasses
import json
import os
import resource
import subprocess

import pytest

from flows.cli import main
from phases import registry
from phases.errors import WriteError
from phases.storage import MANIFEST, materialize
from tasks import phases as phase_tasks  # Prefect too: its console log handler binds the stream of the moment

LIMIT = 1 << 20  # bytes a file may reach while the toy phase writes


def _config(tmp_path):
    src = tmp_path / "web.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"document {i}"}) + "\n" for i in range(3)))
    path = tmp_path / "disk.yaml"
    path.write_text(f"base: tiny\nname: disk\nexperiment: disk\ndata:\n  sources:\n    - {{name: web, kind: jsonl, path: {json.dumps(str(src))}}}\n")
    return path


def _lifecycle(tmp_path, monkeypatch, capsys, *args):
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # Prefect read its settings when this module imported it, before flows.env.configure() set them.
    with temporary_settings({PREFECT_HOME: tmp_path / "prefect", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}):
        code = main(["run", "--config", str(_config(tmp_path)), *args])
    return code, capsys.readouterr()


def _write_past_the_limit(out) -> None:
    """Write 2 MiB under a 1 MiB file size limit (the soft limit only, so it can be raised back)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))
    try:
        with (out / "shard-0.bin").open("wb") as f:
            for _ in range(2 * LIMIT // 65536):
                f.write(b"\0" * 65536)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_while_a_phase_builds_fails_once_naming_the_path(tmp_path, monkeypatch, capsys):
    """The data phase (a toy build, registered for the test) writes past the file size limit inside the
    real flow: the run fails once with one line, no manifest or staging directory is left, no MLflow
    run stays RUNNING, and Prefect ran the task once (a full disk is not retried)."""
    from mlflow.tracking import MlflowClient

    attempts = []

    def build(cfg, inputs, out, sink):
        attempts.append(1)
        (out / "small.txt").write_text("fits\n")
        _write_past_the_limit(out)
        return {"train_docs": 3}

    monkeypatch.setitem(registry.BY_NAME, "data", dataclasses.replace(registry.BY_NAME["data"], build=build))
    monkeypatch.setitem(phase_tasks.TASKS, "data", phase_tasks.TASKS["data"].with_options(retry_delay_seconds=0))
    code, out = _lifecycle(tmp_path, monkeypatch, capsys, "--phases", "data")

    home = tmp_path / "home"
    line = out.err.strip().splitlines()[-1]
    assert code == 2 and attempts == [1], out.err[-3000:]
    assert line.startswith(f"lifecycle: error: phase data failed: WriteError: cannot write phase data's output {home}/outputs/data/")
    assert line.endswith(
        ": file too large (a file size limit, ulimit -f, or the file system's maximum) (EFBIG); raise the limit or set LIFECYCLE_HOME to another file system"
    )
    assert not list(home.glob(f"outputs/**/{MANIFEST}")), "nothing may be marked complete"
    assert [p.name for p in (home / "outputs" / "data").iterdir()] == [], "no staging directory may stay behind"

    mlf = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = mlf.search_runs([mlf.get_experiment_by_name("disk").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FAILED"}  # the pipeline's run and the phase's
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run = runs[0].data.tags["lifecycle.prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run])))
    assert task_run.run_count == 1 and task_run.state.is_failed()


@contextlib.contextmanager
def _mounted(path, options: str):
    """A tmpfs at ``path`` with mount ``options``; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_device_that_is_full_fails_the_build_naming_the_path(tmp_path):
    """ENOSPC for real: the outputs live on a 1 MiB tmpfs and the build writes 2 MiB."""
    with _mounted(tmp_path / "home" / "outputs", "size=1m"):

        def build(out):
            with (out / "big.bin").open("wb") as f:
                f.write(b"\0" * (2 << 20))
            return {}

        with pytest.raises(WriteError) as failed:
            materialize(home=tmp_path / "home", phase="toy", key="k", build=build)
        assert list((tmp_path / "home" / "outputs" / "toy").iterdir()) == []  # staging removed, nothing published
    message = str(failed.value)
    assert message == (
        f"cannot write phase toy's output {tmp_path}/home/outputs/toy/k: no space left on the device (ENOSPC); "
        "free space there or set LIFECYCLE_HOME to a file system with room"
    )


@contextlib.contextmanager
def _unwritable(home):
    """``home`` made unwritable the strongest way this machine allows: a read-only mount (EROFS),
    else the immutable attribute (root: EPERM), else its mode (another user: EACCES)."""
    home.mkdir(parents=True)
    if os.geteuid() != 0:
        home.chmod(0o555)
        try:
            yield "permission denied (EACCES)"
        finally:
            home.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(home)], capture_output=True).returncode == 0:
        try:
            yield "read-only file system (EROFS)"
        finally:
            subprocess.run(["umount", "-l", str(home)], check=False)
        return
    if subprocess.run(["chattr", "+i", str(home)], capture_output=True).returncode == 0:
        try:
            yield "operation not permitted (an immutable or protected path?) (EPERM)"
        finally:
            subprocess.run(["chattr", "-i", str(home)], check=False)
        return
    pytest.skip("root without mount or chattr +i: no way to make a directory unwritable here")


@pytest.mark.parametrize("mode", [["--dry-run"], ["--phases", "data"]], ids=["dry-run", "run"])
def test_an_unwritable_home_fails_before_anything_starts(tmp_path, monkeypatch, capsys, mode):
    with _unwritable(tmp_path / "home") as reason:
        code, out = _lifecycle(tmp_path, monkeypatch, capsys, *mode)
        assert code == 2 and out.err.count("\n") == 1, out.err[-3000:]
        home = tmp_path / "home"
        assert out.err.startswith(f"lifecycle: error: cannot write LIFECYCLE_HOME {home}: {reason} at {home}; ")
        assert out.err.endswith(" or set LIFECYCLE_HOME to a writable directory\n")
        assert list((tmp_path / "home").iterdir()) == []  # no Prefect home, no MLflow store: nothing started


@pytest.mark.parametrize("where", ["outputs", "checkpoints"])
def test_a_file_where_a_state_directory_must_be_fails_before_anything_starts(tmp_path, monkeypatch, capsys, where):
    home = tmp_path / "home"
    home.mkdir()
    (home / where).write_text("not a directory\n")
    code, out = _lifecycle(tmp_path, monkeypatch, capsys, "--dry-run")
    assert code == 2 and out.err == (
        f"lifecycle: error: cannot write LIFECYCLE_HOME {home}: a file stands where a directory must be (ENOTDIR) at {home / where}; "
        "move that file away or set LIFECYCLE_HOME to another directory\n"
    )
    assert [p.name for p in home.iterdir()] == [where]  # no Prefect home, no MLflow store: nothing started
