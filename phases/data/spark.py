"""The Spark session of the data phase and the dedup command: local[*] embedded, or a cluster by URL."""

from __future__ import annotations

# A local driver JVM compiles hot code with the client compiler only (C1): its optimizing compiler
# (C2) competes for the few cores with the job while a run is short, and a short run never profits
# from C2's code (measured: tests/benchmarks/results/dedup-speed-2026-11-27.md). A user's
# spark.driver.extraJavaOptions come later and win (-XX:TieredStopAtLevel=4 restores C2);
# LIFECYCLE_SPARK_QUICK_JIT=0 turns it off.
QUICK_JIT = "-XX:TieredStopAtLevel=1"


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
        builder.master(master)
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
