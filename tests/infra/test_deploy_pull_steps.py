"""infra/prefect.yaml's pull steps, run the way a flow run runs them, with LIFECYCLE_REPO unset,
wrong and right. The steps themselves are Prefect's: only the look-ups of Prefect variables and
blocks, which need an API and which these steps do not use, are left out."""

import asyncio
import json
import os
from pathlib import Path

import pytest
import yaml
from prefect.deployments.steps import core
from prefect.utilities.templating import PlaceholderType, find_placeholders

ROOT = Path(__file__).resolve().parents[2]
PULL = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())["pull"]


async def _no_api(template, *args, **kwargs):
    return template


@pytest.fixture
def run_pull(monkeypatch):
    monkeypatch.setattr(core, "resolve_variables", _no_api)
    monkeypatch.setattr(core, "resolve_block_document_references", _no_api)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)  # no events to emit
    cwd = os.getcwd()
    yield lambda: asyncio.run(core.run_steps(PULL, print_function=lambda *a, **k: None))
    os.chdir(cwd)


def test_the_steps_need_no_api():
    """What the fixture skips would have nothing to resolve."""
    kinds = {p.type for p in find_placeholders(json.dumps(PULL))}
    assert kinds <= {PlaceholderType.ENV_VAR}, kinds


def _failure(run) -> str:
    with pytest.raises(core.StepExecutionError) as err:
        run()
    return str(err.value.__cause__)


def test_unset_lifecycle_repo_fails_naming_it(run_pull, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_REPO", raising=False)
    message = _failure(run_pull)
    assert 'LIFECYCLE_REPO="" is not an llm-lifecycle checkout' in message
    assert "environment of the worker" in message


def test_a_directory_that_is_no_checkout_fails_naming_it(run_pull, monkeypatch, tmp_path):
    monkeypatch.setenv("LIFECYCLE_REPO", str(tmp_path))
    assert f'LIFECYCLE_REPO="{tmp_path}" is not an llm-lifecycle checkout' in _failure(run_pull)


def test_the_checkout_becomes_the_working_directory(run_pull, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_REPO", str(ROOT))
    outputs = run_pull()
    assert outputs["directory"] == str(ROOT) == os.getcwd()
    entrypoints = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())["deployments"]
    for d in entrypoints:  # the entrypoints are relative to that directory
        assert (ROOT / d["entrypoint"].partition(":")[0]).is_file(), d["name"]
