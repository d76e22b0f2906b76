"""The items of the held-out continuation task (``lm_eval_tasks/lifecycle_heldout_mc.yaml``).

Each question shows ``context_chars`` characters of a validation document; the true answer
is the next ``continuation_chars`` characters and the distractors are spans of the same
length from *other* validation documents. A model that learned the corpus should prefer
the real continuation; chance is ``1 / num_choices``. Nothing here needs lm-eval or a
model (pure Python), so the construction is unit-testable.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from phases.errors import DataError

_MAX_DRAWS = 50  # tries to find a distractor span that differs from every other choice


def eligible_docs(docs: Sequence[dict[str, Any]], min_chars: int) -> list[dict[str, Any]]:
    """Documents long enough for a span of ``min_chars``, in id order (so the seed alone decides)."""
    return sorted((d for d in docs if len(d["text"]) >= min_chars), key=lambda d: str(d["id"]))


def random_span(text: str, length: int, rng: random.Random) -> tuple[int, str]:
    start = rng.randint(0, len(text) - length)
    return start, text[start : start + length]


def distractors(pool: Sequence[dict[str, Any]], exclude_id: str, answer: str, count: int, length: int, rng: random.Random) -> list[str]:
    """``count`` distinct spans of ``length`` chars from documents other than the question's.

    Different documents are used first; when there are fewer than ``count`` others, a
    document may give a second span. A span equal to the answer (boilerplate shared by two
    files) is redrawn, so every question has exactly one correct choice.
    """
    others = [d for d in pool if str(d["id"]) != exclude_id]
    if not others:
        raise DataError(f"need at least 2 validation documents of >= {length} characters for distractors, found {len(pool)}")
    order = rng.sample(others, len(others))
    chosen: list[str] = []
    draws = 0
    while len(chosen) < count:
        if draws >= _MAX_DRAWS * count:
            raise DataError(
                f"could not find {count} distinct distractors of {length} characters for document {exclude_id}; "
                "the validation split is too repetitive: add documents or lower evaluate.num_choices"
            )
        _, span = random_span(order[draws % len(order)]["text"], length, rng)
        draws += 1
        if span != answer and span not in chosen:
            chosen.append(span)
    return chosen


def build_questions(
    docs: Sequence[dict[str, Any]],
    *,
    num_examples: int,
    num_choices: int,
    context_chars: int,
    continuation_chars: int,
    seed: int,
) -> list[dict[str, Any]]:
    """``num_examples`` questions: ``{id, source, question, choices, label}``, seeded.

    Question documents are drawn without replacement while they last, then cycled (each
    pass at fresh offsets), so a small validation split still yields ``num_examples``
    questions. The window starts at a random offset rather than the document start,
    because files often share a header (licence banners) that would make questions alike.
    """
    window = context_chars + continuation_chars
    questions_from = eligible_docs(docs, window)
    pool = eligible_docs(docs, continuation_chars)
    if not questions_from:
        longest = max((len(d["text"]) for d in docs), default=0)
        raise DataError(
            f"no validation document has {window} characters (context_chars + continuation_chars); the longest has "
            f"{longest}: lower evaluate.context_chars / continuation_chars or add longer documents"
        )
    rng = random.Random(seed)
    order = rng.sample(questions_from, len(questions_from))
    seen: set[tuple[str, int]] = set()
    questions: list[dict[str, Any]] = []
    attempts = 0
    while len(questions) < num_examples:
        attempts += 1
        if attempts > num_examples * _MAX_DRAWS:
            raise DataError(f"only {len(questions)} distinct questions fit the validation split; lower evaluate.num_examples")
        doc = order[(attempts - 1) % len(order)]
        start, span = random_span(doc["text"], window, rng)
        if (str(doc["id"]), start) in seen:
            continue
        seen.add((str(doc["id"]), start))
        answer = span[context_chars:]
        choices = distractors(pool, str(doc["id"]), answer, num_choices - 1, continuation_chars, rng)
        label = rng.randrange(num_choices)
        choices.insert(label, answer)
        questions.append(
            {"id": f"{doc['id']}@{start}", "source": doc.get("source", ""), "question": span[:context_chars], "choices": choices, "label": label}
        )
    return questions
