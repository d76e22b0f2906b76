"""`lifecycle dedup` end to end on real Spark, including the incremental index."""

import json

import pyarrow.parquet as pq

from flows.cli import main

TEXT = (
    "the river rose over the old stone bridge in spring and the village waited for the water to fall "
    "before the engineers came to measure the damage to the arches and the railings along the road "
    "while the children watched from the hill and the baker handed out bread to everyone who had lost "
    "their kitchen to the flood and the mayor promised a new bridge before the next winter came"
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_dedup_command_and_incremental_index(tmp_path, capsys):
    first = tmp_path / "day1.jsonl"
    write_jsonl(
        first,
        [
            {"id": "a", "text": TEXT},
            {"id": "b", "text": TEXT.replace("spring", "april")},
            {"id": "c", "text": "an unrelated note about the weather and nothing else at all today"},
        ],
    )
    args = ["--spark-master", "local[1]", "--index", str(tmp_path / "index")]
    assert main(["dedup", "--input", str(first), "--output", str(tmp_path / "out1"), *args]) == 0
    clusters = {r["id"]: (r["cluster_id"], r["kept"]) for r in pq.read_table(tmp_path / "out1" / "clusters.parquet").to_pylist()}
    assert clusters == {"a": ("a", True), "b": ("a", False), "c": ("c", True)}
    assert sorted(pq.read_table(tmp_path / "out1" / "kept").column("id").to_pylist()) == ["a", "c"]

    # The next night: a near-duplicate of yesterday's kept document is removed, the old one stays kept.
    second = tmp_path / "day2.jsonl"
    write_jsonl(second, [{"id": "d", "text": TEXT.replace("village", "town")}, {"id": "e", "text": "something entirely new " * 5}])
    assert main(["dedup", "--input", str(second), "--output", str(tmp_path / "out2"), *args]) == 0
    clusters = {r["id"]: (r["cluster_id"], r["kept"]) for r in pq.read_table(tmp_path / "out2" / "clusters.parquet").to_pylist()}
    assert clusters == {"d": ("a", False), "e": ("e", True)}
    capsys.readouterr()
    assert main(["dedup", "--input", str(second), "--output", str(tmp_path / "out2"), *args]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["dedup", "--input", str(second), "--output", str(tmp_path / "out3"), "--threshold", "1.5"]) == 2
    assert "threshold" in capsys.readouterr().err
