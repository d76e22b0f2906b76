"""A failed flow names the failed phase and why, and leaves no MLflow run RUNNING."""

from flows.cli import main


def test_a_failed_phase_is_named_and_its_runs_are_closed(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # model alone on an empty home: its input, the data phase, was never built.
    assert main(["run", "--phases", "model"]) == 2
    err = capsys.readouterr().err
    assert "phase data failed: NotReadyError" in err and "add it to --phases" in err
    mlf = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlf.search_runs([mlf.get_experiment_by_name("llm-lifecycle").experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "phase data failed" in parent.data.tags["lifecycle.error"]
