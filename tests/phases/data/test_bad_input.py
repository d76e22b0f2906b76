"""A bad input corpus through the real data phase (Spark local[2]): over 1,000 good records among
binary, truncated and non-UTF-8 files, malformed JSON lines, giant lines, empty, hidden and vanishing
files, non-string texts, repeated ids and symbolic link loops. Every good record comes out; every
bad one is in rejected/ with its reason, file and line; the counts add up per source."""

import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phases.config import DataConfig, SourceConfig
from phases.data import build as data_build
from phases.data import sources as data_sources
from phases.data.normalize import normalize, text_hash
from phases.data.records import BLANK, parse_record
from phases.data.sources import list_local
from phases.metrics import ListSink

MAX_CHARS = 5000
SPLIT_BYTES = 256 * 1024  # small splits, so that a JSONL file spans several Spark partitions

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "qu", "ba", "de", "fi", "gu", "ha")


class Corpus:
    """Writes the files and remembers what each record must become."""

    def __init__(self, root):
        self.root = root
        self.rng = random.Random(17)
        self.good: dict[str, str] = {}  # id -> text (normalized) that must come out
        self.bad: set[tuple] = set()  # (source, "file:" path, line or None, reason)
        self.read: dict[str, int] = {}  # records per source the phase must count as read

    def text(self, words: int = 25) -> str:
        return " ".join("".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(2, 4))) for _ in range(words)) + "."

    def expect_bad(self, source, path, line, reason):
        self.bad.add((source, f"file:{path}", line, reason))
        self.read[source] = self.read.get(source, 0) + 1

    def expect_good(self, source, doc_id, text):
        self.good[f"{source}/{doc_id}"] = normalize(text)
        self.read[source] = self.read.get(source, 0) + 1

    def jsonl(self, name, entries, newline=b"\n", bom=False, pad=0):
        """entries: ("good", id, text) | ("bad", raw bytes, reason) | ("blank", raw bytes) | ("repeat", id, text, reason)."""
        path = self.root / "web" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, e in enumerate(entries, start=1):
            if e[0] == "good":
                lines.append(json.dumps({"id": e[1], "text": e[2], "meta": {"n": i, "pad": "." * pad}}).encode())
                self.expect_good("web", e[1], e[2])
            elif e[0] == "repeat":  # parsed fine, rejected later (duplicate id, exact duplicate)
                lines.append(json.dumps({"id": e[1], "text": e[2]}).encode())
                self.expect_bad("web", path, i, e[3])
            elif e[0] == "bad":
                lines.append(e[1])
                self.expect_bad("web", path, i, e[2])
            else:
                lines.append(e[1])
        data = newline.join(lines)
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data + (b"" if entries and entries[-1][0] == "bad" else newline))
        return path

    def note(self, rel, text=None, data=None, reason=None, stage_ok=True):
        path = self.root / "notes" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if data is not None else text.encode())
        if reason:
            self.expect_bad("notes", path, None, reason)
        elif stage_ok:
            self.expect_good("notes", rel, text)
        return path


def _goods(c: Corpus, prefix: str, n: int, words: int = 25):
    return [("good", f"{prefix}{i:03d}", c.text(words)) for i in range(n)]


def _smaller_hash_text(c: Corpus, than: str) -> str:
    """A different text that hashes below ``than``: the old rule (keep the smallest hash) would keep it."""
    while True:
        t = c.text()
        if text_hash(normalize(t)) < text_hash(normalize(than)):
            return t


