"""Perplexity: the formula checked on models whose answer is known."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phases.errors import DataError
from phases.evaluate.perplexity import perplexity, read_packed

VOCAB = 97


class LogitsModel:
    """A stand-in causal LM: logits from a function of the input ids."""

    def __init__(self, fn, vocab=VOCAB):
        self.fn, self.config = fn, SimpleNamespace(vocab_size=vocab)

    def __call__(self, input_ids):
        return SimpleNamespace(logits=self.fn(input_ids))


def rows(n=10, seq_len=16, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, seq_len), dtype=np.uint16)


def test_uniform_logits_give_vocab_size():
    model = LogitsModel(lambda ids: torch.zeros(*ids.shape, VOCAB))
    assert perplexity(model, rows(), batch_size=4, max_batches=10)["perplexity"] == pytest.approx(VOCAB, rel=1e-5)


def test_random_uniform_noise_logits_give_about_vocab_size():
    gen = torch.Generator().manual_seed(0)
    model = LogitsModel(lambda ids: torch.rand(*ids.shape, VOCAB, generator=gen) * 0.01)
    assert perplexity(model, rows(), batch_size=4, max_batches=10)["perplexity"] == pytest.approx(VOCAB, rel=0.01)


def test_oracle_gives_one():
    data = rows()

    def oracle(ids):  # knows the next token of every row of `data`
        nxt = torch.from_numpy(data[:, 1:].astype(np.int64))
        batch = next(i for i in range(0, len(data)) if torch.equal(ids[0], torch.from_numpy(data[i].astype(np.int64))))
        logits = torch.full((*ids.shape, VOCAB), -30.0)
        logits[:, :-1].scatter_(2, nxt[batch : batch + len(ids)].unsqueeze(-1), 30.0)
        return logits

    assert perplexity(LogitsModel(oracle), data, batch_size=3, max_batches=10)["perplexity"] == pytest.approx(1.0, abs=1e-6)


def test_token_weighted_over_uneven_batches_and_capped():
    torch.manual_seed(0)
    table = torch.randn(VOCAB, VOCAB)
    model = LogitsModel(lambda ids: table[ids])  # a bigram model: same answer however rows are batched
    data = rows(n=10)
    whole = perplexity(model, data, batch_size=10, max_batches=1)
    uneven = perplexity(model, data, batch_size=4, max_batches=3)  # 4 + 4 + 2 rows
    assert uneven["tokens"] == whole["tokens"] == 10 * 15 and uneven["batches"] == 3
    assert uneven["perplexity"] == pytest.approx(whole["perplexity"], rel=1e-5)
    capped = perplexity(model, data, batch_size=4, max_batches=1)
    assert capped["tokens"] == 4 * 15
    assert capped["perplexity"] == pytest.approx(math.exp(capped["mean_nll"]))


def test_token_ids_beyond_the_vocabulary_are_a_data_error():
    model = LogitsModel(lambda ids: torch.zeros(*ids.shape, 10), vocab=10)
    with pytest.raises(DataError, match="different tokenizers"):
        perplexity(model, rows(), batch_size=4, max_batches=1)


def test_read_packed(tmp_path):
    data = rows(n=5, seq_len=8)
    data.tofile(tmp_path / "val.bin")
    (tmp_path / "packed.json").write_text(json.dumps({"dtype": "uint16", "seq_len": 8}))
    got = read_packed(tmp_path)
    assert got.shape == (5, 8) and got.dtype == np.uint16 and np.array_equal(got, data)
    (tmp_path / "packed.json").write_text(json.dumps({"dtype": "uint16", "seq_len": 7}))
    with pytest.raises(DataError, match="whole number of rows"):
        read_packed(tmp_path)
    with pytest.raises(DataError, match="model phase"):
        read_packed(tmp_path / "missing")


def test_toy_model_on_toy_val_bin(toy_pretrain, toy_packed):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(toy_pretrain).eval()
    result = perplexity(model, read_packed(toy_packed), batch_size=4, max_batches=2)
    # An untrained model is close to uniform over its vocabulary.
    assert result["tokens"] == 2 * 4 * 63 and 0.5 * model.config.vocab_size < result["perplexity"] < 2 * model.config.vocab_size
