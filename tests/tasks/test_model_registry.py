"""The aligned model registered with MLflow's transformers flavor loads back by alias, offline."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))  # toy_artifacts

import toy_artifacts  # noqa: E402

from tasks.model_registry import register_aligned_model  # noqa: E402


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data = toy_artifacts.make_data_dir(root / "data")
    return toy_artifacts.make_model_dir(root / "model", data)


def test_register_and_load_by_alias(tmp_path, toy_model, monkeypatch):
    import mlflow.pyfunc
    import mlflow.transformers
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # anything MLflow writes by default lands here, not in the repo
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("registry-test", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(exp, run_name="align").info.run_id

    assert register_aligned_model(uri, run_id, toy_model, "toy-llm") == "1"
    assert register_aligned_model(uri, run_id, toy_model, "toy-llm", alias="challenger") == "2"  # a new version each call
    mv = client.get_model_version_by_alias("toy-llm", "challenger")
    assert str(mv.version) == "2" and mv.run_id == run_id

    mlflow.set_tracking_uri(uri)
    try:
        generator = mlflow.transformers.load_model("models:/toy-llm@challenger")
        out = generator("def join(a, *p):", max_new_tokens=3, do_sample=False)
        assert out[0]["generated_text"].startswith("def join(a, *p):")
        pyfunc = mlflow.pyfunc.load_model("models:/toy-llm@challenger")
        assert len(pyfunc.predict(["import os"], params={"max_new_tokens": 2})) == 1
    finally:
        mlflow.set_tracking_uri(None)


def test_missing_model_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hugging Face model"):
        register_aligned_model(f"sqlite:///{tmp_path / 'm.db'}", "0" * 32, tmp_path, "x")
