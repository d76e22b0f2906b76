"""The data phase on real Spark (local[1]) over small files with every kind of bad input."""

import json

import pyarrow.parquet as pq
import pyarrow as pa
import pytest

from phases.config import DataConfig, SourceConfig
from phases.data.prepare import build
from phases.data.sources import fingerprint_sources
from phases.errors import DataError
from phases.metrics import ListSink

LONG = " is a sentence long enough to pass the minimum length filter of the test."


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    web = root / "web.jsonl"
    lines = [json.dumps({"id": f"w{i}", "text": f"web document {i}{LONG}"}) for i in range(4)]
    lines += [
        '{"id": "broken", "text": "no closing quote}',            # malformed JSON
        json.dumps({"id": "notext", "title": "x"}),                 # no text field
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
    books = root / "books.parquet"
    pq.write_table(pa.table({"id": ["b1", "b2"], "text": [f"book one{LONG}", f"book two{LONG}"]}), books)
    sources = (
        SourceConfig(name="web", kind="jsonl", path=str(web), weight=4),
        SourceConfig(name="notes", kind="text", path=str(notes), weight=2),
        SourceConfig(name="books", kind="parquet", path=str(books), weight=2, license="CC-BY"),
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
    assert kept == {"web/w0", "web/w1", "web/w2", "web/w3", "notes/a.txt", "notes/b.txt", "books/b1", "books/b2"}
    assert summary["train_docs"] + summary["validation_docs"] == 8


def test_bad_records_are_quarantined_with_reasons(result):
    out, summary, _ = result
    rejected = pq.read_table(out / "rejected").to_pylist()
    reasons = {(r["source"], r["reason"]) for r in rejected}
    assert {("web", "malformed_json"), ("web", "missing_text"), ("web", "invalid_utf8"), ("web", "exact_duplicate"),
            ("web", "too_short"), ("notes", "binary"), ("notes", "empty_file")} <= reasons
    dup = next(r for r in rejected if r["reason"] == "exact_duplicate")
    assert dup["id"] == "web/w0dup" and dup["detail"] == "web/w0"
    assert all(r["location"] for r in rejected)
    assert summary["read_docs"] == summary["quarantined"] + summary["filtered"] + summary["exact_duplicates"] + summary["unique_docs"]


def test_counts_shares_and_licences(result):
    _, summary, sink = result
    rows = {r["source"]: r for r in summary["sources"]}
    assert rows["web"]["share"] == 0.5 and rows["books"]["license"] == "CC-BY"
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
