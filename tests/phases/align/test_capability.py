"""The capability check: perplexity per stage; a run configured to overfit fails when told to."""

import logging

import numpy as np
import pytest

from phases.align.build import build
from phases.align.capability import CapabilityCheck, CapabilityError, validation_rows
from phases.config import AlignConfig
from phases.errors import DataError
from phases.metrics import ListSink


def test_enforce_warns_or_fails_above_the_limit(caplog):
    warn = CapabilityCheck(np.zeros((1, 4), dtype=np.int64), max_rise=0.25, on_rise="warn")
    warn.table = [{"stage": "pretrained", "perplexity": 100.0, "rise": 0.0}]
    assert warn.enforce({"stage": "sft", "perplexity": 120.0, "rise": 0.2}) is None
    with caplog.at_level(logging.WARNING, logger="lifecycle.align"):
        msg = warn.enforce({"stage": "sft", "perplexity": 140.0, "rise": 0.4})
    assert "40.0%" in msg and "align.max_ppl_rise=0.25" in caplog.text
    fail = CapabilityCheck(warn.rows, max_rise=0.25, on_rise="fail", table=warn.table)
    with pytest.raises(CapabilityError, match=r"rose 40.0% after sft \(100.0 -> 140.0\).*align.lr"):
        fail.enforce({"stage": "sft", "perplexity": 140.0, "rise": 0.4})


def test_validation_rows_pack_documents_with_eos(toy_pretrain):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_pretrain)
    rows = validation_rows(["def f(x):\n    return x\n"] * 50, tok, seq_len=16, max_rows=3)
    assert rows.shape == (3, 16) and tok.eos_token_id in rows
    with pytest.raises(DataError, match="align.max_length"):
        validation_rows(["x"], tok, seq_len=64, max_rows=3)


@pytest.mark.e2e
def test_overfitting_run_fails_the_check(tmp_path, align_inputs):
    # A learning rate 20x the tests' and many passes over ~18 chats: the model forgets the
    # code it was pretrained on, and the check stops the phase after SFT.
    cfg = AlignConfig(method="dpo", max_steps=30, lr=0.1, batch_size=4, max_length=128, max_ppl_rise=0.1, on_ppl_rise="fail", num_samples=0)
    sink = ListSink()
    with pytest.raises(CapabilityError, match="after sft"):
        build(cfg, align_inputs, tmp_path / "out", sink)
    assert "dpo" not in sink.children  # it stopped before preference training
