"""The memorization probe: sampling, arithmetic, and extraction from a model that really memorized."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from phases.errors import DataError
from phases.evaluate.memorization import (
    bucket,
    canary_occurrences,
    canary_probe,
    duplicate_counts,
    greedy_suffixes,
    memorization_report,
    probe,
)
from phases.pretrain.seen import documents_seen, rows_seen

SEQ = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as the fixture trains: toy generation is faster so on the shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TableModel:
    """A stand-in for ``generate``: row r's prompt starts with token r; the answer comes from ``answer(r)``."""

    def __init__(self, answer):
        self.answer, self.prompts = answer, []

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, eos_token_id):
        assert attention_mask.shape == input_ids.shape and not do_sample and eos_token_id is None
        self.prompts += input_ids[:, 0].tolist()
        new = torch.tensor([self.answer(int(r))[:max_new_tokens] for r in input_ids[:, 0]])
        return torch.cat([input_ids, new], dim=1)


def numbered_rows(n):
    """Row r: token r, then tokens 1000 + 10 r + position (distinct everywhere)."""
    rows = 1000 + 10 * np.arange(n)[:, None] + np.arange(SEQ)[None, :]
    rows[:, 0] = np.arange(n)
    return rows


def one_doc_per_row(n):
    return pa.table({"id": [f"d{i}" for i in range(n)], "source": ["s"] * n, "start": np.arange(n) * SEQ, "length": [SEQ] * n})


def write_rejected(data_dir, rows):
    (data_dir / "rejected").mkdir(parents=True)
    cols = ("id", "source", "location", "stage", "reason", "detail", "chars")
    table = pa.table({c: [r.get(c) for r in rows] for c in cols}, schema=pa.schema([(c, pa.int64() if c == "chars" else pa.string()) for c in cols]))
    pq.write_table(table, data_dir / "rejected" / "part-00000.parquet")


def test_duplicate_counts_credit_the_kept_document(tmp_path):
    assert duplicate_counts(tmp_path) == {}  # no rejected/ at all
    write_rejected(
        tmp_path,
        [
            {"id": "a2", "reason": "exact_duplicate", "detail": "a"},
            {"id": "a3", "reason": "near_duplicate", "detail": "a"},
            {"id": "b2", "reason": "near_duplicate", "detail": "b"},
            {"id": "b3", "reason": "exact_duplicate", "detail": "b2"},  # an exact copy of a removed near duplicate
            {"id": "x", "reason": "too_short", "detail": None},
            {"id": "y", "reason": "duplicate_id", "detail": None},
            {"id": "z", "reason": "pii", "detail": "a"},
        ],
    )
    assert duplicate_counts(tmp_path) == {"a": 3, "b": 3}


@pytest.mark.parametrize("n, name", [(1, "1"), (2, "2"), (3, "3-5"), (5, "3-5"), (6, "6+"), (1000, "6+")])
def test_buckets(n, name):
    assert bucket(n) == name


def test_sampling_favours_duplicated_documents_and_only_seen_rows():
    n = 200
    rows, docs = numbered_rows(n), one_doc_per_row(n)
    seen = np.arange(0, n, 2)  # the run saw the even rows (listed with repeats, as after an epoch)
    seen = np.concatenate([seen, seen[:10]])
    dups = {f"d{i}": 4 for i in range(0, n, 20)}  # 10 of the 100 seen rows are duplicated documents

    def run(seed):
        model = TableModel(lambda r: [0] * 4)
        report = probe(model, rows, seen, docs, dups, samples=20, prefix_tokens=3, suffix_tokens=4, seed=seed, batch_size=6)
        return model.prompts, report

    prompts, report = run(0)
    assert len(prompts) == len(set(prompts)) == 20 and set(prompts) <= set(seen.tolist())
    counts = {b["bucket"]: b["samples"] for b in report["by_duplicates"]}
    assert counts["3-5"] == 10  # half of the samples, where uniform sampling would give about 2
    assert sum(counts.values()) == report["samples"] == 20
    assert run(0)[0] == prompts and run(1)[0] != prompts  # seeded
    none = probe(TableModel(lambda r: [0] * 4), rows, seen, docs, {}, samples=20, prefix_tokens=3, suffix_tokens=4)
    assert [b["bucket"] for b in none["by_duplicates"]] == ["1"]


