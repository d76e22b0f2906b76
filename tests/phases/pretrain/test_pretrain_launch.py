"""The pure parts of launching: the command line, the child env, input checks, data sharding."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from phases.config import PretrainConfig
from phases.errors import DataError
from phases.metrics import ListSink
from phases.model.artifact import check as check_model_dir
from phases.pretrain.build import ENTRY_MODULE, child_env, launcher_command, replay_metrics


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_launcher_command_single_node():
    cmd = launcher_command(PretrainConfig(num_gpus=2), ["--args", "/x/training_args.json"], 12345)
    assert cmd[0] == sys.executable
    assert cmd[cmd.index("-m") + 1] == "deepspeed.launcher.runner"
    assert _flag(cmd, "--num_gpus") == "2"
    assert _flag(cmd, "--num_nodes") == "1"
    assert _flag(cmd, "--master_port") == "12345"
    assert "--hostfile" not in cmd
    # Launcher flags come before the entry; the entry's own args after it.
    assert cmd[-4:] == ["--module", ENTRY_MODULE, "--args", "/x/training_args.json"]


def test_launcher_command_multi_node_uses_hostfile():
    cmd = launcher_command(PretrainConfig(num_gpus=8, num_nodes=2, hostfile="/etc/ds/hostfile"), [], 29501)
    assert _flag(cmd, "--num_nodes") == "2"
    assert _flag(cmd, "--num_gpus") == "8"
    assert _flag(cmd, "--hostfile") == "/etc/ds/hostfile"
    assert cmd.index("--hostfile") < cmd.index("--module")


def test_launcher_args_parse_with_deepspeeds_own_parser():
    from deepspeed.launcher.runner import parse_args

    cmd = launcher_command(PretrainConfig(num_gpus=2, num_nodes=2, hostfile="h"), ["--args", "a.json"], 29501)
    args = parse_args(cmd[cmd.index("deepspeed.launcher.runner") + 1 :])
    assert (args.num_gpus, args.num_nodes, args.master_port, args.hostfile) == (2, 2, 29501, "h")
    assert args.module and args.user_script == ENTRY_MODULE and args.user_args == ["--args", "a.json"]


def test_child_env_is_offline_and_carries_the_sink_run():
    class RunSink(ListSink):
        def subprocess_env(self):
            return {"MLFLOW_RUN_ID": "abc", "MLFLOW_TRACKING_URI": "sqlite:///m.db"}

    env = child_env(RunSink())
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["MLFLOW_RUN_ID"] == "abc" and env["MLFLOW_TRACKING_URI"] == "sqlite:///m.db"


def test_check_model_dir_names_missing_and_truncated_files(model_phase_dir, tmp_path):
    check_model_dir(model_phase_dir)
    broken = tmp_path / "broken"
    shutil.copytree(model_phase_dir, broken)
    (broken / "val.bin").write_bytes((broken / "val.bin").read_bytes()[:-3])
    with pytest.raises(DataError, match="val.bin"):
        check_model_dir(broken)
    (broken / "train.bin").unlink()
    with pytest.raises(DataError, match="train.bin"):
        check_model_dir(broken)


def test_replay_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"t": 0, "step": 1, "metrics": {"train/loss": 5.0}},
                {"t": 0, "params": {"a": 1}},
                {"t": 0, "step": 2, "metrics": {"train/loss": 4.0, "val/loss": 4.5}},
            ]
        )
    )
    sink = ListSink()
    replay_metrics(path, sink)
    assert sink.series("train/loss") == [5.0, 4.0] and sink.series("val/loss") == [4.5]


def test_global_batches_do_not_depend_on_the_rank_layout(model_phase_dir):
    """Optimizer step k sees the same rows with 1 rank x 2 accumulation steps as with 2 ranks x 1."""
    from phases.pretrain.loop import PackedSequences

    meta = json.loads((model_phase_dir / "packed.json").read_text())

    def step_rows(world: int, accum: int, micro: int, steps: int) -> list[set]:
        streams = [PackedSequences(model_phase_dir / "train.bin", meta, r, world, seed=3).train_batches(micro) for r in range(world)]
        out = []
        for _ in range(steps):
            rows = [tuple(row.tolist()) for _ in range(accum) for s in streams for row in next(s)]
            out.append(set(rows))
        return out

    assert step_rows(1, 2, 4, steps=80) == step_rows(2, 1, 4, steps=80) == step_rows(4, 1, 2, steps=80)
    # Different ranks never see the same row within an epoch.
    a, b = (next(PackedSequences(model_phase_dir / "train.bin", meta, r, 2, seed=3).train_batches(8)) for r in (0, 1))
    assert not {tuple(x.tolist()) for x in a} & {tuple(x.tolist()) for x in b}


def test_eval_rows_are_fixed_and_split_evenly(model_phase_dir):
    from phases.pretrain.loop import PackedSequences

    meta = json.loads((model_phase_dir / "packed.json").read_text())
    data = np.fromfile(model_phase_dir / "val.bin", dtype=np.uint16).reshape(-1, meta["seq_len"])
    shards = [list(PackedSequences(model_phase_dir / "val.bin", meta, r, 3, seed=0).eval_batches(4, 17)) for r in range(3)]
    counts = [sum(len(b) for b in s) for s in shards]
    assert counts == [5, 5, 5]  # 17 rows trimmed to a multiple of 3, equal shares
    rows = sorted(tuple(row.tolist()) for s in shards for b in s for row in b)
    assert rows == sorted(tuple(r) for r in data[:15].tolist())


def test_check_model_dir_catches_a_model_smaller_than_the_data(model_phase_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_phase_dir, broken)
    config = json.loads((broken / "model_config.json").read_text())
    (broken / "model_config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(DataError, match="vocab_size=100"):
        check_model_dir(broken)
    (broken / "model_config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}))
    with pytest.raises(DataError, match="max_position_embeddings=16"):
        check_model_dir(broken)
