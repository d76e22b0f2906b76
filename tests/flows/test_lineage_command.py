"""`lifecycle lineage models:/...` (or a run id) against a real MLflow SQLite store that the repo's own
writers filled: tasks.lineage (parent run, base tags), tasks.phases.run_in_child_run (each phase's
child run, inputs, manifest; the align phase's registration through tasks.model_registry) around
toy builds. If the writers and the reader disagree on a tag or an artifact, these tests fail."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))  # toy_artifacts

import toy_artifacts  # noqa: E402

from flows.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("data", "model", "pretrain", "align")
FLOW_RUNS = ("11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000")


def _toy_builds(cfg, toy_data: Path, toy_model: Path, tracking_uri: str):
    """Stand-ins for the heavy builds; the data one writes its source table as the data phase does."""
    from phases.metrics import write_table

    def data(section, inputs, out, sink):
        shutil.copytree(toy_data, out, dirs_exist_ok=True)
        table = [
            {
                "source": s.name,
                "kind": s.kind,
                "license": s.license,
                "weight": s.weight,
                "read": 10 + i,
                "selected": 5 + i,
                "share": 0.2,
                "train": 4 + i,
                "validation": 1,
            }
            for i, s in enumerate(section.sources)
        ]
        write_table(table, "source_shares.json", sink)
        return {
            "read_docs": sum(r["read"] for r in table),
            "train_docs": sum(r["train"] for r in table),
            "validation_docs": len(table),
            "sources": table,
        }

    def model(section, inputs, out, sink):
        (out / "tokenizer.json").write_text("{}")
        return {"vocab_size": 500}

    def weights(section, inputs, out, sink):
        shutil.copytree(toy_model, out, dirs_exist_ok=True)
        return {"final_loss": 5.0}

    return {"data": data, "model": model, "pretrain": weights, "align": weights}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two pipeline runs: the first builds data..align and registers toy-llm version 1, the second reuses all."""
    from prefect.logging import disable_run_logger
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from phases import registry
    from phases.config import load_config
    from phases.refs import PhaseRef
    from tasks import lineage
    from tasks import phases as task_phases

    root = tmp_path_factory.mktemp("lineage")
    home = root / "home"
    toy_data = toy_artifacts.make_data_dir(root / "toy-data")
    toy_model = toy_artifacts.make_model_dir(root / "toy-model", toy_data)
    cfg = load_config("tiny", ["align.register_as=toy-llm"])
    sources = PhaseRef("sources", "s" * 20, "python_stdlib;package_docs;package_licenses", "f" * 64, {})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # anything MLflow writes by default lands here
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        for name, build in _toy_builds(cfg, toy_data, toy_model, f"sqlite:///{home / 'mlflow.db'}").items():
            mp.setitem(registry.BY_NAME, name, dataclasses.replace(registry.BY_NAME[name], build=build))
        mp.setattr(task_phases, "publish_summary", lambda *a, **k: None)  # a Prefect artifact: needs a flow run
        mlf = lineage.client(home)
        exp = lineage.experiment_id(mlf, cfg.experiment, home)
        runs = []
        for flow_run_id in FLOW_RUNS:
            with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):  # the flow-run URL tag; nothing is called
                tags = lineage.base_tags(cfg, flow_run_id, lineage.git_commit(), deployment="nightly")
            parent = lineage.start_parent(mlf, exp, cfg, tags, list(PHASES))
            ctx = task_phases.LineageContext(home=str(home), experiment_id=exp, parent_run_id=parent, tags=tags)
            refs = {"sources": sources}
            with disable_run_logger():
                for name in PHASES:
                    spec = registry.BY_NAME[name]
                    inputs = {n: refs[n] for n in spec.inputs}
                    refs[name], _ = task_phases.run_in_child_run(name, cfg.section(name), inputs, spec.key(cfg.section(name), inputs), ctx)
            mlf.set_terminated(parent, "FINISHED")
            runs.append({"parent": parent, "refs": refs, "tags": tags})
    return {"home": home, "cfg": cfg, "runs": runs, "mlf": mlf}


