"""The evaluate phase end to end on toy artifacts: real lm-eval, real perplexity."""

import json
import math

import pytest
import toy_artifacts

from phases.config import EvaluateConfig
from phases.evaluate.build import build
from phases.evaluate.tasks import TASK_NAME
from phases.metrics import ListSink

pytestmark = pytest.mark.e2e

CFG = EvaluateConfig(num_examples=10, num_choices=3, context_chars=60, continuation_chars=20, perplexity_batches=2, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, toy_data, toy_pretrain, toy_packed):
    out = tmp_path_factory.mktemp("evaluate")
    sink = ListSink()
    inputs = {k: toy_artifacts.ref(k, p) for k, p in (("align", toy_pretrain), ("data", toy_data), ("model", toy_packed))}
    return build(CFG, inputs, out, sink), sink, out


def test_summary(evaluated):
    summary, _, _ = evaluated
    assert set(summary) == {"mc_acc", "mc_acc_norm", "val_perplexity", "chance_acc", "num_examples"}
    assert summary["num_examples"] == CFG.num_examples
    for key in ("mc_acc", "mc_acc_norm"):
        assert 0.0 <= summary[key] <= 1.0
        # An accuracy over 10 questions is a multiple of 1/10.
        assert summary[key] * CFG.num_examples == pytest.approx(round(summary[key] * CFG.num_examples))
    assert summary["chance_acc"] == pytest.approx(1 / 3)
    assert math.isfinite(summary["val_perplexity"]) and summary["val_perplexity"] > 1


def test_report_and_task_files(evaluated):
    summary, _, out = evaluated
    report = json.loads((out / "report.json").read_text())
    assert report["results"][TASK_NAME]["acc,none"] == summary["mc_acc"]
    assert report["n-samples"][TASK_NAME]["effective"] == CFG.num_examples
    lines = (out / "task" / "mc.jsonl").read_text().splitlines()
    assert len(lines) == CFG.num_examples and all(len(json.loads(x)["choices"]) == CFG.num_choices for x in lines)
    # The published YAML names the data file relatively: no staging path leaks into the output.
    assert str(out) not in (out / "task" / f"{TASK_NAME}.yaml").read_text()
    assert json.loads((out / "perplexity.json").read_text())["perplexity"] == summary["val_perplexity"]


def test_metrics_logged(evaluated):
    summary, sink, _ = evaluated
    for name, key in (
        ("eval/mc_acc", "mc_acc"),
        ("eval/mc_acc_norm", "mc_acc_norm"),
        ("eval/val_perplexity", "val_perplexity"),
        ("eval/chance_acc", "chance_acc"),
    ):
        assert sink.series(name) == [summary[key]]
    assert all("," not in name for name, _, _ in sink.metrics)