def make_web(c: Corpus):
    w = c.root / "web"
    # part-000: strict JSON only; the repeated id's first record is late in the first file.
    e = _goods(c, "a", 110)
    first_w5 = e[104]
    e[5:5] = [
        ("bad", b"{'id': 'sq1', 'text': 'single quotes are not JSON at all, whatever Spark accepts by default'}", "malformed_json"),
        ("bad", json.dumps({"id": "tg1", "text": c.text()}).encode() + b" trailing garbage", "malformed_json"),
        ("bad", json.dumps({"id": "tg2", "text": c.text()}).encode() + json.dumps({"id": "tg3"}).encode(), "malformed_json"),
        ("bad", b'{"id": "tr1", "text": "a truncated obj', "malformed_json"),
        ("bad", b"42", "not_an_object"),
        ("bad", b'"a bare string that is long enough to pass as a document if it were one"', "not_an_object"),
        ("bad", b'["an", "array"]', "not_an_object"),
        ("bad", b"null", "not_an_object"),
        ("bad", b"true", "not_an_object"),
        ("bad", b'{"id": "nan1", "text": "' + c.text().encode() + b'", "score": NaN}', "malformed_json"),
        ("bad", b"NaN", "malformed_json"),
        ("bad", b'{"id": "inf1", "text": "x", "score": -Infinity}', "malformed_json"),
        ("bad", b'{"id": "tc1", "text": "a raw\ttab inside a string"}', "malformed_json"),
        ("blank", b""),
        ("blank", b"   \t "),
    ]
    c.jsonl("part-000.jsonl", e)
    # part-001: the text must be a string, the id a string or an integer.
    e = _goods(c, "b", 110)
    e[40:40] = [
        ("bad", json.dumps({"id": "arr", "text": ["an", "array", "of", "words"]}).encode(), "text_not_string"),
        ("bad", json.dumps({"id": "obj", "text": {"body": c.text()}}).encode(), "text_not_string"),
        ("bad", json.dumps({"id": "num", "text": 12345}).encode(), "text_not_string"),
        ("bad", json.dumps({"id": "boo", "text": True}).encode(), "text_not_string"),
        ("bad", json.dumps({"id": "nul", "text": None}).encode(), "missing_text"),
        ("bad", json.dumps({"id": "mis", "title": c.text()}).encode(), "missing_text"),
        ("bad", json.dumps({"id": {"nested": 1}, "text": c.text()}).encode(), "invalid_id"),
        ("bad", json.dumps({"id": 1.5, "text": c.text()}).encode(), "invalid_id"),
        ("good", 7, c.text()),  # an integer id is an id
    ]
    within = e[60]
    e.append(("repeat", within[1], _smaller_hash_text(c, within[2]), "duplicate_id"))  # the same id later in the same file
    c.jsonl("part-001.jsonl", e)
    # part-002: giant, short, undecodable and binary lines.
    e = _goods(c, "c", 110)
    e[70:70] = [
        ("bad", json.dumps({"id": "big", "text": "x" * (MAX_CHARS + 1)}).encode(), "too_long"),
        ("bad", json.dumps({"id": "short", "text": "too short"}).encode(), "too_short"),
        ("bad", b'{"id": "lat", "text": "caf\xe9 in Latin-1 is not UTF-8, whatever else the line holds"}', "invalid_utf8"),
        ("bad", b'{"id": "nul", "text": "a NUL \x00 byte in the middle of the line of a binary blob"}', "binary"),
        ("bad", b'{"id": "sur", "text": "a lone surrogate \\ud800 escape cannot be encoded as UTF-8 text"}', "invalid_utf8"),
        ("bad", b"[" * 100_000, "malformed_json"),  # nested too deep for the parser
    ]
    c.jsonl("part-002.jsonl", e)
    # part-003: CRLF line ends and blank lines count as lines.
    e = _goods(c, "d", 110)
    e[10:10] = [("blank", b""), ("blank", b""), ("bad", b'{"id": "crlf", "text": }', "malformed_json")]
    c.jsonl("part-003.jsonl", e, newline=b"\r\n")
    # part-004: a byte order mark before the first record.
    e = _goods(c, "e", 110)
    e[100:100] = [("bad", b'{"id": "e-bad" "text": "no comma"}', "malformed_json")]
    c.jsonl("part-004.jsonl", e, bom=True)
    # part-005: the repeated id early in a later file: the record in part-000 (line 120) stays.
    e = [("repeat", first_w5[1], _smaller_hash_text(c, first_w5[2]), "duplicate_id")] + _goods(c, "f", 110)
    c.jsonl("part-005.jsonl", e)
    # part-006: an exact copy of a text under another id (the smaller id keeps it).
    e = _goods(c, "g", 110)
    e.insert(50, ("repeat", "zz-copy", e[3][2] + "  \n\n", "exact_duplicate"))
    c.jsonl("part-006.jsonl", e)
    # part-007: long records (a field besides the text), a file over several Spark splits, bad lines in each.
    e = _goods(c, "h", 110)
    for at in (100, 70, 40, 10):
        e.insert(at, ("bad", b'{"id": "split-%d", "text": "unterminated' % at, "malformed_json"))
    big = c.jsonl("part-007.jsonl", e, pad=8000)
    assert big.stat().st_size > 3 * SPLIT_BYTES
    # A multi-MB line between good ones, also across splits.
    e = _goods(c, "i", 4)
    e[2:2] = [("bad", json.dumps({"id": "huge", "text": c.text(10) * 40_000}).encode(), "too_long")]
    e += [("bad", b"{'id': 'after-huge'}", "malformed_json"), *_goods(c, "j", 3)]
    c.jsonl("giant.jsonl", e)
    # Truncated file: the last record is cut, with no line end.
    c.jsonl("truncated.jsonl", _goods(c, "t", 5) + [("bad", json.dumps({"id": "t5", "text": c.text()}).encode()[:30], "malformed_json")])
    c.jsonl("part 2+x.jsonl", _goods(c, "p", 5) + [("bad", b"{oops}", "malformed_json"), *_goods(c, "q", 2)])
    c.jsonl("sub/part-100.jsonl", _goods(c, "s", 10))
    # Whole files that are bad.
    (w / "empty.jsonl").write_bytes(b"")
    c.expect_bad("web", w / "empty.jsonl", None, "empty_file")
    (w / "blank.jsonl").write_bytes(b"\n  \n\t\r\n")
    c.expect_bad("web", w / "blank.jsonl", None, "empty_file")
    blob = bytes(b for b in random.Random(3).randbytes(8192) if b not in (10, 13)) + b"\x00"
    (w / "binary.jsonl").write_bytes(blob)
    c.expect_bad("web", w / "binary.jsonl", 1, "binary")
    latin = w / "latin1.jsonl"
    latin.write_bytes(
        "\n".join(json.dumps({"id": f"l{i}", "text": f"déjà vu number {i} {c.text()}"}, ensure_ascii=False) for i in range(3)).encode("latin-1")
    )
    for i in range(3):
        c.expect_bad("web", latin, i + 1, "invalid_utf8")
    # Entries the phase does not read, each recorded.
    for name in (".hidden.jsonl", "_x.jsonl"):
        (w / name).write_text(json.dumps({"id": "hidden", "text": c.text()}) + "\n")
        c.expect_bad("web", w / name, None, "hidden_file")
    for name in ("_tmp", ".cache"):
        (w / name).mkdir()
        (w / name / "part.jsonl").write_text(json.dumps({"id": "hidden", "text": c.text()}) + "\n")
        c.expect_bad("web", w / name, None, "hidden_dir")
    (w / "README.md").write_text("not a JSONL file")
    c.expect_bad("web", w / "README.md", None, "wrong_suffix")
    os.symlink(".", w / "loop")
    c.expect_bad("web", w / "loop", None, "symlink_loop")
    os.symlink("self.jsonl", w / "self.jsonl")
    c.expect_bad("web", w / "self.jsonl", None, "symlink_loop")
    os.mkfifo(w / "fifo.jsonl")
    c.expect_bad("web", w / "fifo.jsonl", None, "not_a_file")
    # Files that disappear: one after the listing, one after Spark listed it (see the fixture).
    for name in ("vanish_before.jsonl", "vanish_during.jsonl"):
        (w / name).write_text("\n".join(json.dumps({"id": f"{name}-{i}", "text": c.text()}) for i in range(3)) + "\n")
        c.expect_bad("web", w / name, None, "file_vanished")


