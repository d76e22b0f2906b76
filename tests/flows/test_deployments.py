"""The deployment file points at the real flow with parameters it accepts."""

import importlib
import inspect
from pathlib import Path

import yaml

from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_entrypoints_resolve():
    spec = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())
    assert spec["deployments"]
    for d in spec["deployments"]:
        path, _, name = d["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        params = inspect.signature(flow.fn).parameters
        assert set(d.get("parameters", {})) <= set(params), d["name"]
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"


def test_schedule_validates_the_config_first(capsys):
    assert main(["schedule", "--set", "pretrain.lr=0"]) == 2
    assert "pretrain.lr=0" in capsys.readouterr().err