def _lineage(store, monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setenv("LIFECYCLE_HOME", str(store["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["lineage", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_model_alias_traces_back_to_data_code_config_and_flow_run(store, monkeypatch, capsys):
    code, out, _ = _lineage(store, monkeypatch, capsys, "models:/toy-llm@challenger", "--json")
    assert code == 0
    r = json.loads(out)
    first = store["runs"][0]
    mlf = store["mlf"]
    align_run = mlf.get_run(mlf.get_model_version_by_alias("toy-llm", "challenger").run_id)

    assert r["model"]["name"] == "toy-llm" and r["model"]["version"] == "1" and r["model"]["aliases"] == ["challenger"]
    assert r["registered_by"]["run_id"] == align_run.info.run_id and r["registered_by"]["phase"] == "align"
    p = r["pipeline"]
    assert p["run_id"] == first["parent"] and p["status"] == "FINISHED" and p["phases_selected"] == list(PHASES)
    url = f"http://127.0.0.1:4200/runs/flow-run/{FLOW_RUNS[0]}"
    assert p["flow_run"] == {"id": FLOW_RUNS[0], "url": url, "url_recorded": True, "deployment": "nightly"}
    assert p["code"]["lock_digest"] == hashlib.sha256((ROOT / "constraints.txt").read_bytes()).hexdigest()
    assert p["code"]["git_commit"] == first["tags"]["mlflow.source.git.commit"] != "unknown"
    assert p["config"]["hash"] == store["cfg"].digest() and p["config"]["preset"] == "tiny"
    assert p["config"]["values"]["align"]["register_as"] == "toy-llm"

    phases = {ph["phase"]: ph for ph in r["phases"]}
    assert list(phases) == list(PHASES) and not any(ph["reused"] for ph in phases.values())
    refs = first["refs"]
    for name in PHASES:
        assert phases[name]["fingerprint"] == refs[name].fingerprint and phases[name]["output_uri"] == refs[name].uri
    # Each phase's inputs are the upstream outputs, by content digest.
    assert {(i["input"], i["digest"]) for i in phases["align"]["inputs"]} == {(n, refs[n].fingerprint[:36]) for n in ("pretrain", "data")}
    assert phases["data"]["inputs"] == [{"input": "sources", "dataset": f"sources-{'s' * 20}", "digest": "f" * 36, "uri": refs["sources"].uri}]
    sources = phases["data"]["data"]["sources"]
    assert [(s["source"], s["license"], s["read"], s["train"]) for s in sources] == [
        (s.name, s.license, 10 + i, 4 + i) for i, s in enumerate(store["cfg"].data.sources)
    ]
    assert phases["data"]["data"]["train_docs"] == sum(4 + i for i in range(len(sources)))


def test_text_output_and_the_other_forms_of_the_argument(store, monkeypatch, capsys):
    first = store["runs"][0]
    code, out, _ = _lineage(store, monkeypatch, capsys, "models:/toy-llm/1")
    assert code == 0
    assert out.startswith("models:/toy-llm/1 = version 1 of toy-llm (aliases: challenger)")
    assert f"pipeline run {first['parent']}" in out and f"flow run {FLOW_RUNS[0]}" in out and "deployment nightly" in out
    assert "licence PSF-2.0" in out and "source code (python_stdlib" in out

    by_alias = json.loads(_lineage(store, monkeypatch, capsys, "models:/toy-llm@challenger", "--json")[1])
    align_id = by_alias["registered_by"]["run_id"]
    for target in (align_id, first["parent"]):  # the align run, the pipeline (parent) run
        r = json.loads(_lineage(store, monkeypatch, capsys, target, "--json")[1])
        assert r["pipeline"]["run_id"] == first["parent"] and r["model"]["version"] == "1", target


def test_a_run_that_reused_everything_names_the_runs_that_built_it(store, monkeypatch, capsys):
    first, second = store["runs"]
    r = json.loads(_lineage(store, monkeypatch, capsys, second["parent"], "--json")[1])
    assert r["pipeline"]["flow_run"]["id"] == FLOW_RUNS[1]
    built = {ph["phase"]: ph["run_id"] for ph in json.loads(_lineage(store, monkeypatch, capsys, first["parent"], "--json")[1])["phases"]}
    for ph in r["phases"]:
        assert ph["reused"] and ph["built_by"]["run_id"] == built[ph["phase"]] and ph["built_by"]["pipeline_run_id"] == first["parent"]
        assert ph["built_by"]["flow_run_id"] == FLOW_RUNS[0]
    assert r["model"]["version"] == "1"  # registered by the run that built the align output


@pytest.mark.parametrize(
    "target, needle",
    [
        ("models:/toy-llm@nope", "has no alias 'nope'; its aliases: challenger"),
        ("models:/toy-llm/7", "has no version 7; its versions: 1"),
        ("models:/nope@champion", "no registered model named 'nope'"),
        ("models:/toy-llm/a/b", "malformed"),
        ("0" * 32, f"no MLflow run {'0' * 32}"),
        ("not-a-run", "give models:/NAME@ALIAS"),
    ],
)
def test_a_wrong_target_fails_with_one_line(store, monkeypatch, capsys, target, needle):
    code, out, err = _lineage(store, monkeypatch, capsys, target)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_an_empty_home_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["lineage", "models:/toy-llm@champion"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "mlflow.db").exists()
