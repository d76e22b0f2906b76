"""The data phase's dedup index on real Spark: a later run on a grown source near-deduplicates only the
new documents against the earlier run's, keeps the earlier verdicts, and falls back to a full pass
(rebuilding the index) when an indexed document changed."""

import json
import random

import pyarrow.parquet as pq
import pytest

from phases.config import DataConfig, SourceConfig
from phases.data.build import build
from phases.data.near import index_dir
from phases.metrics import ListSink

WORDS = "river stone bridge market harvest winter garden lantern window copper meadow orchard signal ladder pocket thunder".split()


def paragraph(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(80))


def near_copy(text: str, seed: int) -> str:
    words = text.split()
    words[len(words) // 2 + seed % 7] = f"edited{seed}"  # one word of 80: Jaccard of 5-grams ~0.88
    return " ".join(words)


def write(path, rows):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))


NIGHT1 = [(f"a{i:02d}", paragraph(i)) for i in range(30)] + [(f"c{i:02d}", near_copy(paragraph(i), i)) for i in range(5)]
NIGHT2 = (
    [(f"d{i:02d}", paragraph(100 + i)) for i in range(10)]
    + [(f"e{i:02d}", near_copy(paragraph(5 + i), 50 + i)) for i in range(3)]  # near copies of indexed a05-a07
    + [("e03", near_copy(paragraph(100), 60))]  # a near copy of the new d00
    + [("0dup", paragraph(10))]  # an exact copy of the indexed a10, with an id that sorts before it
)


def _build(src, out, **kw):
    cfg = DataConfig(
        sources=(SourceConfig(name="web", kind="jsonl", path=str(src), quality_filters=False),),
        spark_master="local[1]",
        val_fraction=0.2,
        shards=1,
        **kw,
    )
    summary = build(cfg, {}, out, ListSink())
    rejected = pq.read_table(out / "rejected").to_pylist()
    removed = {r["id"].removeprefix("web/"): (r["reason"], r["detail"].removeprefix("web/")) for r in rejected}
    return cfg, summary, removed


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("LIFECYCLE_HOME", str(home))
    src = home / "web.jsonl"
    write(src, NIGHT1)
    first = _build(src, home / "night1")
    first_gens = sorted(g.name for g in index_dir(first[0]).glob("gen-*"))
    write(src, NIGHT1 + NIGHT2)
    second = _build(src, home / "night2")
    full = _build(src, home / "full", dedup_index=False)
    yield {"home": home, "src": src, "first": first, "first_gens": first_gens, "second": second, "full": full}
    mp.undo()


def test_the_first_run_deduplicates_everything_and_indexes_it(nights):
    cfg, summary, removed = nights["first"]
    assert summary["near_dedup"]["mode"] == "full" and summary["near_dedup"]["new_docs"] == 35
    assert removed == {f"c{i:02d}": ("near_duplicate", f"a{i:02d}") for i in range(5)}
    assert nights["first_gens"] == ["gen-00000"] and index_dir(cfg).parent.parent == nights["home"] / "index"


def test_a_grown_source_is_deduplicated_only_in_what_is_new(nights):
    cfg, summary, removed = nights["second"]
    nd = summary["near_dedup"]
    # 14 new unique documents (0dup is an exact copy, gone before near-dedup) against the 35 indexed.
    assert (nd["mode"], nd["indexed_docs"], nd["new_docs"], nd["docs"]) == ("incremental", 35, 14, 14)
    assert nd["indexed_generations"] == 1
    assert sorted(g.name for g in index_dir(cfg).glob("gen-*")) == ["gen-00000", "gen-00001"]
    near = {i: d for i, (r, d) in removed.items() if r == "near_duplicate"}
    assert near == {**{f"c{i:02d}": f"a{i:02d}" for i in range(5)}, "e00": "a05", "e01": "a06", "e02": "a07", "e03": "d00"}
    # An indexed document keeps its place: its new exact copy goes, though its id sorts first.
    assert removed["0dup"] == ("exact_duplicate", "a10")
    assert summary["read_docs"] == 50 and summary["train_docs"] + summary["validation_docs"] == 50 - 10


def test_incremental_removes_what_a_full_pass_removes(nights):
    _, full_summary, full_removed = nights["full"]
    _, _, removed = nights["second"]
    assert "mode" not in full_summary["near_dedup"]  # no index: the plain full pass
    near = lambda r: {i: d for i, (why, d) in r.items() if why == "near_duplicate"}  # noqa: E731
    assert near(removed) == near(full_removed)
    # The full pass keeps the smallest id of the exact copies instead: the one difference.
    assert full_removed["a10"] == ("exact_duplicate", "0dup")


def test_a_changed_indexed_document_rebuilds_the_index(nights):
    src, home = nights["src"], nights["home"]
    rows = NIGHT1 + NIGHT2
    rows[3] = (rows[3][0], paragraph(999))  # a03 rewritten
    write(src, rows)
    cfg, summary, removed = _build(src, home / "night3")
    nd = summary["near_dedup"]
    assert nd["mode"] == "full, index rebuilt" and "1 indexed documents changed" in nd["reason"]
    # Exact copies still keep the indexed one (a document kept stays kept).
    assert nd["new_docs"] == 49 and removed["0dup"] == ("exact_duplicate", "a10")
    assert [g.name for g in index_dir(cfg).glob("gen-*")] == ["gen-00000"]
    assert not list(index_dir(cfg).parent.glob(".*.rebuild")) and not list(index_dir(cfg).parent.glob(".*.old"))
