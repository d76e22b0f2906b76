"""Checkpoint, kill, resume: through the real DeepSpeed launcher on one CPU rank (~90 s in all).

The model here has attention dropout, so every step draws from torch's RNG: the resumed
losses only match the uninterrupted ones if weights, Adam moments, lr schedule, data
position *and* RNG state all came back exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from phases.config import PretrainConfig
from phases.errors import DataError, LaunchError
from phases.metrics import ListSink
from phases.pretrain.build import build
from phases.pretrain.checkpoint import LATEST
from phases.refs import PhaseRef

pytestmark = pytest.mark.e2e

# Long enough (~10 s of steps) that the kill lands mid-way; checkpoints every 10 steps.
CFG = PretrainConfig(
    max_steps=400,
    micro_batch_size=4,
    grad_accum=2,
    lr=3e-3,
    warmup_steps=5,
    eval_every=200,
    eval_batches=2,
    checkpoint_every=10,
    timeout_s=300,
    seed=0,
)
KILL_AFTER_CHECKPOINT_STEP = 20


@pytest.fixture(scope="module")
def dropout_model(model_phase_dir, tmp_path_factory) -> PhaseRef:
    root = tmp_path_factory.mktemp("dropout_model") / "model"
    shutil.copytree(model_phase_dir, root)
    arch = json.loads((root / "model_config.json").read_text())
    (root / "model_config.json").write_text(json.dumps({**arch, "attention_dropout": 0.1}))
    return PhaseRef(phase="model", key="toy-dropout", uri=str(root), fingerprint="data-v1")


def _build(cfg, ref, home: Path, out: Path, mp) -> tuple[dict, ListSink]:
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("LIFECYCLE_HOME", str(home))
    sink = ListSink()
    return build(cfg, {"model": ref}, out, sink), sink


def _steps(sink: ListSink) -> dict[int, float]:
    return {s: v for k, v, s in sink.metrics if k == "train/loss"}


def _kill_when_checkpointed(ckpt_root: Path, out: Path, min_step: int, errors: list) -> None:
    """SIGKILL the launcher's process group once a checkpoint at >= min_step is complete."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        latest = next(ckpt_root.glob(f"*/{LATEST}"), None) if ckpt_root.is_dir() else None
        if latest is not None and json.loads(latest.read_text())["step"] >= min_step:
            log = (out / "train.log").read_text()
            pid = int(log.split("process ", 1)[1].split(" spawned", 1)[0])  # the rank (launcher child)
            os.killpg(os.getpgid(pid), signal.SIGKILL)  # rank, launcher and runner share one group
            return
        time.sleep(0.005)
    errors.append("no checkpoint appeared")


@pytest.fixture(scope="module")
def runs(dropout_model, tmp_path_factory):
    """An uninterrupted run, and a run killed after a checkpoint then restarted."""
    base = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        full_summary, full = _build(CFG, dropout_model, base / "home-full", base / "out-full", mp)
        home = base / "home-killed"
        errors: list = []
        watcher = threading.Thread(
            target=_kill_when_checkpointed, args=(home / "checkpoints" / "pretrain", base / "out-killed", KILL_AFTER_CHECKPOINT_STEP, errors)
        )
        watcher.start()
        with pytest.raises(LaunchError) as killed:
            _build(CFG, dropout_model, home, base / "out-killed", mp)
        watcher.join()
        assert not errors, errors
        # A rerun gets a fresh staging dir, as storage.materialize would give it.
        resumed_summary, resumed = _build(CFG, dropout_model, home, base / "out-resumed", mp)
    return {"full": (full_summary, full), "killed": killed.value, "resumed": (resumed_summary, resumed), "home": home, "base": base}


def test_killed_run_resumes_with_bitwise_identical_losses(runs):
    full_summary, full = runs["full"]
    resumed_summary, resumed = runs["resumed"]
    assert runs["killed"].returncode != 0
    start = int(resumed_summary["resumed_from"].split("step")[1])
    assert KILL_AFTER_CHECKPOINT_STEP <= start < CFG.max_steps, resumed_summary["resumed_from"]
    after = _steps(resumed)
    assert sorted(after) == list(range(start + 1, CFG.max_steps + 1))  # nothing redone, nothing skipped
    mismatched = [(s, after[s], _steps(full)[s]) for s in after if after[s] != _steps(full)[s]]
    assert not mismatched, f"{len(mismatched)} steps differ, first: {mismatched[:3]}"
    for key in ("first_loss", "final_loss", "val_loss", "steps", "tokens_seen"):
        assert resumed_summary[key] == full_summary[key], key


def test_resumed_model_and_card_match_the_uninterrupted_run(runs):
    from safetensors.numpy import load_file

    base = runs["base"]
    a, b = load_file(base / "out-full" / "model.safetensors"), load_file(base / "out-resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    card = (base / "out-resumed" / "README.md").read_text()
    assert "data-v1" in card and f"| steps | {CFG.max_steps} |" in card
    assert f"| final_loss | {runs['resumed'][0]['final_loss']:.6g} |" in card


def test_changed_data_refuses_to_resume(runs, dropout_model, tmp_path):
    new_data = PhaseRef(**{**dropout_model.to_dict(), "fingerprint": "data-v2"})
    with pytest.MonkeyPatch.context() as mp, pytest.raises(DataError) as err:
        _build(CFG.model_copy(update={"on_new_data": "fail"}), new_data, runs["home"], tmp_path / "out", mp)
    message = str(err.value)
    assert "data-v1" in message and "data-v2" in message
    assert "pretrain.on_new_data=warm_start" in message and "pretrain.on_new_data=retrain" in message
    assert not (tmp_path / "out" / "train.log").exists()  # refused before launching anything


def test_warm_start_on_new_data_continues_from_the_weights(runs, dropout_model, tmp_path):
    """New rows (the old ones permuted), the same tokenizer: weights and Adam state carry
    over, while step, lr warmup and data position start again."""
    root = tmp_path / "model-v2"
    shutil.copytree(dropout_model.path, root)
    meta = json.loads((root / "packed.json").read_text())
    rows = np.fromfile(root / "train.bin", dtype=meta["dtype"]).reshape(-1, meta["seq_len"])
    rows[::-1].copy().tofile(root / "train.bin")
    new_data = PhaseRef(phase="model", key="v2", uri=str(root), fingerprint="data-v2")
    cfg = CFG.model_copy(update={"on_new_data": "warm_start"})
    with pytest.MonkeyPatch.context() as mp:
        summary, sink = _build(cfg, new_data, runs["home"], tmp_path / "out", mp)
    full_summary, full = runs["full"]
    assert summary["resumed_from"].startswith("warm:g0-step") and summary["generation"] == 1
    assert sorted(_steps(sink)) == list(range(1, CFG.max_steps + 1))
    assert sink.series("train/lr")[0] == pytest.approx(CFG.lr / CFG.warmup_steps)  # the schedule restarted
    # Trained weights, not a fresh init: the first loss is near where the old run ended.
    assert summary["first_loss"] < full_summary["final_loss"] + 0.5 < full_summary["first_loss"] - 1.0
    latest = json.loads(next((runs["home"] / "checkpoints" / "pretrain").glob(f"*/{LATEST}")).read_text())
    assert latest["data_fingerprint"] == "data-v2" and latest["generation"] == 1 and latest["step"] == CFG.max_steps