def make_notes(c: Corpus):
    n = c.root / "notes"
    texts = [c.text(100) for _ in range(100)]
    for i, t in enumerate(texts):
        c.note(f"n{i:03d}.txt" if i < 80 else f"sub/n{i:03d}.txt", t)
    c.note("empty.txt", data=b"", reason="empty_file")
    c.note("blob.bin", data=random.Random(5).randbytes(4096) + b"\x00", reason="binary")
    c.note("latin1.txt", data=("Les élèves " + c.text()).encode("latin-1"), reason="invalid_utf8")
    c.note("truncated.txt", data=("un café " + c.text()).encode()[:7], reason="invalid_utf8")  # cut inside "é"
    c.note("giant.txt", data=("y" * (MAX_CHARS + 1)).encode(), reason="too_long")
    c.note("huge.txt", data=(c.text() + "\n").encode() * 20_000, reason="too_long")
    c.note("short.txt", data=b"hello there", reason="too_short")
    c.note("zz_copy.txt", data=texts[0].encode(), reason="exact_duplicate")
    words = texts[50].split()
    words[40] = "different"
    c.note("zz_near.txt", data=" ".join(words).encode(), reason="near_duplicate")
    c.note(".x.txt", data=c.text().encode(), reason="hidden_file")
    c.note("_x.txt", data=c.text().encode(), reason="hidden_file")
    os.symlink("..", n / "sub" / "up")
    c.expect_bad("notes", n / "sub" / "up", None, "symlink_loop")
    os.symlink("/nonexistent/target.txt", n / "dangling.txt")
    c.expect_bad("notes", n / "dangling.txt", None, "broken_symlink")
    c.note("vanish_during.txt", data=c.text().encode(), reason="file_vanished")


