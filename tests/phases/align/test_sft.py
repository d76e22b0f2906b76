"""The SFT phase trains the pretrained model on derived pairs and publishes a loadable model."""

import json

import pytest
import torch
from safetensors.torch import load_file

import toy_artifacts
from phases.align.build import build
from phases.config import AlignConfig
from phases.errors import DataError
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e

CFG = AlignConfig(num_pairs=16, max_steps=6, batch_size=4, lr=5e-3, max_length=64, seed=0)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, toy_data, toy_pretrain):
    out = tmp_path_factory.mktemp("align")
    sink = ListSink()
    inputs = {"data": toy_artifacts.ref("data", toy_data), "pretrain": toy_artifacts.ref("pretrain", toy_pretrain)}
    summary = build(CFG, inputs, out, sink)
    return summary, sink, out


def test_summary_and_per_step_loss(sft_run):
    summary, sink, _ = sft_run
    assert summary["num_pairs"] == CFG.num_pairs and summary["steps"] == CFG.max_steps
    losses = sink.series("train/loss")
    assert len(losses) == CFG.max_steps
    assert [s for k, _, s in sink.metrics if k == "train/loss"] == list(range(1, CFG.max_steps + 1))
    assert summary["first_loss"] == losses[0] and summary["final_loss"] == losses[-1]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sink.params["align.pairs.docs_parsed"] == 3  # the three stdlib modules of the toy train split


def test_parameters_changed(sft_run, toy_pretrain):
    _, _, out = sft_run
    before, after = load_file(toy_pretrain / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, f"only {changed} changed"


def test_output_layout_and_reload(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, out = sft_run
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "pairs.jsonl"} <= names
    assert not any(n.startswith(("checkpoint", "runs")) for n in names), names  # trainer scratch stays out
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == CFG.num_pairs and all(p["prompt"].startswith(("def ", "async def ")) for p in pairs)
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    ids = tok("def join(a, *p):\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_no_python_documents_is_a_data_error(tmp_path, toy_pretrain):
    prose = [{"id": "d", "source": "docs", "text": "# Just prose\n\nNothing to parse here."}]
    data = toy_artifacts.make_data_dir(tmp_path / "data", {"train": prose, "validation": prose})
    inputs = {"data": toy_artifacts.ref("data", data), "pretrain": toy_artifacts.ref("pretrain", toy_pretrain)}
    with pytest.raises(DataError, match="parses as Python.*data.sources"):
        build(CFG, inputs, tmp_path / "out", ListSink())


def test_loss_covers_only_the_completion(tmp_path, toy_pretrain):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phases.align.build import make_trainer

    tok = AutoTokenizer.from_pretrained(toy_pretrain)
    pairs = [{"prompt": "def join(a, *p):\n", "completion": " Join two or more pathname components."}] * 2
    trainer = make_trainer(CFG, AutoModelForCausalLM.from_pretrained(toy_pretrain), tok, pairs, str(tmp_path))
    row = trainer.train_dataset[0]
    n_prompt = len(tok(pairs[0]["prompt"])["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    assert row["input_ids"][-1] == tok.eos_token_id  # TRL appends eos to the completion
    assert tok.decode(row["input_ids"][n_prompt:-1]) == pairs[0]["completion"]


def test_aligned_model_feeds_inference(sft_run, tmp_path):
    from phases.config import InferenceConfig
    from phases.inference.build import build as generate

    _, _, out = sft_run
    summary = generate(InferenceConfig(max_new_tokens=4, batch_size=2), {"align": toy_artifacts.ref("align", out)}, tmp_path, ListSink())
    assert summary["num_prompts"] == len(InferenceConfig().prompts)
