"""Memorization probe: how much of its training data a model reproduces verbatim.

The extraction measure of Carlini et al. (2022, "Quantifying memorization across neural
language models"): prompt with the first ``prefix_tokens`` tokens of a training sequence,
greedy-decode ``suffix_tokens`` more, and count the sequence memorized when the decoded
suffix equals the true one. Only rows the run trained on can be memorized (a short run
sees a few per cent of the corpus), so windows are drawn from those rows, and half of them
from documents the data phase found duplicated: memorization grows with repetition, and
the report buckets the rates by duplicate count. Planted canaries (strings repeated in
the training data on purpose) are probed the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from phases.errors import DataError

DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")
BUCKETS = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6+", 6, None))
EXAMPLES = 5


def duplicate_counts(data_dir: Path) -> dict[str, int]:
    """Kept document id -> 1 + the duplicates of it that the data phase removed.

    Reads ``rejected/*.parquet``; a removed copy whose ``detail`` names another removed
    copy (an exact copy of a near duplicate) is credited to the document finally kept.
    Documents with no removed copy are absent (count 1); no ``rejected/`` gives ``{}``.
    """
    import pyarrow.parquet as pq

    files = sorted((Path(data_dir) / "rejected").glob("*.parquet"))
    if not files:
        return {}
    table = pa.concat_tables(pq.read_table(f, columns=["id", "reason", "detail"]) for f in files)
    kept_of = {
        i: d for i, r, d in zip(*(table.column(c).to_pylist() for c in ("id", "reason", "detail"))) if r in DUPLICATE_REASONS and d is not None
    }
    counts: dict[str, int] = {}
    for target in kept_of.values():
        hops = 0
        while target in kept_of and hops < len(kept_of):  # follow chains; a cycle would be a data phase bug
            target, hops = kept_of[target], hops + 1
        counts[target] = counts.get(target, 1) + 1
    return counts


def bucket(duplicates: int) -> str:
    """The report's duplicate-count bucket: "1", "2", "3-5" or "6+"."""
    return next(name for name, lo, hi in BUCKETS if duplicates >= lo and (hi is None or duplicates <= hi))


def _choose(rows: np.ndarray, duplicated: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Distinct rows, sorted: half from ``duplicated`` ones when there are any, the rest uniform over all."""
    rng = np.random.default_rng(seed)
    samples = min(samples, len(rows))
    pool = rows[duplicated]
    first = rng.choice(pool, size=min(len(pool), (samples + 1) // 2), replace=False) if len(pool) else pool
    rest = np.setdiff1d(rows, first)
    return np.sort(np.concatenate([first, rng.choice(rest, size=samples - len(first), replace=False)])).astype(np.int64)


def greedy_suffixes(model, prompts: np.ndarray, new_tokens: int, batch_size: int) -> np.ndarray:
    """``(n, new_tokens)`` greedy continuations of equal-length ``prompts`` via ``model.generate``.

    ``eos_token_id=None`` keeps decoding past an EOS (packed rows hold EOS between
    documents; ``min_new_tokens`` would forbid it and so change the greedy answer). A
    generation that still stops early is padded with -1, which never matches a token.
    """
    import torch

    out = np.full((len(prompts), new_tokens), -1, dtype=np.int64)
    device = getattr(model, "device", "cpu")
    for start in range(0, len(prompts), batch_size):
        ids = torch.as_tensor(np.asarray(prompts[start : start + batch_size], dtype=np.int64), device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
        got = gen[:, ids.shape[1] :].cpu().numpy()
        out[start : start + len(ids), : got.shape[1]] = got
    return out


def _rates(matches: np.ndarray) -> dict[str, float]:
    return {"exact_match_rate": float(matches.all(axis=1).mean()), "token_match_rate": float(matches.mean())}


def _base_id(doc_id: str) -> str:
    base, sep, copy = doc_id.rpartition("#")
    return base if sep and copy.isdigit() else doc_id


def probe(
    model,
    train_rows: np.ndarray,
    seen_rows: np.ndarray,
    docs_table: pa.Table,
    dup_counts: dict[str, int],
    *,
    samples: int,
    prefix_tokens: int,
    suffix_tokens: int,
    seed: int = 0,
    batch_size: int = 16,
    tokenizer=None,
) -> dict[str, Any]:
    """Extraction rates on ``samples`` windows at the start of the ``seen_rows`` of ``train_rows``.

    ``docs_table`` (id, source, start, length: token offsets in the flattened train stream)
    names the document holding each row's first token, whose ``dup_counts`` entry decides
    its bucket. A ``tokenizer`` adds the decoded text to the memorized examples. The overall
    rates are over the drawn windows, which over-represent duplicated documents whenever
    there are any: compare buckets rather than runs with different duplication.
    """
    seq_len = int(train_rows.shape[1])
    if prefix_tokens < 1 or suffix_tokens < 1 or prefix_tokens + suffix_tokens > seq_len:
        raise DataError(
            f"prefix_tokens={prefix_tokens} + suffix_tokens={suffix_tokens} must be positive and fit in a packed row of seq_len={seq_len}: lower them"
        )
    rows = np.unique(np.asarray(seen_rows, dtype=np.int64))
    if not len(rows) or samples < 1:
        raise DataError(f"nothing to probe: {len(rows)} rows seen, samples={samples}; train first or raise samples")
    if rows[-1] >= len(train_rows):
        raise DataError(f"seen row {rows[-1]} is beyond the {len(train_rows)} rows of train.bin: the pretraining output is from other data")
    ends = docs_table.column("start").to_numpy() + docs_table.column("length").to_numpy()
    ids, sources = docs_table.column("id").to_pylist(), docs_table.column("source").to_pylist()
    doc_of = np.searchsorted(ends, rows * seq_len, side="right")  # the document holding the row's first token
    # A mixed-in copy ("<id>#<n>", the data phase's upsampling) counts as its original document.
    dups = np.array([dup_counts.get(_base_id(ids[d]), 1) if d < len(ids) else 1 for d in doc_of])
    chosen = _choose(rows, dups > 1, samples, seed)
    where = np.searchsorted(rows, chosen)
    windows = np.asarray(train_rows[chosen, : prefix_tokens + suffix_tokens], dtype=np.int64)
    truth = windows[:, prefix_tokens:]
    matches = greedy_suffixes(model, windows[:, :prefix_tokens], suffix_tokens, batch_size) == truth
    names = np.array([bucket(int(n)) for n in dups[where]])
    by_duplicates = [
        {"bucket": name, "samples": int((names == name).sum()), **_rates(matches[names == name])} for name, _, _ in BUCKETS if (names == name).any()
    ]
    examples = []
    for i in np.nonzero(matches.all(axis=1))[0][:EXAMPLES]:
        d = int(doc_of[where[i]])
        example = {"row": int(chosen[i]), "doc_id": ids[d] if d < len(ids) else None, "source": sources[d] if d < len(ids) else None}
        example["duplicates"] = int(dups[where[i]])
        if tokenizer is not None:
            example["prefix_text"] = tokenizer.decode(windows[i, :prefix_tokens].tolist())
            example["suffix_text"] = tokenizer.decode(truth[i].tolist())
        examples.append(example)
    return {
        "samples": int(len(chosen)),
        "prefix_tokens": prefix_tokens,
        "suffix_tokens": suffix_tokens,
        **_rates(matches),
        "by_duplicates": by_duplicates,
        "examples": examples,
    }


def canary_probe(model, tokenizer, canaries: Sequence[str], *, prefix_tokens: int) -> list[dict[str, Any]]:
    """Per canary: prompt with its first ``prefix_tokens`` tokens (half of them for a canary
    no longer than that), greedy-decode the rest and compare."""
    results = []
    for canary in canaries:
        ids = np.asarray(tokenizer(canary, add_special_tokens=False)["input_ids"], dtype=np.int64)
        if len(ids) < 4:
            raise DataError(f"canary {canary[:60]!r} is {len(ids)} tokens; a canary needs at least 4 to split into prompt and answer")
        cut = prefix_tokens if prefix_tokens < len(ids) else len(ids) // 2
        matches = greedy_suffixes(model, ids[None, :cut], len(ids) - cut, batch_size=1)[0] == ids[cut:]
        exact = bool(matches.all())
        results.append(
            {"canary": canary[:60], "tokens": int(len(ids)), "exact_match": exact, "token_match_rate": float(matches.mean()), "memorized": exact}
        )
    return results


def canary_occurrences(train_texts: Iterable[str], canaries: Sequence[str]) -> list[int]:
    """How many training documents contain each canary (how often it was planted)."""
    counts = [0] * len(canaries)
    for text in train_texts:
        for i, canary in enumerate(canaries):
            counts[i] += canary in text
    return counts


def memorization_report(
    model,
    tokenizer,
    model_dir: Path,
    pretrain_dir: Path,
    data_dir: Path,
    *,
    samples: int,
    prefix_tokens: int,
    suffix_tokens: int,
    canaries: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The probe and the canaries for a pretraining output, from the phases' output directories."""
    import pyarrow.parquet as pq

    from phases.data.io import read_split
    from phases.model import artifact
    from phases.pretrain.seen import rows_seen

    seen, _ = rows_seen(pretrain_dir)
    docs_path = Path(model_dir) / "train_docs.parquet"
    if not docs_path.is_file():
        raise DataError(f"{model_dir} has no train_docs.parquet: point this at the model phase's output (or rerun it)")
    report = probe(
        model,
        artifact.rows(model_dir, "train"),
        seen,
        pq.read_table(docs_path, columns=["id", "source", "start", "length"]),
        duplicate_counts(data_dir),
        samples=samples,
        prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens,
        seed=seed,
        batch_size=batch_size,
        tokenizer=tokenizer,
    )
    report["rows_seen"] = int(len(np.unique(seen)))
    report["canaries"] = []
    if canaries:
        planted = canary_occurrences((r["text"] for r in read_split(data_dir, "train")), canaries)
        found = canary_probe(model, tokenizer, canaries, prefix_tokens=prefix_tokens)
        report["canaries"] = [{**c, "occurrences": n} for c, n in zip(found, planted)]
    return report
