"""SFT on chat messages: the held-out loss falls, only assistant tokens train, the model is published."""

import json

import pytest
import torch
from safetensors.torch import load_file

from phases.align.build import build
from phases.config import AlignConfig
from phases.errors import DataError
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e

CFG = AlignConfig(method="sft", max_steps=8, batch_size=4, lr=5e-3, max_length=128, seed=0, num_samples=2, sample_tokens=8)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, align_inputs):
    out = tmp_path_factory.mktemp("align")
    sink = ListSink()
    summary = build(CFG, align_inputs, out, sink)
    return summary, sink, out


def test_held_out_loss_falls_and_steps_are_logged(sft_run):
    summary, sink, _ = sft_run
    assert summary["sft_eval_loss"] < summary["sft_eval_loss_before"]
    assert summary["steps"] == CFG.max_steps
    stage = sink.children["sft"]
    losses = stage.series("train/loss")
    assert len(losses) == CFG.max_steps and all(torch.isfinite(torch.tensor(losses)))
    assert [s for k, _, s in stage.metrics if k == "train/loss"] == list(range(1, CFG.max_steps + 1))
    assert summary["first_loss"] == losses[0]
    assert stage.series("eval/loss")[-1] == pytest.approx(summary["sft_eval_loss"])
    assert sink.params["align.pairs.docs_parsed"] == 3  # the three stdlib modules of the toy train split


def test_parameters_changed(sft_run, toy_pretrain):
    _, _, out = sft_run
    before, after = load_file(toy_pretrain / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, f"only {changed} changed"


def test_output_layout_and_reload(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary, _, out = sft_run
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "sft_train.jsonl",
        "sft_eval.jsonl",
        "quarantine.jsonl",
        "capability.json",
        "samples.json",
        "stages.json",
    } <= names
    assert not any(n.startswith(("checkpoint", "runs")) for n in names), names  # trainer scratch stays out
    rows = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    assert len(rows) == summary["sft_rows"] and rows[0]["messages"][0]["content"].startswith("What does `")
    held_out = {json.loads(line)["id"] for line in (out / "sft_eval.jsonl").read_text().splitlines()}
    assert held_out and not held_out & {r["id"] for r in rows}  # split by function: none seen in training
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template(rows[0]["messages"][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == CFG.num_samples and {"prompt", "reference", "before", "after"} <= samples[0].keys()


def test_capability_table(sft_run):
    summary, _, out = sft_run
    table = json.loads((out / "capability.json").read_text())["table"]
    assert [r["stage"] for r in table] == ["pretrained", "sft"]
    assert table[0]["perplexity"] == summary["ppl_pretrained"] and table[-1]["perplexity"] == summary["ppl_aligned"]


def test_only_assistant_tokens_train_and_eos_is_one_of_them(tmp_path, toy_pretrain):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phases.align.sft import make_trainer

    tok = AutoTokenizer.from_pretrained(toy_pretrain)
    rows = [
        {
            "messages": [
                {"role": "user", "content": "What does `posixpath.join` do?"},
                {"role": "assistant", "content": "Join two or more pathname components."},
            ]
        }
    ] * 2
    trainer = make_trainer(CFG, AutoModelForCausalLM.from_pretrained(toy_pretrain), tok, rows, None, str(tmp_path))
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tok.decode(trained) == "Join two or more pathname components.<|eos|>"  # the model learns to stop
    assert trained[-1] == tok.eos_token_id


def test_no_python_documents_is_a_data_error(tmp_path, toy_pretrain):
    import toy_artifacts

    prose = [{"id": "d", "source": "docs", "text": "# Just prose\n\nNothing to parse here."}]
    data = toy_artifacts.make_data_dir(tmp_path / "data", {"train": prose, "validation": prose})
    inputs = {"data": toy_artifacts.ref("data", data), "pretrain": toy_artifacts.ref("pretrain", toy_pretrain)}
    with pytest.raises(DataError, match="parses as Python.*data.sources"):
        build(CFG, inputs, tmp_path / "out", ListSink())


def test_aligned_model_feeds_inference(sft_run, tmp_path):
    import toy_artifacts

    from phases.config import InferenceConfig
    from phases.inference.build import build as generate

    _, _, out = sft_run
    cfg = InferenceConfig(prompts=("def join(a, *p):", "What does `posixpath.join` do?"), max_new_tokens=4, batch_size=2)
    summary = generate(cfg, {"align": toy_artifacts.ref("align", out)}, tmp_path, ListSink())
    assert summary["num_prompts"] == 2
