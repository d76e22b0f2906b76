"""The Spark session of the data phase and the dedup command: local[*] embedded, or a cluster by URL."""

from __future__ import annotations

import re

from phases.errors import SparkJobError, write_fix

# A local driver JVM compiles hot code with the client compiler only (C1): its optimizing compiler
# (C2) competes for the few cores with the job while a run is short, and a short run never profits
# from C2's code (measured: tests/benchmarks/results/dedup-speed-2026-11-27.md). A user's
# spark.driver.extraJavaOptions come later and win (-XX:TieredStopAtLevel=4 restores C2);
# LIFECYCLE_SPARK_QUICK_JIT=0 turns it off.
QUICK_JIT = "-XX:TieredStopAtLevel=1"
# Attempts per task for a local master. On a cluster Spark retries a failed task itself
# (spark.task.maxFailures, default 4), but local mode ignores that setting: local, local[N] and
# local[*] give every task one attempt, and only the local[N,F] form of the URL allows F. A task
# that fails once (a Python worker killed, a flaky read) failed the whole data phase.
LOCAL_TASK_ATTEMPTS = 4
_LOCAL = re.compile(r"local(?:\[(\*|[1-9]\d*)\])?")


def with_task_retries(master: str, attempts: int = LOCAL_TASK_ATTEMPTS) -> str:
    """``local``, ``local[N]`` and ``local[*]`` as ``local[N,attempts]``; ``local[N,F]`` (F chosen by the
    user: ``local[2,1]`` turns retries off) and cluster URLs as given."""
    m = _LOCAL.fullmatch(master.strip())
    return f"local[{m.group(1) or 1},{attempts}]" if m else master


def driver_jit_options(master: str) -> str:
    """The JIT options a new driver JVM for ``master`` gets: :data:`QUICK_JIT` for local masters."""
    import os

    return QUICK_JIT if master.startswith("local") and os.environ.get("LIFECYCLE_SPARK_QUICK_JIT", "1") != "0" else ""


def class_sharing_options() -> str:
    """Opt-in class data sharing for the driver JVM: ``LIFECYCLE_SPARK_CDS=/path/spark.jsa``. The JVM
    parses Spark's ~10k classes at every start; with an archive it maps them instead (a session
    starts ~4 s sooner on 2 cores: tests/benchmarks/results/dedup-speed-2026-12-01.md). The first
    start records the archive as its JVM exits, later starts map it. The archive belongs to one
    Spark and JDK install (the JVM ignores one that does not match); record it from one process at
    a time, and not with a conf directory on the class path (the JVM cannot archive then)."""
    import os

    path = os.environ.get("LIFECYCLE_SPARK_CDS", "")
    if not path.endswith(".jsa"):  # unset, or the on/off switch of earlier releases (0/1): no sharing
        return ""
    flag = "SharedArchiveFile" if os.path.exists(path) else "ArchiveClassesAtExit"
    return f"-XX:{flag}={path} -Xlog:cds*=off"  # cds logging off: a warning per class it cannot archive


def spark_session(master: str, driver_memory: str = "2g"):
    import os
    import sys

    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    # Executors must run this interpreter (the venv's), not whatever python is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    fresh_jvm = SparkSession.getActiveSession() is None and SparkContext._gateway is None
    java_options = f"{class_sharing_options()} {driver_jit_options(master)}".strip() if fresh_jvm else ""
    if java_options:
        # "default" options: a user's spark.driver.extraJavaOptions still apply after them.
        builder = builder.config("spark.driver.defaultJavaOptions", java_options)
    spark = (
        builder.master(with_task_retries(master))
        .appName("llm-lifecycle-data")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "8" if master.startswith("local") else "200")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def job_error(err: BaseException) -> SparkJobError | None:
    """A failed Spark job (a PySpark or Py4J exception) as one line with Spark's reason; None for others.

    PySpark's exceptions carry the Python worker's traceback or the JVM's stack in their text; the
    line keeps what a user acts on: the exception the task raised (and where), or the JVM's message
    and its root cause.
    """
    if not type(err).__module__.startswith(("pyspark.errors.exceptions.captured", "py4j")):
        return None  # pyspark's own argument checks (PySparkValueError, ...) are no job failure
    text = str(err).split("\nJVM stacktrace:", 1)[0]  # appended when spark.sql.pyspark.jvmStacktrace.enabled
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    retried = "Spark job failed after Spark's task retries"
    if type(err).__name__ in ("Py4JNetworkError", "Py4JError") or not lines:
        said = f"Spark's JVM stopped answering ({lines[0] if lines else type(err).__name__}): out of memory (data.spark_driver_memory) or killed?"
    elif any("Traceback (most recent call last)" in line for line in lines):
        said = f"{retried}: {_python_failure(lines)}"
    elif lines[0].startswith("An error occurred while calling") and len(lines) > 1:
        causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
        said = f"{retried}: {lines[1].lstrip(': ')}" + (f"; caused by {causes[-1]}" if causes else "")
    else:  # refused before any task ran (a missing path, an unknown column)
        said = f"Spark refused the job: {type(err).__name__}: {lines[0]}"
    fix = write_fix(said)  # a task's write refused by the disk (the JVM's IOException)
    return SparkJobError(" ".join(said.split())[:800] + (f"; {fix}" if fix else ""))


def _python_failure(lines: list[str]) -> str:
    """The exception a Python worker raised, and the frame that raised it."""
    start = max(i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line)
    frames = [m for m in (re.match(r'\s*File "(.+)", line (\d+), in (.+)', line) for line in lines[start:]) if m]
    raised = [line for line in lines[start + 1 :] if not line.startswith((" ", "\t")) and not line.lstrip().startswith("SQLSTATE")]
    where = f" (in {frames[-1].group(3)}, {frames[-1].group(1)}:{frames[-1].group(2)})" if frames else ""
    return f"{raised[-1] if raised else lines[-1]}{where}"
