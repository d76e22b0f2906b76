"""The model phase on a small real data output: tokenizer, packing, lineage index, config."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phases.config import ModelConfig
from phases.errors import DataError
from phases.metrics import ListSink
from phases.model.build import build
from phases.model.packing import documents_in_row, load_packed
from phases.refs import PhaseRef

SOURCES = {
    "code": ['import os\n\ndef join(a, *p):\n    """Join two or more pathname components."""\n    return os.path.join(a, *p)\n'] * 3,
    "docs": ["# Title\n\nSome *markdown* prose, with ünïcödé, emoji 🚀 and tabs\tinside.\n", "Another paragraph of text."],
    "licenses": ["Permission is hereby granted, free of charge, to any person obtaining a copy."],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = [(f"{s}/{i}", s, t * 20) for s, texts in SOURCES.items() for i, t in enumerate(texts)]
    for split, part in (("train", rows), ("validation", rows[::2])):
        (root / split).mkdir()
        pq.write_table(
            pa.table({"id": [r[0] for r in part], "source": [r[1] for r in part], "text": [r[2] for r in part]}), root / split / "part-00000.parquet"
        )
    return root


@pytest.fixture(scope="module")
def built(data_dir, tmp_path_factory):
    cfg = ModelConfig(vocab_size=400, seq_len=32, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    out = tmp_path_factory.mktemp("model")
    summary = build(cfg, {"data": PhaseRef("data", "k", str(data_dir), "fp")}, out, ListSink())
    return cfg, out, summary


def test_tokenizer_round_trips_every_source(built):
    from transformers import AutoTokenizer

    _, out, _ = built
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    for texts in SOURCES.values():
        for t in texts:
            assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<|bos|>", "<|eos|>", "<|pad|>"}
    assert "assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_packing_loses_no_token(built, data_dir):
    from transformers import AutoTokenizer

    cfg, out, summary = built
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    texts = pq.read_table(data_dir / "train").column("text").to_pylist()
    expected = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    packed = json.loads((out / "packed.json").read_text())
    rows = load_packed(out / "train.bin", packed["dtype"], cfg.seq_len)
    assert packed["dtype"] == "uint16" and rows.shape == (summary["train_sequences"], cfg.seq_len)
    assert rows.size + summary["dropped_tail_tokens"] == len(expected) == summary["train_tokens"]
    assert rows.ravel().tolist() == expected[: rows.size]


def test_lineage_maps_rows_to_documents(built):
    cfg, out, _ = built
    docs = pq.read_table(out / "train_docs.parquet")
    starts, lengths, ids = docs.column("start").to_numpy(), docs.column("length").to_numpy(), docs.column("id").to_pylist()
    for row in (0, 1, 5):
        lo, hi = row * cfg.seq_len, (row + 1) * cfg.seq_len
        expected = [i for i, s, n in zip(ids, starts, lengths) if s < hi and s + n > lo]
        assert documents_in_row(docs, row, cfg.seq_len) == expected and expected


def test_model_config_loads_and_counts(built):
    from transformers import LlamaConfig, LlamaForCausalLM

    _, out, summary = built
    config = LlamaConfig(**json.loads((out / "model_config.json").read_text()))
    model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == summary["parameters"]
    assert config.vocab_size == summary["vocab_size"]


def test_too_long_sequence_for_the_data(data_dir, tmp_path):
    cfg = ModelConfig(vocab_size=400, seq_len=4096, max_position_embeddings=4096, hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64)
    with pytest.raises(DataError, match="fewer than one sequence"):
        build(cfg, {"data": PhaseRef("data", "k", str(data_dir), "fp")}, tmp_path, ListSink())


def test_a_budget_sizes_the_architecture(data_dir, tmp_path):
    from phases.model.sizing import plan

    budget = 5e13
    cfg = ModelConfig(vocab_size=400, seq_len=32, max_position_embeddings=64, budget_flops=budget, gpu="H100")
    summary = build(cfg, {"data": PhaseRef("data", "k", str(data_dir), "fp")}, tmp_path, ListSink())
    expected = plan(vocab=summary["vocab_size"], seq_len=32, budget_flops=budget, gpu="H100")
    config = json.loads((tmp_path / "model_config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (expected.hidden_size, expected.num_layers)
    assert summary["parameters"] == expected.parameters
    assert summary["plan"]["tokens_available"] == summary["train_tokens"]
    assert json.loads((tmp_path / "plan.json").read_text())["epochs"] == pytest.approx(expected.tokens / summary["train_tokens"], rel=1e-3)


def test_per_source_stats_and_an_existing_tokenizer(built, data_dir, tmp_path):
    cfg, out, summary = built
    assert {r["source"] for r in summary["per_source"]} == set(SOURCES)
    # Per-source tokens plus one EOS separator per document add up to the packed stream.
    assert sum(r["tokens"] + r["documents"] for r in summary["per_source"]) == summary["train_tokens"]
    reuse = ModelConfig(
        tokenizer_path=str(out / "tokenizer"), seq_len=32, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64
    )
    build(reuse, {"data": PhaseRef("data", "k", str(data_dir), "fp")}, tmp_path, ListSink())
    assert (tmp_path / "train.bin").read_bytes() == (out / "train.bin").read_bytes()
