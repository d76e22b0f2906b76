"""The held-out multiple-choice task: construction rules and lm-eval's reading of the YAML."""

import json
import random

import pytest
import yaml

from phases.errors import DataError
from phases.evaluate.tasks import TASK_NAME, build_questions, task_config, write_task

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def make_docs(n: int, chars: int = 400) -> list[dict]:
    rng = random.Random(n)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(chars))[:chars]
        docs.append({"id": f"doc{i:02d}", "source": "docs", "text": text})
    return docs


def questions(docs, **kw):
    args = {"num_examples": 12, "num_choices": 4, "context_chars": 50, "continuation_chars": 20, "seed": 0, **kw}
    return build_questions(docs, **args)


def test_true_answer_is_the_real_continuation_at_the_label():
    docs = make_docs(6)
    by_id = {d["id"]: d["text"] for d in docs}
    qs = questions(docs)
    assert len(qs) == 12
    for q in qs:
        doc_id, start = q["id"].rsplit("@", 1)
        text, start = by_id[doc_id], int(start)
        assert q["question"] == text[start : start + 50]
        assert len(q["choices"]) == 4 and len(set(q["choices"])) == 4
        assert all(len(c) == 20 for c in q["choices"])
        assert q["choices"][q["label"]] == text[start + 50 : start + 70]
        others = [t for i, t in by_id.items() if i != doc_id]
        for j, c in enumerate(q["choices"]):
            if j != q["label"]:
                assert any(c in t for t in others), "distractors come from other documents"
    assert len({q["label"] for q in qs}) > 1  # the answer position is not constant


def test_seeded_and_independent_of_input_order():
    docs = make_docs(6)
    assert questions(docs, seed=1) == questions(list(reversed(docs)), seed=1)
    assert questions(docs, seed=1) != questions(docs, seed=2)


def test_few_documents_still_give_num_examples_distinct_questions():
    qs = questions(make_docs(3), num_examples=20, num_choices=3)
    assert len(qs) == 20 and len({q["id"] for q in qs}) == 20


def test_short_documents_are_skipped_for_questions():
    docs = make_docs(4) + [{"id": "short", "source": "docs", "text": "too short"}]
    assert not any(q["id"].startswith("short@") for q in questions(docs, num_examples=30))


def test_errors_name_the_fix():
    with pytest.raises(DataError, match="context_chars"):
        questions([{"id": "a", "text": "x" * 60}])
    with pytest.raises(DataError, match="at least 2 validation documents"):
        questions(make_docs(1))


def test_written_task_files(tmp_path):
    qs = questions(make_docs(5), num_examples=6)
    jsonl, yaml_path = write_task(qs, tmp_path)
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == qs
    cfg = yaml.safe_load(yaml_path.read_text())
    assert cfg == task_config("mc.jsonl")
    assert cfg["task"] == TASK_NAME and cfg["output_type"] == "multiple_choice" and cfg["target_delimiter"] == ""
    assert [m["metric"] for m in cfg["metric_list"]] == ["acc", "acc_norm"]


def load_lm_eval_task(include_path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False).load([TASK_NAME])["tasks"][TASK_NAME]


def test_lm_eval_loads_the_yaml_with_absolute_path(tmp_path):
    qs = questions(make_docs(5), num_examples=6, num_choices=3)
    jsonl, _ = write_task(qs, tmp_path / "task", data_file=(tmp_path / "task" / "mc.jsonl").resolve())
    task = load_lm_eval_task(tmp_path / "task")
    docs = list(task.test_docs())
    assert len(docs) == 6
    for doc, q in zip(docs, qs):
        assert task.doc_to_text(doc) == q["question"]
        assert task.doc_to_choice(doc) == q["choices"]
        assert task.doc_to_target(doc) == q["label"]


def test_published_relative_yaml_works_from_the_task_folder(tmp_path, monkeypatch):
    qs = questions(make_docs(5), num_examples=5)
    write_task(qs, tmp_path / "task")
    monkeypatch.chdir(tmp_path / "task")
    assert len(list(load_lm_eval_task(".").test_docs())) == 5
