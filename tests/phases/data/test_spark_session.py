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
