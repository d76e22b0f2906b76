"""The options a new local Spark driver JVM starts with (each case starts its own JVM in a new process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phases.data.spark import QUICK_JIT

ROOT = Path(__file__).resolve().parents[3]
PROBE = (
    "import json; from phases.data.spark import spark_session; s = spark_session('local[1]'); "
    "print('ARGS' + json.dumps(list(s.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()))); s.stop()"
)


def _driver_args(**env) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line[4:] for line in proc.stdout.splitlines() if line.startswith("ARGS")))


@pytest.mark.parametrize("setting, expected", [(None, True), ("0", False)])
def test_a_local_driver_compiles_with_the_client_compiler_only_unless_turned_off(setting, expected):
    env = {} if setting is None else {"LIFECYCLE_SPARK_QUICK_JIT": setting}
    assert (QUICK_JIT in _driver_args(**env)) is expected


def test_class_sharing_is_opt_in_and_records_then_maps_the_archive(tmp_path):
    archive = tmp_path / "spark.jsa"
    assert not any("SharedArchiveFile" in a or "ArchiveClassesAtExit" in a for a in _driver_args())
    assert f"-XX:ArchiveClassesAtExit={archive}" in _driver_args(LIFECYCLE_SPARK_CDS=str(archive))
    assert archive.stat().st_size > 0  # written as the first JVM exited
    assert f"-XX:SharedArchiveFile={archive}" in _driver_args(LIFECYCLE_SPARK_CDS=str(archive))


def _attempts(folder: Path, job: str) -> set[tuple[int, int]]:
    return {tuple(int(x) for x in f.name.split("-")[1:]) for f in folder.glob(f"{job}-*")}


@pytest.fixture(scope="module")
def embedded():
    """The data phase's session for the tiny preset's master, in this process."""
    from phases.data.spark import spark_session

    spark = spark_session("local[*]")
    yield spark
    spark.stop()


def test_the_embedded_session_retries_a_failed_task_and_a_lasting_failure_fails_once_in_one_line(tmp_path, embedded):
    """local[*] gives every task one attempt; the session makes it local[*,4]. A Python worker killed
    (kill -9) on its first attempt is retried and the job completes; a task that always raises fails
    the job after Spark's attempts, and the phase's build fails once with Spark's reason on one line."""
    import signal

    from pyspark import TaskContext

    from phases.data.spark import LOCAL_TASK_ATTEMPTS
    from phases.errors import SparkJobError
    from phases.storage import materialize

    seen = tmp_path / "attempts"
    seen.mkdir()

    def killed_once(rows):
        ctx = TaskContext.get()
        (seen / f"flaky-{ctx.partitionId()}-{ctx.attemptNumber()}").touch()
        if ctx.attemptNumber() == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # the Python worker dies, as under the OOM killer
        return rows

    def bad_record(rows):
        ctx = TaskContext.get()
        (seen / f"always-{ctx.partitionId()}-{ctx.attemptNumber()}").touch()
        raise ValueError(f"bad record in partition {ctx.partitionId()}")

    assert embedded.sparkContext.master == f"local[*,{LOCAL_TASK_ATTEMPTS}]"
    # Plain Python tasks (the RDD API): a DataFrame's mapInPandas fails and retries alike, with pandas to import first.
    assert embedded.sparkContext.parallelize(range(6), 2).mapPartitions(killed_once).count() == 6
    assert _attempts(seen, "flaky") == {(p, a) for p in (0, 1) for a in (0, 1)}  # each task: killed, then done

    home = tmp_path / "home"
    job = embedded.sparkContext.parallelize(range(4), 1).mapPartitions(bad_record)
    with pytest.raises(SparkJobError) as failed:
        materialize(home=home, phase="data", key="k", build=lambda out: {"rows": job.count()})
    message = str(failed.value)
    assert "\n" not in message and message.startswith("Spark job failed after Spark's task retries: ValueError: bad record in partition 0")
    assert "in bad_record" in message and "test_spark_session.py:" in message  # the frame that raised it
    assert _attempts(seen, "always") == {(0, a) for a in range(LOCAL_TASK_ATTEMPTS)}
    assert list((home / "outputs" / "data").iterdir()) == []  # no output, no staging directory left


def test_a_spark_write_to_a_full_device_fails_in_one_line_naming_the_path(tmp_path, embedded):
    """ENOSPC inside the JVM (a Parquet write of the data phase's kind to a 256 KiB tmpfs): Spark's
    write error, its path and its cause on one line, with the fix. Skipped where mounting is not allowed."""
    import subprocess

    from phases.errors import SparkJobError
    from phases.storage import materialize

    outputs = tmp_path / "home" / "outputs"
    outputs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(outputs)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root with CAP_SYS_ADMIN")
    try:
        rows = embedded.range(20_000, numPartitions=1).selectExpr("id", "sha2(cast(id as string), 256) as text")
        with pytest.raises(SparkJobError) as failed:
            materialize(home=tmp_path / "home", phase="data", key="k", build=lambda out: rows.write.parquet(str(out / "train")) or {})
        assert list((outputs / "data").iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(outputs)], check=False)
    message = str(failed.value)
    assert "\n" not in message and "[TASK_WRITE_FAILED] Task failed while writing rows to file:" in message
    assert f"{outputs}/data/.k.staging-" in message and message.endswith(
        "caused by java.io.IOException: No space left on device; "
        "free space there or, for a path under LIFECYCLE_HOME, set LIFECYCLE_HOME to a file system with room"
    )
