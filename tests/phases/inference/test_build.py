"""The inference phase end to end on a toy align output: records, best-of-N, int8 (size, perplexity, loadable)."""

import json

import pytest
import toy_artifacts

from phases.config import InferenceConfig
from phases.errors import DataError
from phases.inference import best_of as B
from phases.inference.build import build
from phases.inference.generate import generate, load_model
from phases.metrics import ListSink


@pytest.fixture(scope="module")
def built(tmp_path_factory, toy_align):
    out, sink = tmp_path_factory.mktemp("inference"), ListSink()
    summary = build(InferenceConfig(max_new_tokens=8, best_of=3, table_rows=3), {"align": toy_artifacts.ref("align", toy_align)}, out, sink)
    return out, sink, summary


def test_held_out_prompts_become_records(built, toy_align):
    out, sink, summary = built
    recs = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(recs) == len(toy_artifacts.HELD_OUT_CHATS) == summary["num_prompts"]
    # The held-out rows' reference answers are dropped: the prompt ends where the assistant starts.
    assert all(r["prompt"].endswith("<|assistant|>\n") for r in recs)
    assert "posixpath.join" in recs[0]["prompt"] and "slash" not in recs[0]["prompt"]
    assert all(r["sampling"]["temperature"] == 0.8 and 1 <= r["completion_tokens"] <= 8 for r in recs)
    assert summary["tokens_per_s"] > 0 and sink.series("inference/tokens_per_s") == [summary["tokens_per_s"]]

    assert any(p.endswith("inference_samples.json") for p, _ in sink.artifacts)


def test_best_of_n_reports_both_means(built):
    out, sink, summary = built
    best = [json.loads(line) for line in (out / "best_of.jsonl").read_text().splitlines()]
    assert len(best) == summary["num_prompts"] and all(len(b["rewards"]) == 3 and b["reward"] == max(b["rewards"]) for b in best)
    assert summary["best_of_status"] == "ok" and summary["best_of"] == 3
    # The best of three is at least the first of three, prompt by prompt, hence on average.
    assert summary["mean_reward_best_of_n"] >= summary["mean_reward_best_of_1"]
    assert sink.series("inference/mean_reward_best_of_n") == [summary["mean_reward_best_of_n"]]


def test_int8_is_small_close_and_loadable(built):
    out, sink, summary = built
    q = json.loads((out / "quantization.json").read_text())
    assert q["torchao_int8"]["size_ratio"] <= 0.4  # linears and embeddings in int8
    assert abs(q["torchao_int8"]["perplexity_rise"]) <= 0.05 and abs(q["dynamic_int8"]["perplexity_rise"]) <= 0.05
    assert all(q[m]["tokens_per_s_b1"] > 0 and q[m]["tokens_per_s_b8"] > 0 for m in ("fp32", "torchao_int8", "dynamic_int8"))
    assert summary["int8_size_ratio"] == q["torchao_int8"]["size_ratio"]
    assert {p.name for p in (out / "int8").iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not list((out / "int8").glob("*.bin")) and not list((out / "int8").glob("*.pt"))  # no pickles
    model, tokenizer = load_model(out / "int8")
    rec = generate(model, tokenizer, [{"prompt": "def f("}], InferenceConfig(greedy=True, max_new_tokens=4, chat=False))[0]
    assert rec["completion_tokens"] == 4


def test_best_of_is_unavailable_without_a_reward_model(tmp_path, toy_data):
    align = toy_artifacts.make_align_dir(tmp_path / "align", toy_data, reward_model=False)
    (tmp_path / "out").mkdir()
    cfg = InferenceConfig(max_new_tokens=3, best_of=2, quantize=False, prompts=("def f(",))
    summary = build(cfg, {"align": toy_artifacts.ref("align", align)}, tmp_path / "out", ListSink())
    assert summary["best_of_status"].startswith("unavailable") and "mean_reward_best_of_n" not in summary


def test_pick_keeps_the_highest_reward_per_prompt():
    recs = [{"completion": c} for c in "abcdef"]
    best = B.pick(recs, [{"prompt": "p"}, {"prompt": "q"}], 3, [0.1, 0.9, 0.5, 0.2, 0.2, -1.0])
    assert [b["completion"] for b in best] == ["b", "d"]  # a tie keeps the first sample
    with pytest.raises(DataError):
        B.pick(recs, [{"prompt": "p"}], 3, [0.0] * 6)


def test_a_missing_held_out_file_names_the_fix(tmp_path, toy_pretrain):
    with pytest.raises(DataError, match="inference.prompts_file"):
        build(InferenceConfig(quantize=False, best_of=1), {"align": toy_artifacts.ref("align", toy_pretrain)}, tmp_path, ListSink())


def test_a_tied_lm_head_stays_tied_to_the_int8_embedding(tmp_path, toy_align):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from phases.inference.quantize import save_int8, weights_bytes

    config = LlamaConfig.from_pretrained(toy_align)
    config.tie_word_embeddings = True  # as the model phase builds it
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    AutoTokenizer.from_pretrained(toy_align).save_pretrained(tmp_path / "tied")
    save_int8(tmp_path / "tied", tmp_path / "int8")
    fp32, _ = load_model(tmp_path / "tied")
    int8, _ = load_model(tmp_path / "int8")
    x = torch.randint(0, config.vocab_size, (2, 16))
    with torch.inference_mode():
        a, b = fp32(input_ids=x).logits, int8(input_ids=x).logits
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    assert int8.lm_head.weight is int8.get_input_embeddings().weight  # one int8 copy, as fp32 had one
    assert weights_bytes(tmp_path / "int8") <= 0.4 * weights_bytes(tmp_path / "tied")


def test_perplexity_on_val_bin_when_the_model_phase_is_an_input(tmp_path, toy_align, toy_data):
    packed = toy_artifacts.make_packed_dir(tmp_path / "model", toy_align, toy_data)
    inputs = {"align": toy_artifacts.ref("align", toy_align), "model": toy_artifacts.ref("model", packed)}
    (tmp_path / "out").mkdir()
    summary = build(InferenceConfig(max_new_tokens=2, best_of=1, num_prompts=1), inputs, tmp_path / "out", ListSink())
    q = json.loads((tmp_path / "out" / "quantization.json").read_text())
    assert summary["perplexity_on"] == q["perplexity_on"] == "val.bin" and abs(summary["int8_perplexity_rise"]) <= 0.05
