"""The data phase on real Spark (local[1]) over small files with every kind of bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phases.config import DataConfig, SourceConfig
from phases.data.build import build
from phases.data.sources import fingerprint_sources
from phases.errors import DataError
from phases.metrics import ListSink

LONG = " is a sentence long enough to pass the minimum length filter of the test."
PARAGRAPH = (
    "The committee met on a grey morning to discuss the repairs to the old stone bridge over the river, "
    "which had been closed since the spring floods damaged two of its arches and washed away the railings. "
    "Engineers presented three options, each with different costs, timelines and effects on the traffic "
    "that now crowds the narrow road through the village centre every afternoon."
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    web = root / "web.jsonl"
    lines = [json.dumps({"id": f"w{i}", "text": f"web document {i}{LONG}"}) for i in range(3)]
    lines.append(json.dumps({"id": "w3", "text": f"web document 3 by jane.doe@example.org{LONG}"}))
    lines.append(json.dumps({"id": "n1", "text": PARAGRAPH}))
    lines.append(json.dumps({"id": "n2", "text": PARAGRAPH.replace("bridge", "viaduct")}))  # a near-duplicate of n1
    lines += [
        '{"id": "broken", "text": "no closing quote}',  # malformed JSON
        json.dumps({"id": "notext", "title": "x"}),  # no text field
        json.dumps({"id": "w0dup", "text": f"web document 0{LONG}  \r\n\n"}),  # exact dup after normalization
        json.dumps({"id": "tiny", "text": "too short"}),
    ]
    web.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "latin", "text": "caf\xe9 ' + LONG.encode() + b'"}\n')
    notes = root / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text(f"note a{LONG}")
    (notes / "b.txt").write_text(f"note b{LONG}")
    (notes / "empty.txt").write_text("")
    (notes / "blob.txt").write_bytes(b"\x00\x01\x02binary" * 20)
    prose = root / "prose"
    prose.mkdir()
    (prose / "good.txt").write_text(
        "The farmer walks to the mill and talks with the miller about the harvest. Later the family shares stories "
        "about weather, neighbours, markets, prices and the long road into town, where the old bridge was rebuilt "
        "last spring after the flood carried the wooden one away. Children still argue over whose turn it is to "
        "feed the goats, and grandmother insists that the pears ripen best in the attic."
    )
    (prose / "list.txt").write_text("\n".join(f"- item {i} of a list that is nothing but bullets" for i in range(12)))
    books = root / "books.parquet"
    pq.write_table(pa.table({"id": ["b1", "b2"], "text": [f"book one{LONG}", f"book two{LONG}"]}), books)
    sources = (
        SourceConfig(name="web", kind="jsonl", path=str(web), weight=5, quality_filters=False),
        SourceConfig(name="notes", kind="text", path=str(notes), weight=2, quality_filters=False),
        SourceConfig(name="books", kind="parquet", path=str(books), weight=2, license="CC-BY", quality_filters=False),
        SourceConfig(name="prose", kind="text", path=str(prose), weight=1),
    )
    return root, sources


@pytest.fixture(scope="module")
def result(corpus, tmp_path_factory):
    _, sources = corpus
    cfg = DataConfig(sources=sources, spark_master="local[1]", min_chars=40, val_fraction=0.25, shards=1)
    out = tmp_path_factory.mktemp("data_out")
    sink = ListSink()
    summary = build(cfg, {}, out, sink)
    return out, summary, sink


def _ids(path):
    return set(pq.read_table(path).column("id").to_pylist())


def test_every_good_record_goes_through(result):
    out, summary, _ = result
    kept = _ids(out / "train") | _ids(out / "validation")
    assert kept == {"web/w0", "web/w1", "web/w2", "web/w3", "web/n1", "notes/a.txt", "notes/b.txt", "books/b1", "books/b2", "prose/good.txt"}
    assert summary["train_docs"] + summary["validation_docs"] == 10


def test_pii_is_redacted_and_counted(result):
    out, summary, _ = result
    texts = pq.read_table(out / "train").to_pylist() + pq.read_table(out / "validation").to_pylist()
    w3 = next(r["text"] for r in texts if r["id"] == "web/w3")
    assert "<EMAIL>" in w3 and "jane.doe" not in w3
    assert next(r for r in summary["sources"] if r["source"] == "web")["pii_email"] == 1


def test_bad_records_are_quarantined_with_reasons(result):
    out, summary, _ = result
    rejected = pq.read_table(out / "rejected").to_pylist()
    reasons = {(r["source"], r["reason"]) for r in rejected}
    assert {
        ("web", "malformed_json"),
        ("web", "missing_text"),
        ("web", "invalid_utf8"),
        ("web", "exact_duplicate"),
        ("web", "too_short"),
        ("notes", "binary"),
        ("notes", "empty_file"),
        ("prose", "gopher_bullet_lines"),
    } <= reasons
    dup = next(r for r in rejected if r["reason"] == "exact_duplicate")
    assert dup["id"] == "web/w0dup" and dup["detail"] == "web/w0"
    near = [r for r in rejected if r["reason"] == "near_duplicate"]
    assert [(r["id"], r["detail"]) for r in near] == [("web/n2", "web/n1")]
    assert summary["near_dedup"]["cluster_sizes"] == {2: 1}
    assert all(r["location"] for r in rejected)
    assert summary["read_docs"] == (
        summary["quarantined"] + summary["filtered"] + summary["exact_duplicates"] + summary["near_duplicates"] + summary["unique_docs"]
    )


def test_counts_shares_and_licences(result):
    _, summary, sink = result
    rows = {r["source"]: r for r in summary["sources"]}
    assert rows["web"]["share"] == round(5 / 10, 4) and rows["books"]["license"] == "CC-BY"
    assert any(path.endswith("dedup_cluster_sizes.png") for path, _ in sink.artifacts)
    assert sink.series("train_docs") == [summary["train_docs"]]


def test_missing_source_is_named(tmp_path):
    with pytest.raises(DataError, match="'gone'.*does not exist"):
        fingerprint_sources([SourceConfig(name="gone", kind="jsonl", path=str(tmp_path / "nope.jsonl"))])


def test_fingerprint_follows_the_files(corpus):
    root, sources = corpus
    before, _ = fingerprint_sources(sources)
    assert fingerprint_sources(sources)[0] == before
    (root / "notes" / "c.txt").write_text(f"note c{LONG}")
    try:
        assert fingerprint_sources(sources)[0] != before
    finally:
        (root / "notes" / "c.txt").unlink()


def test_scarce_source_is_up_sampled_within_the_cap(corpus, tmp_path):
    _, sources = corpus
    # books (2 documents) wants half of the mixture: with 2 epochs allowed, each book appears twice.
    reweighted = tuple(s.model_copy(update={"weight": {"web": 1, "notes": 1, "books": 4, "prose": 0.5}[s.name]}) for s in sources)
    # (web keeps 5 of its documents after near-dedup; shares below hold whatever the others hold.)
    cfg = DataConfig(sources=reweighted, spark_master="local[2]", min_chars=40, val_fraction=0.25, shards=1, max_epochs=2)
    summary = build(cfg, {}, tmp_path, ListSink())
    rows = {r["source"]: r for r in summary["sources"]}
    assert rows["books"]["epochs"] == 2.0 and rows["books"]["repeated_docs"] == 2
    kept = {split: _ids(tmp_path / split) for split in ("train", "validation")}
    for book in ("books/b1", "books/b2"):
        # A copy lands on the same side of the split as its original.
        assert any(book in ids and f"{book}#1" in ids for ids in kept.values())


def test_same_data_same_fingerprint_across_partition_counts(corpus, result, tmp_path):
    """The content digest and the shard files do not depend on Spark's partitioning."""
    from phases.data.build import content_digest

    out, summary, _ = result
    _, sources = corpus
    cfg = DataConfig(sources=sources, spark_master="local[2]", min_chars=40, val_fraction=0.25, shards=1)
    again = tmp_path / "again"
    again.mkdir()
    build(cfg, {}, again, ListSink())
    assert content_digest(again) == content_digest(out)
    assert pq.read_table(again / "train").to_pylist() == pq.read_table(out / "train").to_pylist()
