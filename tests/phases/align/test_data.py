"""Bad alignment rows are quarantined with their reason; a data set with no usable row fails early."""

import json

import pytest

from phases.align import data as D
from phases.align.build import build
from phases.config import AlignConfig
from phases.errors import DataError
from phases.metrics import ListSink


@pytest.fixture(scope="module")
def tok(toy_pretrain):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(toy_pretrain)


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_sft_rows_are_validated(tok):
    rows = [chat(f"q{i}", f"answer {i}") for i in range(6)] + [
        {"prompt": "plain", "completion": "form"},  # accepted, turned into messages
        {"text": "no messages"},
        chat("q", "   "),
        {"messages": [{"role": "user", "content": "only a question"}]},
        chat("long", "word " * 400),
        {"__bad_json__": "{oops"},
    ]
    split = D.prepare("sft", rows, "sft.jsonl", D.normalize_sft, D.sft_lengths, tok, 128, 0.3)
    assert len(split.train) + len(split.eval) == 7 and split.train and split.eval
    reasons = [q["reason"] for q in split.quarantined]
    assert reasons[0].startswith("missing field: messages") and reasons[1] == "empty assistant turn"
    assert reasons[2].startswith("empty assistant turn") and reasons[3].startswith("longer than max_length")
    assert reasons[4] == "not a JSON object"
    assert [q["line"] for q in split.quarantined] == [8, 9, 10, 11, 12]
    assert split.counts()["quarantined.empty assistant turn"] == 2


def test_preference_rows_are_validated(tok):
    good = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]
    rows = good + [
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "only chosen"},
        {"prompt": "q", "chosen": "", "rejected": "x"},
        {"prompt": "q", "chosen": "a " * 300, "rejected": "b"},
    ]
    split = D.prepare("preference", rows, "p.jsonl", D.normalize_preference, D.preference_lengths, tok, 128, 0.3)
    assert [q["reason"].split(":")[0] for q in split.quarantined] == [
        "chosen equals rejected",
        "missing field",
        "empty assistant turn",
        "longer than max_length",
    ]
    row = (split.train + split.eval)[0]
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}] and row["chosen"][0]["role"] == "assistant"


def test_split_is_by_id_hash_and_stable(tok):
    rows = [chat(f"question {i}", f"answer {i}") | {"id": f"mod.f{i}"} for i in range(40)]
    a = D.prepare("sft", rows, "x", D.normalize_sft, D.sft_lengths, tok, 128, 0.25)
    b = D.prepare("sft", list(reversed(rows)), "x", D.normalize_sft, D.sft_lengths, tok, 128, 0.25)
    assert {r["id"] for r in a.eval} == {r["id"] for r in b.eval} and 0 < len(a.eval) < 40


def test_no_usable_rows_fails_before_training_naming_the_file(tmp_path, align_inputs):
    bad = tmp_path / "mine.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in [{"text": "x"}, chat("q", ""), {"messages": []}]) + "\n")
    sink = ListSink()
    with pytest.raises(DataError, match=r"mine.jsonl: no usable sft rows out of 3 \(.*missing field.*empty assistant turn"):
        build(AlignConfig(method="sft", sft_data=str(bad)), align_inputs, tmp_path / "out", sink)
    assert not sink.children  # nothing trained
    with pytest.raises(DataError, match="no such file"):
        build(AlignConfig(method="sft", sft_data=str(tmp_path / "absent.jsonl")), align_inputs, tmp_path / "out2", ListSink())


@pytest.mark.e2e
def test_user_data_and_quarantine_file(tmp_path, align_inputs):
    path = tmp_path / "chats.jsonl"
    rows = [chat(f"Say {w}", w) | {"id": w} for w in ("red", "green", "blue", "amber", "teal", "plum")] + [chat("empty", "")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    summary = build(
        AlignConfig(method="sft", sft_data=str(path), max_steps=2, batch_size=2, num_samples=1, sample_tokens=2), align_inputs, out, ListSink()
    )
    assert summary["quarantined"] == 1 and summary["sft_rows"] + len((out / "sft_eval.jsonl").read_text().splitlines()) == 6
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert q == [{"dataset": "sft", "source": str(path), "line": 7, "reason": "empty assistant turn", "row": rows[-1]}]
