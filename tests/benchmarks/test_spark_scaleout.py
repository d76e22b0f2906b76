"""Scale-out: the same dedup job on a Spark standalone cluster (a master and two workers on
loopback, started from the pyspark installation) gives the same clusters as local mode.

Opt-in (`make benchmark` or `pytest -m benchmark tests/benchmarks/test_spark_scaleout.py -s`):
it starts three JVMs. Results: tests/benchmarks/results/spark-scaleout-2026-11-22.md.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.benchmark
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "spark" / "local-cluster.sh"
LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = {**os.environ, "LIFECYCLE_HOME": str(tmp_path_factory.mktemp("cluster_home")), "PYTHON": sys.executable}
    master = subprocess.run([str(SCRIPT), "start", "2"], env=env, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    yield master
    subprocess.run([str(SCRIPT), "stop"], env=env, timeout=60)


def corpus(path: Path) -> Path:
    """Real text with real near-duplicates: this machine's licence files, and the stdlib's modules."""
    from phases.config import SourceConfig
    from phases.data.sources import builtin_files

    rows = []
    for kind in ("package_licenses", "python_stdlib"):
        for f in builtin_files(SourceConfig(name="x", kind=kind, max_docs=800)):
            text = f.read_bytes().decode("utf-8", "replace")
            rows.append({"id": f"{kind}/{f}", "text": text})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def dedup(master: str, inp: Path, out: Path) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    subprocess.run(
        [LIFECYCLE, "dedup", "--input", str(inp), "--output", str(out), "--spark-master", master],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return time.perf_counter() - started, pq.read_table(out / "clusters.parquet").sort_by("id").to_pylist()


def test_cluster_gives_the_same_clusters_as_local(cluster, tmp_path):
    inp = corpus(tmp_path / "docs.parquet")
    local_s, local = dedup("local[2]", inp, tmp_path / "local")
    cluster_s, remote = dedup(cluster, inp, tmp_path / "cluster")
    assert remote == local
    removed = sum(not r["kept"] for r in local)
    print(
        json.dumps({"documents": len(local), "removed": removed, "local_s": round(local_s, 1), "cluster_s": round(cluster_s, 1), "master": cluster})
    )