def test_rates_per_bucket_and_rows_mapped_to_the_document_of_their_first_token():
    n = 12
    rows = numbered_rows(n)
    # Documents spanning rows: d0 holds rows 0-2 and the first token of row 3 is d1's ...
    lengths = [3 * SEQ, 2 * SEQ - 3, 3, 4 * SEQ, 2 * SEQ, SEQ]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    docs = pa.table({"id": [f"d{i}" for i in range(6)], "source": list("abcdef"), "start": starts, "length": lengths})
    first_token_doc = [int(np.nonzero(starts <= r * SEQ)[0][-1]) for r in range(n)]  # d0 d0 d0 d1 d1 d3 d3 d3 d3 d4 d4 d5
    dups = {"d1": 2, "d3": 4, "d5": 9}

    def answer(r):  # rows divisible by 3 fully reproduced, others half (first 2 of 4 suffix tokens right)
        true = list(rows[r, 3:7])
        return true if r % 3 == 0 else true[:2] + [-5, -5]

    report = probe(TableModel(answer), rows, np.arange(n), docs, dups, samples=100, prefix_tokens=3, suffix_tokens=4, tokenizer=None)
    assert report["samples"] == n and report["prefix_tokens"] == 3 and report["suffix_tokens"] == 4
    exact = np.array([r % 3 == 0 for r in range(n)])
    token = np.where(exact, 1.0, 0.5)
    assert report["exact_match_rate"] == pytest.approx(exact.mean()) and report["token_match_rate"] == pytest.approx(token.mean())
    names = np.array([bucket(dups.get(f"d{d}", 1)) for d in first_token_doc])
    expected = [
        {
            "bucket": b,
            "samples": int((names == b).sum()),
            "exact_match_rate": pytest.approx(exact[names == b].mean()),
            "token_match_rate": pytest.approx(token[names == b].mean()),
        }
        for b in ("1", "2", "3-5", "6+")
        if (names == b).any()
    ]
    assert report["by_duplicates"] == expected
    memorized = [r for r in range(n) if r % 3 == 0]
    assert [e["row"] for e in report["examples"]] == memorized
    assert [e["doc_id"] for e in report["examples"]] == [f"d{first_token_doc[r]}" for r in memorized]
    assert [e["duplicates"] for e in report["examples"]] == [dups.get(f"d{first_token_doc[r]}", 1) for r in memorized]
    assert "prefix_text" not in report["examples"][0]


def test_a_window_longer_than_a_row_is_refused():
    rows = numbered_rows(4)
    with pytest.raises(DataError, match=r"prefix_tokens=5 \+ suffix_tokens=4 .*seq_len=8: lower them"):
        probe(TableModel(lambda r: []), rows, np.arange(4), one_doc_per_row(4), {}, samples=2, prefix_tokens=5, suffix_tokens=4)


