"""The held-out multiple-choice task's construction rules."""

import random

import pytest

from phases.errors import DataError
from phases.evaluate.tasks import build_questions

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
