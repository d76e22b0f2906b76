"""Nightly retraining on a JSONL source that grows, through the real pipeline flow (Spark, tokenizers,
DeepSpeed, a temporary Prefect server, MLflow on SQLite): the second night near-deduplicates only the
new documents against the index of the first and warm-starts pretraining; a third night with nothing
new reuses every phase."""

import json

import pytest

from flows.cli import main
from tests.phases.data.test_dedup_index import near_copy, paragraph, write

pytestmark = pytest.mark.e2e

PHASES = "data,model,pretrain"


def _config(tmp_path, src):
    path = tmp_path / "nightly.yaml"
    path.write_text(
        "base: tiny\nname: nightly-toy\nexperiment: nightly-toy\n"
        "data:\n  sources:\n"
        f"    - {{name: web, kind: jsonl, path: {json.dumps(str(src))}, weight: 1, license: CC0-1.0, quality_filters: false}}\n"
        "  max_epochs: 1\n  shards: 1\n  val_fraction: 0.1\n"
        "model: {vocab_size: 300, seq_len: 32, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, max_position_embeddings: 64}\n"
        "pretrain: {max_steps: 4, micro_batch_size: 4, warmup_steps: 1, eval_every: 2, eval_batches: 1, checkpoint_every: 2, on_new_data: warm_start}\n"
    )
    return path


def _run(cfg, capsys, *sets):
    code = main(["run", "--config", str(cfg), "--phases", PHASES, "--json", *[a for s in sets for a in ("--set", s)]])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:]
    out = captured.out
    return json.loads(out[out.index("{") :]), captured.out + captured.err


def test_a_second_night_dedups_only_new_documents_and_warm_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    src = tmp_path / "web.jsonl"
    night1 = [(f"a{i:03d}", paragraph(i)) for i in range(60)] + [(f"c{i:02d}", near_copy(paragraph(i), i)) for i in range(4)]
    write(src, night1)
    cfg = _config(tmp_path, src)

    first, _ = _run(cfg, capsys)
    assert not any(p["reused"] for p in first["phases"].values())
    # The team keeps the first night's tokenizer from now on, so that pretraining can warm-start.
    tokenizer = f"model.tokenizer_path={first['phases']['model']['uri']}/tokenizer"

    night2 = [(f"d{i:02d}", paragraph(500 + i)) for i in range(12)] + [("e00", near_copy(paragraph(7), 70))]
    write(src, night1 + night2)
    second, _ = _run(cfg, capsys, tokenizer)
    phases = second["phases"]
    assert not any(p["reused"] for p in phases.values())
    assert phases["data"]["why"].startswith("sources changed (web: 1 files, ")
    data = json.loads((tmp_path / "home" / "outputs" / "data" / phases["data"]["uri"].rsplit("/", 1)[1] / "manifest.json").read_text())
    nd = data["summary"]["near_dedup"]
    assert (nd["mode"], nd["indexed_docs"], nd["new_docs"], nd["docs"], nd["removed"]) == ("incremental", 64, 13, 13, 1)
    assert phases["data"]["headline"]["near_duplicates"] == 5  # 4 from the index's verdicts, e00 new
    pretrain = tmp_path / "home" / "outputs" / "pretrain" / phases["pretrain"]["uri"].rsplit("/", 1)[1]
    plan = json.loads((pretrain / "training_args.json").read_text())["checkpoint"]
    assert plan["mode"] == "warm" and phases["pretrain"]["why"].startswith("input model changed")

    third, _ = _run(cfg, capsys, tokenizer)
    assert all(p["reused"] for p in third["phases"].values())
    assert {n: p["uri"] for n, p in third["phases"].items()} == {n: p["uri"] for n, p in phases.items()}