def test_greedy_decoding_continues_past_eos():
    """Packed rows hold EOS between documents: the probe must be able to predict it, and go on."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=32, eos_token_id=3
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # blocks write nothing, every embedding is e_0, and only EOS reads e_0: EOS everywhere
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[3, 0] = 1.0
    prompts = np.random.default_rng(0).integers(5, 40, size=(3, 5))
    assert (greedy_suffixes(model, prompts, 6, batch_size=2) == 3).all()


def test_canary_occurrences_count_documents():
    assert canary_occurrences(["a KEY b", "KEY KEY", "nothing", "xKEYx LOCK"], ["KEY", "LOCK", "absent"]) == [3, 1, 0]


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_the_planted_canary_is_extracted_and_a_fresh_string_is_not(trained_toy):
    model, tokenizer = load(trained_toy.pretrain_dir)
    fresh = "Quiet lanterns drift over 81 orchards while copper herons wait."  # never in the corpus
    canary, other = canary_probe(model, tokenizer, [trained_toy.canary, fresh], prefix_tokens=6)
    assert canary["memorized"] and canary["exact_match"] and canary["token_match_rate"] == 1.0
    assert canary["canary"] == trained_toy.canary[:60] and canary["tokens"] > 6
    assert not other["memorized"] and other["token_match_rate"] < 0.5
    init, _ = load(trained_toy.init_dir)
    untrained = canary_probe(init, tokenizer, [trained_toy.canary], prefix_tokens=6)[0]
    assert not untrained["memorized"] and untrained["token_match_rate"] < 0.5
    with pytest.raises(DataError, match="'ab' is .* tokens; a canary needs at least 4"):
        canary_probe(model, tokenizer, ["ab"], prefix_tokens=6)


def test_trained_rows_are_extracted_unlike_unseen_rows_or_the_init(trained_toy):
    from phases.model import artifact

    rows = artifact.rows(trained_toy.model_dir, "train")
    docs = pq.read_table(trained_toy.model_dir / "train_docs.parquet")
    kwargs = dict(samples=16, prefix_tokens=16, suffix_tokens=16, seed=0, batch_size=8)
    model, tokenizer = load(trained_toy.pretrain_dir)
    seen = probe(model, rows, trained_toy.seen_rows, docs, {}, tokenizer=tokenizer, **kwargs)
    unseen = probe(model, rows, trained_toy.unseen_rows, docs, {}, **kwargs)
    init = probe(load(trained_toy.init_dir)[0], rows, trained_toy.seen_rows, docs, {}, **kwargs)
    print(
        f"trained_toy built in {trained_toy.seconds:.1f} s; exact/token match: seen {seen['exact_match_rate']:.2f}/"
        f"{seen['token_match_rate']:.2f}, unseen {unseen['exact_match_rate']:.2f}/{unseen['token_match_rate']:.2f}, "
        f"init {init['exact_match_rate']:.2f}/{init['token_match_rate']:.2f}"
    )
    assert seen["exact_match_rate"] >= 0.5 and seen["token_match_rate"] > 0.8
    assert unseen["exact_match_rate"] <= 0.25 and init["exact_match_rate"] == 0.0
    assert seen["token_match_rate"] > unseen["token_match_rate"] + 0.3 and seen["token_match_rate"] > init["token_match_rate"] + 0.5
    example = seen["examples"][0]
    assert example["row"] in trained_toy.seen_rows and example["prefix_text"] and example["suffix_text"]
    assert tokenizer.decode(rows[example["row"], 16:32].tolist()) == example["suffix_text"]


def test_report_from_the_phase_outputs(trained_toy):
    model, tokenizer = load(trained_toy.pretrain_dir)
    seen, model_dir = rows_seen(trained_toy.pretrain_dir)
    assert model_dir == trained_toy.model_dir and np.array_equal(np.unique(seen), trained_toy.seen_rows)
    assert documents_seen(trained_toy.pretrain_dir)[1]["distinct_rows"] == len(trained_toy.seen_rows)
    report = memorization_report(
        model,
        tokenizer,
        trained_toy.model_dir,
        trained_toy.pretrain_dir,
        trained_toy.data_dir,
        samples=len(trained_toy.seen_rows),
        prefix_tokens=16,
        suffix_tokens=16,
        canaries=[trained_toy.canary],
        seed=0,
        batch_size=16,
    )
    assert report["rows_seen"] == report["samples"] == len(trained_toy.seen_rows)
    (canary,) = report["canaries"]
    assert canary["memorized"] and canary["occurrences"] == trained_toy.texts.count(trained_toy.canary)
    assert report["exact_match_rate"] >= 0.5
    json.dumps(report)  # the evaluation summary stores it as JSON
