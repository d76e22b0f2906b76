"""kill -9 of `lifecycle run` itself (the orchestrator, its Prefect server, its Spark JVM and the
DeepSpeed job with it), during the data phase and then during pretraining: nothing is published, the
rerun of the flow builds the data a clean run builds, resumes pretraining from the last checkpoint and
says so, its losses equal an uninterrupted run's, and no MLflow run is left RUNNING."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phases.pretrain.checkpoint import LATEST
from tests.phases.data.test_dedup_index import paragraph, write

pytestmark = pytest.mark.e2e

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))
STEPS, EVERY, KILL_AT = 240, 10, 20


def _config(tmp_path):
    src = tmp_path / "web.jsonl"
    write(src, [(f"a{i:03d}", paragraph(i)) for i in range(80)])
    path = tmp_path / "kill.yaml"
    path.write_text(
        "base: tiny\nname: kill-toy\nexperiment: kill-toy\n"
        f"data:\n  sources:\n    - {{name: web, kind: jsonl, path: {json.dumps(str(src))}, weight: 1, quality_filters: false}}\n"
        "  max_epochs: 1\n  shards: 1\n"
        "model: {vocab_size: 300, seq_len: 32, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, max_position_embeddings: 64}\n"
        f"pretrain: {{max_steps: {STEPS}, micro_batch_size: 4, warmup_steps: 2, eval_every: {STEPS}, eval_batches: 1, checkpoint_every: {EVERY}}}\n"
    )
    return path


def _env(home):
    from flows.env import defaults

    env = {k: v for k, v in os.environ.items() if k not in defaults(home) and k not in ("PREFECT_API_URL", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
    return {**env, "LIFECYCLE_HOME": str(home), "OMP_NUM_THREADS": "1"}


def _run(home, cfg, *args):
    return subprocess.run(
        [LIFECYCLE, "run", "--config", str(cfg), "--phases", "data,model,pretrain", *args], capture_output=True, text=True, env=_env(home)
    )


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["metrics"]["train/loss"] for r in rows if "train/loss" in r.get("metrics", {})}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start(home, cfg):
    return subprocess.Popen(
        [LIFECYCLE, "run", "--config", str(cfg), "--phases", "data,model,pretrain"],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _data_fingerprint(home) -> str:
    (manifest,) = (home / "outputs" / "data").glob("*/manifest.json")
    return json.loads(manifest.read_text())["fingerprint"]


def test_a_kill_9_of_the_flow_during_data_then_pretraining(tmp_path):
    """First killed while Spark deduplicates (the data phase's staging directory exists), then again
    during pretraining: each rerun goes on from where the last one stopped."""
    from mlflow.tracking import MlflowClient

    home, cfg = tmp_path / "home", _config(tmp_path)
    proc = _start(home, cfg)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list((home / "outputs" / "data").glob(".*.staging-*")):
        time.sleep(0.01)
    time.sleep(3)  # into the Spark work
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Spark JVM and its temporary Prefect server
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the data phase finished before the kill"
    assert not list((home / "outputs" / "data").glob("*/manifest.json")), "a killed data phase was published"

    proc = _start(home, cfg)
    deadline, rank = time.monotonic() + 600, None
    while time.monotonic() < deadline and proc.poll() is None:
        latest = next((home / "checkpoints" / "pretrain").glob(f"*/{LATEST}"), None) if (home / "checkpoints").is_dir() else None
        if latest is not None and json.loads(latest.read_text())["step"] >= KILL_AT:
            log = next((home / "outputs" / "pretrain").glob(".*.staging-*/train.log")).read_text()
            rank = int(log.split("process ", 1)[1].split(" spawned", 1)[0])
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its flow and its temporary Prefect server; not the job's own session
            break
        time.sleep(0.01)
    proc.wait(30)
    assert rank is not None, "pretraining finished or failed before a checkpoint at step 20"
    gone = time.monotonic() + 30
    while _alive(rank) and time.monotonic() < gone:
        time.sleep(0.1)
    assert not _alive(rank), "the DeepSpeed rank outlived the killed flow"
    assert not list((home / "outputs" / "pretrain").glob("*/manifest.json")), "a killed pretraining was published"

    resumed = _run(home, cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint" in resumed.stdout + resumed.stderr
    (out,) = [p for p in (home / "outputs" / "pretrain").iterdir() if (p / "manifest.json").exists()]
    start = int(json.loads((out / "summary.json").read_text())["resumed_from"].split("step")[1])
    assert KILL_AT <= start < STEPS

    # The same pretraining uninterrupted (resume=never starts afresh; data and model are reused).
    full = _run(home, cfg, "--phases", "pretrain", "--set", "pretrain.resume=never")
    assert full.returncode == 0, full.stderr[-3000:]
    (ref,) = [p for p in (home / "outputs" / "pretrain").iterdir() if p != out and (p / "manifest.json").exists()]
    after, whole = _losses(out), _losses(ref)
    assert sorted(after) == list(range(start + 1, STEPS + 1))
    assert {s: whole[s] for s in after} == after

    # The data the reruns published equals a clean run's, in a home that never saw a kill.
    clean = subprocess.run([LIFECYCLE, "run", "--config", str(cfg), "--phases", "data"], capture_output=True, text=True, env=_env(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert _data_fingerprint(home) == _data_fingerprint(tmp_path / "clean")

    mlf = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = mlf.search_runs([mlf.get_experiment_by_name("kill-toy").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert "KILLED" in {r.info.status for r in runs}  # the killed flow's runs, closed by the next start
