"""build() end to end through the real DeepSpeed launcher on CPU ranks (slow: ~15 s a run)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from phases.config import PretrainConfig
from phases.metrics import ListSink
from phases.pretrain.build import SUMMARY_KEYS, build

pytestmark = pytest.mark.e2e

STEPS = 30
# Global batch 8 in both runs: 1 rank x micro 4 x accumulation 2, and 2 ranks x micro 4 x 1.
ONE_RANK = PretrainConfig(
    max_steps=STEPS, micro_batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=3, eval_every=10, eval_batches=4, timeout_s=300, seed=0
)
TWO_RANKS_ZERO2 = ONE_RANK.model_copy(update={"num_gpus": 2, "grad_accum": 1, "zero_stage": 2})


def _run(cfg: PretrainConfig, model_ref, out: Path, monkeypatch) -> tuple[dict, ListSink]:
    # One thread per rank: the test machine's cores are shared with other work.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Checkpoints of each run in a home of its own: same config + architecture would resume.
    monkeypatch.setenv("LIFECYCLE_HOME", str(Path(out).parent / f"{Path(out).name}-home"))
    sink = ListSink()
    return build(cfg, {"model": model_ref}, out, sink), sink


@pytest.fixture(scope="module")
def one_rank_run(model_ref, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_1rank")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("lifecycle.pretrain")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as mp:
        try:
            summary, sink = _run(ONE_RANK, model_ref, out, mp)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    return out, summary, sink, [r.getMessage() for r in records]


def test_one_rank_trains_and_reports(one_rank_run):
    out, summary, sink, log_lines = one_rank_run
    losses = sink.series("train/loss")
    assert len(losses) == STEPS
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, f"loss did not fall: {losses}"
    for name in ("train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert len(sink.series(name)) == STEPS, name
    assert [s for k, _, s in sink.metrics if k == "val/loss"] == [10, 20, 30]
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["steps"] == STEPS and summary["world_size"] == 1
    assert summary["tokens_seen"] == STEPS * 8 * 32
    assert summary["first_loss"] == losses[0] and summary["final_loss"] == losses[-1]
    assert summary["val_perplexity"] == pytest.approx(2.718281828 ** summary["val_loss"], rel=1e-6)
    assert summary["tokens_per_s"] > 0
    # What the rank ran on (phases/pretrain/runtime.py): the CPU path, and no MFU without a peak.
    assert (summary["device"], summary["dist_backend"], summary["param_dtype"]) == ("cpu", "gloo", "float32")
    assert summary["attn_implementation"] == "sdpa" and summary["mfu"] is None
    # Progress reached the logger line by line (what the Prefect logs show).
    assert sum(line.startswith("step ") for line in log_lines) == STEPS
    # metrics.jsonl has one record per step.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))


def test_output_is_a_loadable_hf_model_that_moved(one_rank_run, model_phase_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = one_rank_run[0]
    assert (out / "model.safetensors").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not transformers' private 0600
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token == "<|pad|>"

    # The weights training started from: same config, same seed as the entry script.
    torch.manual_seed(ONE_RANK.seed)
    fresh = LlamaForCausalLM(LlamaConfig.from_dict(json.loads((model_phase_dir / "model_config.json").read_text())))
    trained, initial = model.state_dict(), fresh.state_dict()
    assert trained.keys() == initial.keys()
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert len(changed) == len(trained), f"unchanged: {set(trained) - set(changed)}"

    ids = tokenizer("The parser reads", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_two_ranks_zero2_match_one_rank(one_rank_run, model_ref, tmp_path, monkeypatch):
    """Same global batch, same rows per step, fp32: only the reduction order differs, so the
    trajectories agree to float rounding. Tolerance 1e-3 absolute on every step's loss
    (measured: < 1e-6) and on the validation loss."""
    _, one_summary, one_sink, _ = one_rank_run
    summary, sink = _run(TWO_RANKS_ZERO2, model_ref, tmp_path / "out", monkeypatch)
    assert summary["world_size"] == 2 and summary["tokens_seen"] == one_summary["tokens_seen"]
    one, two = one_sink.series("train/loss"), sink.series("train/loss")
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-3
    assert summary["final_loss"] == pytest.approx(one_summary["final_loss"], abs=1e-3)
    assert summary["val_loss"] == pytest.approx(one_summary["val_loss"], abs=1e-3)


def test_two_ranks_zero3_gather_and_save_a_full_model(one_rank_run, model_ref, tmp_path, monkeypatch):
    """ZeRO-3 shards every parameter; the saved model must still be whole. Four steps with
    the same 3-step warmup: the losses of steps 1-4 only depend on the first three updates,
    whose lr does not depend on max_steps, so they match the 1-rank run's."""
    from transformers import AutoModelForCausalLM

    cfg = TWO_RANKS_ZERO2.model_copy(update={"zero_stage": 3, "max_steps": 4})
    summary, sink = _run(cfg, model_ref, tmp_path / "out", monkeypatch)
    one = one_rank_run[2].series("train/loss")[:4]
    assert max(abs(a - b) for a, b in zip(one, sink.series("train/loss"))) < 1e-3
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(one_rank_run[0])
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert summary["world_size"] == 2 and summary["steps"] == 4


def test_timeout_kills_launcher_and_ranks(model_ref, tmp_path, monkeypatch):
    """A run longer than timeout_s ends in LaunchError, and no rank outlives it."""
    import re
    import time

    from phases.errors import LaunchError

    cfg = ONE_RANK.model_copy(
        update={"max_steps": 1_000_000, "eval_every": 1_000_000, "timeout_s": 30}
    )  # the launcher needs ~10 s to spawn a rank on 2 busy cores
    with pytest.raises(LaunchError, match="timed out"):
        _run(cfg, model_ref, tmp_path / "out", monkeypatch)
    pids = [int(p) for p in re.findall(r"process (\d+) spawned", (tmp_path / "out" / "train.log").read_text())]
    assert pids, "the launcher never reported its rank"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    assert not any(_running(p) for p in pids), "a rank survived the timeout"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
