"""Benchmark contamination: n-gram overlap between evaluation items and the training data."""

import json
import random
import time

import pytest

from phases.errors import ConfigError, DataError
from phases.evaluate.contamination import ContaminationError, apply_policy, ngrams, report_markdown, scan, training_texts, words

VOCAB = [f"w{i}" for i in range(5000)]


def text(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


def bench_items(n_items: int = 6) -> list[tuple[int, str]]:
    return [(i, text(40, seed=100 + i)) for i in range(n_items)]


def planted_scan(n_items: int = 6, planted=(1, 3, 4)):
    """Task "bench" with some items copied into the middle of training documents, and a clean task."""
    bench = bench_items(n_items)
    other = [(i, text(40, seed=200 + i)) for i in range(4)]
    training = [("pretrain:code", text(300, seed=1))]
    training += [("pretrain:docs", f"{text(50, seed=10 + i)} {bench[i][1]} {text(50, seed=20 + i)}") for i in planted]
    return scan({"bench": bench, "other": other}, iter(training))


def test_planted_items_are_flagged_and_clean_ones_are_not():
    reports = planted_scan()
    bench, other = reports["bench"], reports["other"]
    assert bench.contaminated == (1, 3, 4)
    assert (bench.items, bench.checked, bench.unchecked) == (6, 6, 0)
    assert bench.rate == pytest.approx(0.5)
    assert other.contaminated == () and other.rate == 0.0
    assert [e["doc_index"] for e in bench.examples] == [1, 3, 4]
    assert {e["origin"] for e in bench.examples} == {"pretrain:docs"}
    assert bench.origins == {"pretrain:docs": 3}
    for e in bench.examples:  # the example n-gram really is one of the item's 13-grams
        assert tuple(e["ngram"].split()) in ngrams(dict(bench_items())[e["doc_index"]])


@pytest.mark.parametrize("overlap, flagged", [(12, False), (13, True)])
def test_an_overlap_shorter_than_n_words_is_not_flagged(overlap, flagged):
    item = text(30, seed=7).split()
    training = f"{text(20, seed=8)} {' '.join(item[5 : 5 + overlap])} {text(20, seed=9)}"
    report = scan({"t": [(0, " ".join(item))]}, [training], n=13)["t"]
    assert report.checked == 1
    assert report.contaminated == ((0,) if flagged else ())


def test_case_and_punctuation_differences_still_match():
    item = "Q: What does the function return, when the file is missing? A: It raises an ERROR (FileNotFoundError) - don't catch it!"
    training = "q what does the FUNCTION return when the file is missing a it raises an error filenotfounderror dont catch it"
    assert words(item) == training.lower().split()
    assert scan({"t": [(0, item)]}, [training])["t"].contaminated == (0,)


def test_short_items_are_unchecked_and_never_flagged():
    short = text(12, seed=3)  # 12 words < n=13: no n-gram, even though it is in the training text verbatim
    reports = scan({"t": [(0, short), (1, text(40, seed=4)), (2, "")]}, [f"{short} {text(40, seed=4)}"])
    r = reports["t"]
    assert (r.items, r.checked, r.unchecked) == (3, 1, 2)
    assert r.contaminated == (1,) and r.rate == 1.0
    assert r.clean_indices() == [0, 2]


def test_clean_policy_returns_exactly_the_clean_indices():
    reports = planted_scan()
    result = apply_policy(reports, "clean")
    assert result["samples"] == {"bench": [0, 2, 5]}  # "other" has no contamination: evaluated in full
    assert result["contaminated_tasks"] == ["bench"]
    assert result["report"]["samples"] == {"bench": [0, 2, 5]}
    assert apply_policy(reports, "flag")["samples"] is None
    # Nothing contaminated among the tasks asked for: no sample filter (lm-eval refuses samples with limit).
    assert apply_policy(reports, "clean", tasks=["other"])["samples"] is None


def test_clean_policy_leaves_out_a_task_with_no_clean_item():
    reports = planted_scan(n_items=2, planted=(0, 1))
    outcome = apply_policy(reports, "clean")
    # Not an empty selection: lm-eval would read [] as "every item".
    assert outcome["unscored"] == ["bench"] and "bench" not in outcome["samples"]
    assert outcome["report"]["unscored"] == ["bench"] and "not scored (no clean item): bench" in outcome["summary"]


def test_fail_policy_raises_naming_each_contaminated_task():
    reports = planted_scan()
    with pytest.raises(ContaminationError) as err:
        apply_policy(reports, "fail")
    message = str(err.value)
    assert isinstance(err.value, DataError)
    assert "bench: 3/6 checked items (50.0%)" in message and "other" not in message
    assert reports["bench"].examples[0]["ngram"] in message
    assert "contamination_policy=clean" in message and "flag" in message
    assert json.loads(json.dumps(err.value.report))["tasks"]["bench"]["contaminated_indices"] == [1, 3, 4]
    assert apply_policy(reports, "fail", tasks=["other"])["contaminated_tasks"] == []


def test_bad_policy_and_inputs_are_refused():
    reports = planted_scan()
    with pytest.raises(ConfigError, match="contamination_policy='ignore'"):
        apply_policy(reports, "ignore")
    with pytest.raises(ConfigError, match="missing_task"):
        apply_policy(reports, "flag", tasks=["missing_task"])
    with pytest.raises(ConfigError, match="n=0"):
        scan({"t": []}, [], n=0)
    with pytest.raises(DataError, match="doc index 0"):
        scan({"t": [(0, "a"), (0, "b")]}, [])


def test_report_is_json_safe_and_markdown_has_a_row_per_task():
    reports = planted_scan()
    report = json.loads(json.dumps(apply_policy(reports, "flag")["report"]))
    assert report["tasks"]["bench"] | {"examples": None} == {
        "task": "bench",
        "n": 13,
        "items": 6,
        "checked": 6,
        "unchecked": 0,
        "contaminated": 3,
        "rate": 0.5,
        "contaminated_indices": [1, 3, 4],
        "examples": None,
        "origins": {"pretrain:docs": 3},
    }
    table = report_markdown(reports)
    assert "| task | items | checked | contaminated | rate |" in table
    assert "| bench | 6 | 6 | 3 | 50.0% |" in table and "| other | 4 | 4 | 0 | 0.0% |" in table


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_texts_reads_the_data_and_align_outputs(toy_data, tmp_path):
    from phases.data.io import read_split

    align = tmp_path / "align"
    align.mkdir()
    sft = {"id": "s0", "messages": [{"role": "user", "content": "How do I parse it?"}, {"role": "assistant", "content": "Call json.loads."}]}
    answer = "the decoder returns a python object built from the json document and raises when the input is not valid json text"
    pref = {
        "id": "p0",
        "prompt": [{"role": "user", "content": "What does the decoder return?"}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": "Nothing."}],
    }
    write_jsonl(align / "sft_train.jsonl", [sft])
    write_jsonl(align / "preference_train.jsonl", [pref])

    rows = list(training_texts(toy_data, align))
    train = read_split(toy_data, "train")
    assert rows[: len(train)] == [(f"pretrain:{r['source']}", r["text"]) for r in train]
    assert rows[len(train) :] == [
        ("align:sft", "How do I parse it?\nCall json.loads."),
        ("align:preference", f"What does the decoder return?\n{answer}\nNothing."),
    ]
    assert [o for o, _ in training_texts(toy_data)] == [o for o, _ in rows[: len(train)]]

    licence = next(r["text"] for r in train if r["source"] == "licenses")
    items = {"t": [(0, " ".join(licence.split()[3:23])), (1, "User: what does the decoder return? Assistant: " + answer), (2, text(30, seed=5))]}
    r = scan(items, training_texts(toy_data, align))["t"]
    assert r.contaminated == (0, 1)
    assert r.origins == {"align:preference": 1, "pretrain:licenses": 1}

    (align / "sft_train.jsonl").unlink()  # an absent file is skipped
    assert [o for o, _ in training_texts(toy_data, align)][len(train) :] == ["align:preference"]
    (align / "preference_train.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="preference_train.jsonl:1 is not JSON"):
        list(training_texts(toy_data, align))
    with pytest.raises(DataError, match="is not a directory"):
        list(training_texts(toy_data, tmp_path / "nowhere"))


def test_scan_speed_on_a_2mb_corpus(capsys):
    rng = random.Random(0)
    docs = [("pretrain:synthetic", " ".join(rng.choices(VOCAB, k=500))) for _ in range(800)]
    size = sum(len(t) for _, t in docs)
    items = {
        "planted": [(i, " ".join(docs[i * 7][1].split()[100:140])) for i in range(100)],
        "clean": [(i, text(40, seed=1000 + i)) for i in range(100)],
    }
    start = time.perf_counter()
    reports = scan(items, docs)
    elapsed = time.perf_counter() - start
    assert reports["planted"].rate == 1.0 and reports["clean"].rate == 0.0
    with capsys.disabled():
        n_words = sum(len(t.split()) for _, t in docs)
        print(f"\ncontamination scan: {size / 1e6:.1f} MB, {n_words / 1e6:.2f} M words, 200 items in {elapsed:.2f} s")
