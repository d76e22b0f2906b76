"""The CLI fails fast on bad input, before Prefect, Spark or torch are imported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


def run_cli(*args, home):
    env = {**os.environ, "LIFECYCLE_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([LIFECYCLE, *args], capture_output=True, text=True, env=env, timeout=120)


def test_bad_value_fails_with_one_line_naming_the_key(tmp_path):
    r = run_cli("run", "--set", "pretrain.lr=-1", home=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pretrain.lr=-1" in lines[0] and "greater than 0" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--phases", "data,trainz"], "unknown phase(s) trainz"),
        (["--config", "nope"], "presets: "),
        (["--set", "model.vocab_size=abc"], "model.vocab_size='abc'"),
    ],
)
def test_other_bad_input(args, needle, capsys):
    assert main(["run", *args]) == 2
    assert needle in capsys.readouterr().err


def test_dry_run_plans_every_phase(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    assert main(["run", "--dry-run", "--set", "pretrain.max_steps=20"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 20" in out
    rows = [
        line.split()[:2]
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0] in ("data", "model", "pretrain", "align", "inference", "evaluate") and "key=" in line
    ]
    assert rows == [[p, "run"] for p in ("data", "model", "pretrain", "align", "inference", "evaluate")]
    assert not (tmp_path / "outputs").exists()


def test_dry_run_of_a_subset_skips_later_phases(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    assert main(["run", "--dry-run", "--phases", "data,model"]) == 0
    out = capsys.readouterr().out
    assert "pretrain   skip" in out and "data       run" in out


def test_dry_run_skips_phases_no_selected_one_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    assert main(["run", "--dry-run", "--phases", "align,evaluate"]) == 0
    actions = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if "key=" in line}
    # evaluate reads align, pretrain, data and model, not inference: inference is not needed.
    assert actions == {"data": "missing", "model": "missing", "pretrain": "missing", "align": "run", "inference": "skip", "evaluate": "run"}


def test_dry_run_shows_what_a_budget_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    assert main(["run", "--dry-run", "--set", "model.budget_flops=8e9", "--set", "model.vocab_size=400", "--set", "model.seq_len=32"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("# budget"))
    # The tiny preset's batch: 16 sequences of 32 tokens a step; D = 8e9 / (6 N).
    assert "N=132,416 parameters" in line and "D=10,069 tokens" in line
    assert f"pretrain trains {-(-10_069 // (16 * 32))} steps" in line and "pretrain.max_steps=800" in line


def test_evaluate_names_a_model_that_does_not_exist(tmp_path, monkeypatch, capsys):
    """lifecycle evaluate resolves --model before Prefect starts or anything is built."""
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["evaluate", "--model", "models:/nope@champion"]) == 2
    assert "no registered model named 'nope'" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["evaluate", "--model", "models:/bad/uri/x"]) == 2
    assert "malformed" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "evaluations").exists()
