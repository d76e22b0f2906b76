"""The scaling sweep flow: per-size configs, MLflow logging, the fit file (training faked)."""

from __future__ import annotations

import json

import pytest

from phases.config import load_config
from phases.pretrain.scaling import ScalingPoint, power_law


def test_point_config_scales_width_and_fixes_tokens():
    from flows.sweep import point_config

    cfg = load_config("tiny")
    per_step = cfg.pretrain.micro_batch_size * cfg.model.seq_len
    small, large = point_config("tiny", [], 64, 40 * per_step), point_config("tiny", [], 256, 40 * per_step)
    assert (small.model.hidden_size, small.model.num_heads, large.model.num_heads) == (64, 2, 8)
    assert small.pretrain.max_steps == large.pretrain.max_steps == 40
    assert small.pretrain.warmup_steps < small.pretrain.max_steps


def test_sweep_logs_points_and_writes_fit(tmp_path, monkeypatch):
    from flows import sweep

    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    seen = []

    def fake_trainer(cfg, home, mlf, exp_id, parent, tags):
        n = 1000 * cfg.model.hidden_size**2
        seen.append(cfg.model.hidden_size)
        return ScalingPoint(n, cfg.pretrain.max_steps * 2048, float(power_law(n, 2.0, 50.0, 0.3)))

    result = sweep.scaling_sweep.fn(config="tiny", sizes=[32, 64, 128, 256], tokens=100_000, trainer=fake_trainer)
    assert seen == [32, 64, 128, 256]
    assert (result["E"], result["alpha"]) == pytest.approx((2.0, 0.3), rel=1e-3)
    fit = json.loads((tmp_path / "home" / "scaling" / "fit.json").read_text())
    assert fit["E"] == pytest.approx(2.0, rel=1e-3) and len(fit["points"]) == 4

    from tasks import lineage

    mlf = lineage.client(tmp_path / "home")
    run = mlf.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["sizes"] == "32,64,128,256"
    assert run.data.metrics["fit/alpha"] == pytest.approx(0.3, rel=1e-3)
    assert len(mlf.get_metric_history(result["run_id"], "sweep/loss")) == 4
    artifacts = {a.path for a in mlf.list_artifacts(result["run_id"], "scaling")}
    assert artifacts == {"scaling/fit.json", "scaling/scaling_fit.png"}
