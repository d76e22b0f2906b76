"""Imports go one way: flows -> tasks -> phases. phases/ knows neither Prefect nor MLflow's fluent API."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# MLflow is reached from phases/ only through MlflowClient and its entities (the sink).
ALLOWED_MLFLOW = {"mlflow.tracking", "mlflow.entities"}


def imports_of(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def forbidden(names: list[str], roots: set[str]) -> list[str]:
    return [n for n in names if n.split(".")[0] in roots]


@pytest.mark.parametrize("path", sorted((ROOT / "phases").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_phases_import_no_orchestration(path):
    names = imports_of(path)
    assert not forbidden(names, {"prefect", "tasks", "flows"}), f"{path} imports {forbidden(names, {'prefect', 'tasks', 'flows'})}"
    fluent = [n for n in names if n.split(".")[0] == "mlflow" and n not in ALLOWED_MLFLOW]
    assert not fluent, f"{path} uses MLflow beyond MlflowClient: {fluent}"


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_tasks_do_not_import_flows(path):
    assert not forbidden(imports_of(path), {"flows"})


def test_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom prefect import task\n")
    assert forbidden(imports_of(bad), {"prefect"}) == ["prefect"]
    assert "mlflow" in imports_of(bad)
