"""A compute budget reaches training: the model phase plans N and D, pretraining trains for D tokens."""

from __future__ import annotations

import math

import pytest

from phases.config import ModelConfig, PretrainConfig
from phases.metrics import ListSink
from phases.model import artifact
from phases.model.build import build as build_model
from phases.pretrain.build import build as pretrain
from phases.refs import PhaseRef
from tests.phases.toy_artifacts import make_data_dir

pytestmark = pytest.mark.e2e

BUDGET = 8e9  # FLOPs: the smallest shape (~130k parameters) for ~10k tokens
CFG = PretrainConfig(
    max_steps=500, micro_batch_size=8, grad_accum=1, warmup_steps=10, eval_every=1000, eval_batches=2, checkpoint_every=1000, timeout_s=300
)


def test_a_budgeted_run_trains_for_the_planned_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    data = make_data_dir(tmp_path / "data")
    model_cfg = ModelConfig(vocab_size=400, seq_len=32, max_position_embeddings=64, budget_flops=BUDGET)
    build_model(model_cfg, {"data": PhaseRef("data", "k", str(data), "fp")}, tmp_path / "model", ListSink())
    plan = artifact.read_plan(tmp_path / "model")
    assert plan["budget_flops"] == BUDGET and plan["tokens"] == int(BUDGET / (6 * plan["parameters"]))

    sink = ListSink()
    summary = pretrain(CFG, {"model": PhaseRef("model", "k", str(tmp_path / "model"), "fp-model")}, tmp_path / "out", sink)
    per_step = CFG.micro_batch_size * model_cfg.seq_len
    assert summary["steps"] == math.ceil(plan["tokens"] / per_step) != CFG.max_steps
    assert plan["tokens"] <= summary["tokens_seen"] < plan["tokens"] + per_step
    assert len(sink.series("train/loss")) == summary["steps"]
