"""Batch generation: reproducible per seed, bounded by max_new_tokens, written as JSONL."""

import json

import pytest
import torch

import toy_artifacts
from phases.config import InferenceConfig
from phases.inference.build import build, generate_rows, load_model
from phases.metrics import ListSink

PROMPTS = ("def read_config(path):", "The license grants", "import os\n", "# Installation\n", "x")


@pytest.fixture(scope="module")
def loaded(toy_pretrain):
    return load_model(toy_pretrain)


def completions(loaded, **overrides):
    cfg = InferenceConfig(**{"prompts": PROMPTS, "max_new_tokens": 12, "batch_size": 2, "temperature": 1.0, "top_p": 1.0, **overrides})
    rows, _ = generate_rows(*loaded, cfg)
    return rows


def test_same_seed_same_text_other_seed_differs(loaded):
    a, b, c = completions(loaded, seed=3), completions(loaded, seed=3), completions(loaded, seed=4)
    assert a == b
    assert [r["completion"] for r in a] != [r["completion"] for r in c]


def test_caller_rng_state_is_untouched(loaded):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    completions(loaded, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_respects_max_new_tokens_and_batching(loaded):
    rows = completions(loaded, max_new_tokens=5, batch_size=3, top_k=10)
    assert [r["prompt"] for r in rows] == list(PROMPTS)
    assert all(1 <= r["new_tokens"] <= 5 for r in rows)
    # A random toy model almost never emits eos within 5 tokens: rows run to the limit.
    assert max(r["new_tokens"] for r in rows) == 5


def test_batch_size_does_not_change_greedy_like_output(loaded):
    # With a tiny top_k=1 sampling is greedy, so left padding must not change any row's text.
    one = completions(loaded, top_k=1, batch_size=1)
    many = completions(loaded, top_k=1, batch_size=5)
    assert [r["completion"] for r in one] == [r["completion"] for r in many]


def test_build_writes_generations_and_logs(tmp_path, toy_pretrain):
    sink = ListSink()
    cfg = InferenceConfig(prompts=PROMPTS[:3], max_new_tokens=6, batch_size=2, seed=1)
    summary = build(cfg, {"align": toy_artifacts.ref("align", toy_pretrain)}, tmp_path, sink)
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == list(PROMPTS[:3])
    assert set(rows[0]) == {"prompt", "completion", "new_tokens"}
    assert summary["num_prompts"] == 3 and summary["tokens_per_s"] > 0
    assert summary["mean_new_tokens"] == pytest.approx(sum(r["new_tokens"] for r in rows) / 3)
    assert sink.series("inference/tokens_per_s") == [summary["tokens_per_s"]]
    assert sink.series("inference/mean_new_tokens") == [summary["mean_new_tokens"]]
