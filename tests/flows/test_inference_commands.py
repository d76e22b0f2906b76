"""``lifecycle generate``: records, streaming, and one clear error per bad input."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))  # tests/phases/toy_artifacts.py
import toy_artifacts  # noqa: E402

from flows.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference-cli")
    return toy_artifacts.make_align_dir(root / "align", toy_artifacts.make_data_dir(root / "data"))


def test_prompt_file_writes_jsonl_records(model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def f("}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                "--model",
                str(model_dir),
                "--prompts",
                str(prompts),
                "--output",
                str(out),
                "--max-new-tokens",
                "4",
                "--num-samples",
                "2",
                "--seed",
                "7",
                "--top-k",
                "5",
            ]
        )
        == 0
    )
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 4 and [r["sample"] for r in recs] == [0, 1, 0, 1]
    assert all(r["sampling"]["top_k"] == 5 and r["sampling"]["seed"] == 7 and r["completion_tokens"] <= 4 for r in recs)


def test_one_prompt_streams_and_greedy_repeats(model_dir, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "def read_config(path):", "--greedy", "--max-new-tokens", "6", "--no-chat"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "[6 tokens" in first.err and first.out.strip()
    assert main(args) == 0
    assert capsys.readouterr().out == first.out


def test_best_of_uses_the_reward_model(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "hi", "--best-of", "3", "--max-new-tokens", "3"]) == 0
    figures = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert figures["best_of"] == 3 and figures["mean_reward_best_of_n"] >= figures["mean_reward_best_of_1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--prompt", "x", "--top-p", "1.5"], "inference.top_p=1.5 is invalid"),
        (["--prompt", "x", "--top-p", "0"], "inference.top_p=0.0 is invalid"),
        (["--prompt", "x", "--temperature", "-0.5"], "inference.temperature=-0.5 is invalid"),
        (["--prompt", "  "], "--prompt is empty"),
        (["--prompt", "word " * 400], "tokens; with max_new_tokens"),
    ],
)
def test_bad_input_fails_with_one_message(model_dir, extra, needle, capsys):
    assert main(["generate", "--model", str(model_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifecycle: error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_bad_files_and_models(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    cases = [
        (["--model", str(model_dir), "--prompts", str(tmp_path / "empty.jsonl")], "holds no prompts"),
        (["--model", str(model_dir), "--prompts", str(tmp_path / "bad.jsonl")], "bad.jsonl:1 is not JSON"),
        (["--model", str(tmp_path / "nowhere"), "--prompt", "x"], "no such directory"),
        (["--model", "models:/nope@champion", "--prompt", "x"], "no registered model named 'nope'"),
        (["--model", str(model_dir / "reward_model"), "--prompt", "x", "--best-of", "2"], "--best-of 2 is unavailable"),
    ]
    for args, needle in cases:
        assert main(["generate", *args]) == 2
        assert needle in capsys.readouterr().err


def test_serve_model_checks_its_flags(model_dir, capsys):
    assert main(["serve-model", str(model_dir), "--default-max-tokens", "500"]) == 2
    assert "--default-max-tokens=500" in capsys.readouterr().err