def make_books(c: Corpus):
    b = c.root / "books"
    b.mkdir()
    texts = [c.text() for _ in range(20)]
    pq.write_table(pa.table({"id": [f"b{i:02d}" for i in range(20)] + ["b-null"], "text": texts + [None]}), b / "good.parquet")
    for i, t in enumerate(texts):
        c.expect_good("books", f"b{i:02d}", t)
    c.expect_bad("books", b / "good.parquet", 21, "missing_text")
    whole = (b / "good.parquet").read_bytes()
    (b / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    c.expect_bad("books", b / "truncated.parquet", None, "unreadable_file")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), b / "empty.parquet")
    c.expect_bad("books", b / "empty.parquet", None, "empty_file")
    (b / "_SUCCESS").write_bytes(b"")
    c.expect_bad("books", b / "_SUCCESS", None, "hidden_file")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    c = Corpus(tmp_path_factory.mktemp("bad_input"))
    make_web(c)
    make_notes(c)
    make_books(c)
    assert len(c.good) >= 1000
    return c


@pytest.fixture(scope="module")
def result(corpus, tmp_path_factory):
    from phases.data.spark import spark_session

    c = corpus
    good_per_source = {s: sum(1 for i in c.good if i.startswith(f"{s}/")) for s in ("web", "notes", "books")}
    # Weights in proportion to the good records: the mixture takes every one of them.
    sources = tuple(
        SourceConfig(name=name, kind=kind, path=str(c.root / name), weight=good_per_source[name], quality_filters=False)
        for name, kind in (("web", "jsonl"), ("notes", "text"), ("books", "parquet"))
    )
    cfg = DataConfig(sources=sources, spark_master="local[2]", min_chars=50, max_chars=MAX_CHARS, val_fraction=0.1, shards=1)
    # The phase's own session (build gets it back from getOrCreate, and stops it), with small splits.
    spark_session(cfg.spark_master, cfg.spark_driver_memory).conf.set("spark.sql.files.maxPartitionBytes", str(SPLIT_BYTES))

    real_listing, real_read = data_sources.source_listing, data_build.read_source

    def listing_then_delete(source):
        listing = real_listing(source)
        if source.name == "web":
            os.remove(c.root / "web" / "vanish_before.jsonl")  # listed, gone before Spark looks
        return listing

    def read_then_delete(spark, source):
        read = real_read(spark, source)
        for name in ("web/vanish_during.jsonl", "notes/vanish_during.txt"):
            if name.startswith(source.name + "/"):
                os.remove(c.root / name)  # Spark listed it, its scan has not run yet
        return read

    out = tmp_path_factory.mktemp("bad_input_out")
    sink = ListSink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_sources, "source_listing", listing_then_delete)
        mp.setattr(data_build, "read_source", read_then_delete)
        summary = data_build.build(cfg, {}, out, sink)
    return out, summary


def _rows(out, split):
    return pq.read_table(out / split).to_pylist()


def test_every_good_record_comes_out(corpus, result):
    out, summary = result
    kept = _rows(out, "train") + _rows(out, "validation")
    assert len(kept) == len({r["id"] for r in kept}) == len(corpus.good) == summary["train_docs"] + summary["validation_docs"]
    assert {r["id"]: r["text"] for r in kept} == corpus.good


