"""A quiet log (no bytecode disassembly under Prefect's print patch) and nested stage runs."""

import builtins
import sys

import pytest

from phases.config import AlignConfig


def test_trainer_setup_prints_no_disassembly_under_a_print_patch(monkeypatch, tmp_path, toy_pretrain):
    from datasets.fingerprint import Hasher
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phases.align.sft import make_trainer

    logged: list[str] = []
    real_print = builtins.print

    def print_as_log(*args, **kwargs):  # what Prefect's log_prints=True does to print
        if kwargs.get("file") in (None, sys.stdout, sys.stderr):
            logged.append(" ".join(map(str, args)))
            return
        real_print(*args, **kwargs)

    monkeypatch.setattr(builtins, "print", print_as_log)

    def transform(x):
        return len(x)

    Hasher.hash(transform)  # the control: datasets' fingerprinting disassembles through print
    assert any("LOAD_GLOBAL" in line for line in logged)
    logged.clear()

    tok = AutoTokenizer.from_pretrained(toy_pretrain)
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 2
    make_trainer(AlignConfig(max_length=64), AutoModelForCausalLM.from_pretrained(toy_pretrain), tok, rows, rows, str(tmp_path))
    assert not [line for line in logged if "LOAD_" in line or "RETURN_" in line], logged[:5]
    assert builtins.print is print_as_log  # restored


def test_mlflow_sink_nests_stage_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    from phases.metrics import ListSink, MlflowSink, TeeSink, nested

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("align-test", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    listed = ListSink()
    sink = TeeSink(MlflowSink(parent, uri), listed)
    with nested(sink, "sft") as child:
        child.log_params({"lr": 0.001})
        child.log_metrics({"train/loss": 2.0}, step=1)
    with pytest.raises(RuntimeError), nested(sink, "dpo") as child:
        child.log_params({"lr": 0.0005})  # a different value of the same param: fine in its own run
        raise RuntimeError("boom")
    runs = {r.info.run_name: r for r in client.search_runs([exp])}
    assert runs["sft"].data.tags["mlflow.parentRunId"] == parent and runs["sft"].info.status == "FINISHED"
    assert runs["sft"].data.metrics["train/loss"] == 2.0 and runs["sft"].data.params["lr"] == "0.001"
    assert runs["dpo"].info.status == "FAILED" and runs["dpo"].data.params["lr"] == "0.0005"
    assert listed.children["sft"].series("train/loss") == [2.0]


def test_progress_is_one_short_line_per_logged_step(caplog):
    import logging
    from types import SimpleNamespace

    from phases.align.tracking import sink_callback
    from phases.metrics import ListSink

    sink, history = ListSink(), []
    callback = sink_callback(sink, "dpo", history)
    state = SimpleNamespace(global_step=3, max_steps=10)
    with caplog.at_level(logging.INFO, logger="lifecycle.align"):
        callback.on_log(None, state, None, logs={"loss": 0.5, "rewards/accuracies": 0.75, "logps/chosen": -3.0, "epoch": 0.1})
        callback.on_log(None, state, None, logs={"train_runtime": 5.0, "train_loss": 0.4})  # the end summary: not a step
    assert caplog.messages == ["align dpo step 3/10 loss=0.5 rewards/accuracies=0.75"]
    assert {k for k, _, _ in sink.metrics} == {"train/loss", "rewards/accuracies", "logps/chosen", "train/epoch"}
    assert history == [{"step": 3, "train/loss": 0.5, "rewards/accuracies": 0.75, "logps/chosen": -3.0, "train/epoch": 0.1}]


@pytest.mark.e2e
def test_build_logs_stages_as_child_runs_of_the_phase_run(tmp_path, align_inputs):
    from mlflow.tracking import MlflowClient

    from phases.align.build import build
    from phases.metrics import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("align-phase", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name="align").info.run_id
    cfg = AlignConfig(method="sft", max_steps=3, batch_size=4, max_length=128, num_samples=2, sample_tokens=4)
    build(cfg, align_inputs, tmp_path / "out", MlflowSink(parent, uri))
    (child,) = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert child.info.run_name == "sft" and child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == [1, 2, 3]
    assert child.data.params["max_steps"] == "3" and "eval/loss" in child.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"align_samples.json", "align_capability.json"} <= artifacts
