"""Lineage of a pretrained model: the rows its steps trained on, and the documents in them."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from phases.pretrain.loop import PackedSequences
from phases.pretrain.seen import documents_seen, rows_to_documents

SEQ = 4


def row_numbered_bin(path, rows):
    """Row i holds token i everywhere, so a batch's content names its rows."""
    np.repeat(np.arange(rows, dtype=np.uint16), SEQ).tofile(path)
    return {"dtype": "uint16", "seq_len": SEQ}


@pytest.mark.parametrize("world, micro, accum, steps", [(1, 4, 1, 7), (2, 3, 2, 9), (3, 2, 1, 30)])
def test_rows_seen_matches_the_batches_the_ranks_train_on(tmp_path, world, micro, accum, steps):
    meta = row_numbered_bin(tmp_path / "train.bin", 50)
    streams = [PackedSequences(tmp_path / "train.bin", meta, rank=r, world_size=world, seed=7).train_batches(micro) for r in range(world)]
    trained = set()
    for _ in range(steps * accum):  # several epochs for the larger cases
        for s in streams:
            trained |= set(next(s)[:, 0].tolist())
    seen = PackedSequences(tmp_path / "train.bin", meta, rank=0, world_size=world, seed=7).rows_seen(micro, accum, steps)
    assert len(seen) == steps * micro * accum * world
    assert set(seen.tolist()) == trained


def test_rows_map_to_the_documents_they_contain():
    lengths = [3, 9, 1, 1, 6, 2]  # tokens per document including its EOS
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    docs = pa.table({"id": [f"d{i}" for i in range(6)], "source": ["a", "b", "a", "b", "a", "b"], "start": starts, "length": lengths})
    rows = np.array([0, 2, 2, 5])  # rows past the data are simply empty
    got = rows_to_documents(docs, rows, SEQ)
    expected = {}
    for r in rows:
        for i, (s, n) in enumerate(zip(starts, lengths)):
            if s < (r + 1) * SEQ and s + n > r * SEQ:
                expected[f"d{i}"] = expected.get(f"d{i}", 0) + 1
    assert dict(zip(got.column("id").to_pylist(), got.column("rows").to_pylist())) == expected


def test_documents_seen_from_a_pretraining_output(tmp_path, capsys):
    model, out = tmp_path / "model", tmp_path / "pretrain"
    model.mkdir(), out.mkdir()
    meta = row_numbered_bin(model / "train.bin", 12)
    (model / "packed.json").write_text(json.dumps(meta))
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(12)], "source": ["x"] * 12, "start": np.arange(12) * SEQ, "length": [SEQ] * 12}),
        model / "train_docs.parquet",
    )
    pretrain = {"micro_batch_size": 2, "grad_accum": 1, "num_gpus": 1, "num_nodes": 1, "seed": 3, "max_steps": 5, "warmup_steps": 1}
    (out / "training_args.json").write_text(json.dumps({"pretrain": pretrain, "model_dir": str(model)}))
    (out / "summary.json").write_text(json.dumps({"steps": 5}))
    table, info = documents_seen(out, steps=3)
    assert info["rows"] == 6 and table.num_rows == 6  # one document per row here
    assert set(table.column("id").to_pylist()) == {f"d{r}" for r in PackedSequences(model / "train.bin", meta, 0, 1, 3).rows_seen(2, 1, 3)}
    assert main(["lineage", str(out), "--step", "9"]) == 2
    assert "outside the run's 0..5 steps" in capsys.readouterr().err