def test_every_bad_record_is_quarantined_with_its_reason_file_and_line(corpus, result):
    out, _ = result
    rejected = _rows(out, "rejected")
    assert {(r["source"], r["location"], r["line"], r["reason"]) for r in rejected} == corpus.bad
    assert len(rejected) == len(corpus.bad)
    stages = {r["reason"]: r["stage"] for r in rejected}
    assert stages["too_short"] == "filter" and stages["exact_duplicate"] == stages["near_duplicate"] == "dedup"
    assert {s for r, s in stages.items() if r not in ("too_short", "exact_duplicate", "near_duplicate")} == {"quarantine"}
    by_place = {(r["location"].rsplit("/", 1)[-1], r["line"]): r for r in rejected}
    assert "Extra data" in by_place[("part-000.jsonl", 7)]["detail"]  # {...} trailing garbage
    assert by_place[("part-001.jsonl", 41)]["detail"] == "'text' is array"
    assert by_place[("part-002.jsonl", 73)]["detail"] == "byte 0xe9 at offset 26"


def test_strict_json_lets_no_lenient_parse_through(result):
    out, _ = result
    kept = {r["id"] for r in _rows(out, "train") + _rows(out, "validation")}
    lenient = {"sq1", "tg1", "tg2", "tg3", "tr1", "nan1", "inf1", "tc1", "arr", "obj", "num", "boo", "nul", "mis", "lat", "sur", "after-huge"}
    assert not {f"web/{i}" for i in lenient} & kept
    assert "web/7" in kept  # an integer id is an id


def test_a_repeated_id_keeps_the_first_record_in_file_order(corpus, result):
    out, _ = result
    texts = {r["id"]: r["text"] for r in _rows(out, "train") + _rows(out, "validation")}
    assert texts["web/a104"] == corpus.good["web/a104"] and texts["web/b051"] == corpus.good["web/b051"]
    dups = {r["location"].rsplit("/", 1)[-1]: r for r in _rows(out, "rejected") if r["reason"] == "duplicate_id"}
    web = f"file:{corpus.root / 'web'}"
    assert dups["part-005.jsonl"]["id"] == "web/a104" and dups["part-005.jsonl"]["detail"] == f"kept {web}/part-000.jsonl:120"
    assert dups["part-001.jsonl"]["id"] == "web/b051" and dups["part-001.jsonl"]["detail"] == f"kept {web}/part-001.jsonl:61"


def test_counts_add_up_per_source(corpus, result):
    _, summary = result
    rows = {r["source"]: r for r in summary["sources"]}
    for source, row in rows.items():
        assert row["read"] == corpus.read[source]
        assert row["read"] == row["kept"] + row["quarantined"] + row["filtered"] + row["deduplicated"], source
        assert row["kept"] == row["train"] + row["validation"]
    assert (
        summary["read_docs"]
        == summary["unique_docs"] + summary["quarantined"] + summary["filtered"] + summary["exact_duplicates"] + summary["near_duplicates"]
    )
    assert sum(r["count"] for r in summary["rejected_by_reason"] if r["reason"] == "file_vanished") == 3


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"{'a': 1}", "malformed_json"),
        (b'{"text": "x"} junk', "malformed_json"),
        (b'{"text": "x", "n": NaN}', "malformed_json"),
        (b'{"text": "x"', "malformed_json"),
        (b"3.5", "not_an_object"),
        (b'{"text": ["x"]}', "text_not_string"),
        (b'{"text": null}', "missing_text"),
        (b'{"id": [1], "text": "x"}', "invalid_id"),
        (b'{"text": "\xff"}', "invalid_utf8"),
        (b'{"text": "\\udfff"}', "invalid_utf8"),
        (b'{"text": "a\x00b"}', "binary"),
    ],
)
def test_parse_record_refuses(line, reason):
    assert parse_record(line, "text", "id").reason == reason


def test_parse_record_accepts_strict_json():
    assert parse_record(b'\xef\xbb\xbf{"id": 3, "text": "caf\\u00e9"}', "text", "id", first_line=True)[:3] == ("3", "café", None)
    assert parse_record(b'{"text": "x", "id": ""}', "text", "id").doc_id is None
    assert parse_record(b"  \t", "text", "id") is BLANK


def test_listing_records_what_it_does_not_read(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "_b.jsonl").write_text("{}\n")
    os.symlink(tmp_path, tmp_path / "again")
    listing = list_local(SourceConfig(name="s", kind="jsonl", path=str(tmp_path)))
    assert listing.files == [tmp_path / "a.jsonl"]
    assert sorted(listing.skipped) == [(str(tmp_path / "_b.jsonl"), "hidden_file"), (str(tmp_path / "again"), "symlink_loop")]
